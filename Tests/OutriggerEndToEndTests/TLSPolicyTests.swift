import Foundation
import OutriggerConfig
import Testing

/// TLS versions and suites a listener accepts, and certificates rotated in place, checked with `openssl s_client`.
@Suite("TLS policy and certificate rotation, end to end")
struct TLSPolicyTests {
    /// What `openssl s_client` negotiated with the listener: the protocol and cipher, or nil when the handshake failed.
    static func negotiate(port: Int, _ options: [String]) async throws -> (protocol: String, cipher: String, subject: String)? {
        let result = try await run("openssl", ["s_client", "-connect", "127.0.0.1:\(port)", "-servername", "localhost"] + options)
        func value(after label: String) -> String? {
            guard let line = result.stdout.split(separator: "\n").first(where: { $0.contains(label) }),
                  let range = line.range(of: label) else { return nil }
            return line[range.upperBound...].trimmingCharacters(in: .whitespaces)
        }
        // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" (the session block with "Protocol :" comes only with a ticket).
        guard result.status == 0, let cipher = value(after: "Cipher is "), cipher != "(NONE)",
              let version = value(after: "New, ")?.components(separatedBy: ",").first else { return nil }
        return (version, cipher, value(after: "subject=") ?? "?")
    }

    /// A self-signed EC certificate with common name `name`, written to `certificate` and `key`.
    static func writeCertificate(name: String, certificate: String, key: String) async throws {
        let result = try await run("openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
            "-keyout", key, "-out", certificate, "-subj", "/CN=\(name)", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        #expect(result.status == 0, "\(result.stderr)")
    }

    @Test func tls10And11AndCBCSuitesAreRefusedByDefault() async throws {
        try await withTLSHarness { harness, _ in
            // The client side allows the old protocols (SECLEVEL=0); the listener must not.
            #expect(try await Self.negotiate(port: harness.port, ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"]) == nil)
            #expect(try await Self.negotiate(port: harness.port, ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]) == nil)
            #expect(try await Self.negotiate(port: harness.port, ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA"]) == nil,
                    "CBC suites are not offered")
            let tls12 = try await Self.negotiate(port: harness.port, ["-tls1_2"])
            #expect(tls12?.protocol == "TLSv1.2" && tls12?.cipher.contains("GCM") == true || tls12?.cipher.contains("CHACHA20") == true,
                    "\(String(describing: tls12))")
            #expect(try await Self.negotiate(port: harness.port, ["-tls1_3"])?.protocol == "TLSv1.3")
        }
    }

    /// testssl.sh (protocols, cipher categories, forward secrecy, known vulnerabilities) finds nothing to flag in
    /// the default policy: every finding is OK or INFO, none LOW, MEDIUM, HIGH or CRITICAL.
    @Test func testsslFindsNothingToFlag() async throws {
        try await withTLSHarness { harness, _ in
            let report = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-testssl-\(UUID().uuidString).json").path
            defer { try? FileManager.default.removeItem(atPath: report) }
            let result = try await run("testssl", ["--quiet", "--color", "0", "--warnings", "batch", "-p", "-s", "-f", "-U",
                                                   "--jsonfile", report, "127.0.0.1:\(harness.port)"])
            let findings = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [[String: Any]],
                                        "\(result.stdout.suffix(2000))")
            #expect(findings.count > 20, "testssl ran its checks: \(findings.count) findings")
            let flagged = findings.filter { ["LOW", "MEDIUM", "HIGH", "CRITICAL"].contains($0["severity"] as? String ?? "") }
            #expect(flagged.isEmpty, "\(flagged.map { "\($0["id"] ?? "?"): \($0["finding"] ?? "")" })")
            #expect(findings.contains { $0["id"] as? String == "TLS1" && ($0["finding"] as? String)?.hasPrefix("not offered") == true })
        }
    }

    @Test func minVersionAndCipherSuitesAreConfigurable() async throws {
        var tls = try await makeTestCertificate()
        tls.minVersion = .tls13
        try await withHarness(echoes: 1) { endpoints in
            var config = Harness.defaultConfig(endpoints)
            config.listeners[0].tls = tls
            var second = config.listeners[0]
            second.name = "legacy"
            second.tls?.minVersion = .tls12
            second.tls?.cipherSuites = ["ECDHE-ECDSA-AES128-SHA"]
            config.listeners.append(second)
            return config
        } _: { (harness: Harness) async throws in
            #expect(try await Self.negotiate(port: harness.port(of: "quickstart"), ["-tls1_2"]) == nil, "TLS 1.3 only")
            #expect(try await Self.negotiate(port: harness.port(of: "quickstart"), ["-tls1_3"])?.protocol == "TLSv1.3")
            let legacy = try await Self.negotiate(port: harness.port(of: "legacy"), ["-tls1_2"])
            #expect(legacy?.cipher == "ECDHE-ECDSA-AES128-SHA", "the one suite configured: \(String(describing: legacy))")
        }
    }

    @Test func aCertificateReplacedInPlaceIsServedToNewConnections() async throws {
        try await withTLSHarness { harness, tls in
            #expect(try await Self.negotiate(port: harness.port, [])?.subject.hasSuffix("localhost") == true)
            harness.sidecar.refreshTLSCertificates()
            #expect(try await Self.negotiate(port: harness.port, [])?.subject.hasSuffix("localhost") == true, "unchanged files: the same certificate")

            try await Self.writeCertificate(name: "rotated", certificate: tls.certificate, key: tls.privateKey)
            harness.sidecar.refreshTLSCertificates()
            #expect(try await Self.negotiate(port: harness.port, [])?.subject.hasSuffix("rotated") == true)

            // A broken key is refused: the last good pair keeps serving.
            try "not a key\n".write(toFile: tls.privateKey, atomically: true, encoding: .utf8)
            harness.sidecar.refreshTLSCertificates()
            #expect(try await Self.negotiate(port: harness.port, [])?.subject.hasSuffix("rotated") == true)
        }
    }
}
