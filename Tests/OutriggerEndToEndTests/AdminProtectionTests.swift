import Foundation
import OutriggerConfig
import Testing

/// The admin's changes (drain, undrain) are refused to browsers, to foreign host names and, beyond loopback, to
/// requests without the admin token.
@Suite("Admin protection, end to end")
struct AdminProtectionTests {
    /// POSTs a drain of the second echo endpoint with `extra` curl arguments: the status and body.
    static func drain(_ harness: Harness, _ extra: [String] = []) async throws -> (status: String, body: String) {
        let query = "?cluster=c&endpoint=127.0.0.1:\(harness.echoes[1].localAddress.port!)"
        let result = try await curl(["-s", "-w", "\n%{http_code}", "-X", "POST"] + extra + [harness.adminURL + "/endpoints/drain" + query])
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
    }

    static func config(_ endpoints: [HostPort], admin: AdminConfig) -> SidecarConfig {
        var config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)])
        config.admin = admin
        return config
    }

    static func isDraining(_ harness: Harness) async throws -> Bool {
        try await fetch(harness.adminURL + "/clusters").body.contains("\"draining\" : true")
    }

    @Test func browserFormPostsAndForeignHostNamesAreRefused() async throws {
        try await withHarness(echoes: 2) { Self.config($0, admin: AdminConfig(address: HostPort(host: "127.0.0.1", port: 0))) } _: { (harness: Harness) async throws in
            let crossSite = try await Self.drain(harness, ["-H", "Origin: http://evil.example", "-H", "Content-Type: application/x-www-form-urlencoded"])
            #expect(crossSite.status == "403" && crossSite.body.contains("Origin: http://evil.example"), "\(crossSite)")
            let fetchMetadata = try await Self.drain(harness, ["-H", "Sec-Fetch-Site: cross-site"])
            #expect(fetchMetadata.status == "403", "\(fetchMetadata)")
            let rebound = try await Self.drain(harness, ["-H", "Host: evil.example:15000"])
            #expect(rebound.status == "403" && rebound.body.contains("evil.example"), "\(rebound)")
            #expect(try await Self.isDraining(harness) == false, "nothing was drained")
            #expect(try await Self.drain(harness).status == "200", "a command-line client on the host may")
            #expect(try await Self.isDraining(harness))
        }
    }

    @Test func beyondLoopbackChangesNeedTheToken() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-admin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let tokenFile = directory.appendingPathComponent("token").path
        try "s3cret-admin-token-0123456789\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)

        // Beyond loopback, without a token: no changes at all.
        try await withHarness(echoes: 2) { Self.config($0, admin: AdminConfig(address: HostPort(host: "0.0.0.0", port: 0))) } _: { (harness: Harness) async throws in
            let refused = try await Self.drain(harness)
            #expect(refused.status == "403" && refused.body.contains("admin.tokenFile"), "\(refused)")
            #expect(try await fetch(harness.adminURL + "/ready").status == 200, "reads still answer")
        }
        // With a token: only requests that carry it.
        try await withHarness(echoes: 2) {
            Self.config($0, admin: AdminConfig(address: HostPort(host: "0.0.0.0", port: 0), tokenFile: tokenFile))
        } _: { (harness: Harness) async throws in
            #expect(try await Self.drain(harness).status == "401")
            #expect(try await Self.drain(harness, ["-H", "Authorization: Bearer wrong-token-0123456789"]).status == "401")
            #expect(try await Self.isDraining(harness) == false)
            #expect(try await Self.drain(harness, ["-H", "Authorization: Bearer s3cret-admin-token-0123456789"]).status == "200")
            #expect(try await Self.isDraining(harness))
        }
    }
}
