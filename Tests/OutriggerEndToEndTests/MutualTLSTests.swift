import Foundation
import OutriggerConfig
import OutriggerControl
import OutriggerCore
import OutriggerProxy
import Testing

/// A throwaway certificate authority made with openssl: a CA, and certificates it signs with the subject
/// alternative names asked for.
struct TestPKI {
    let directory: URL
    let caCertificate: String
    private let caKey: String

    static func make() async throws -> TestPKI {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let certificate = directory.appendingPathComponent("ca.pem").path
        let key = directory.appendingPathComponent("ca-key.pem").path
        try await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                           "-keyout", key, "-out", certificate, "-subj", "/CN=Outrigger test CA",
                           "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        return TestPKI(directory: directory, caCertificate: certificate, caKey: key)
    }

    /// A certificate signed by this CA for `name`, carrying `sans` (`URI:spiffe://…`, `DNS:…`, `IP:…`).
    func issue(_ name: String, sans: [String]) async throws -> (certificate: String, key: String) {
        let certificate = directory.appendingPathComponent("\(name).pem").path
        let key = directory.appendingPathComponent("\(name)-key.pem").path
        let request = directory.appendingPathComponent("\(name).csr").path
        let extensions = directory.appendingPathComponent("\(name).ext").path
        try "subjectAltName=\(sans.joined(separator: ","))\n".write(toFile: extensions, atomically: true, encoding: .utf8)
        try await Self.openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                                "-keyout", key, "-out", request, "-subj", "/CN=\(name)"])
        try await Self.openssl(["x509", "-req", "-in", request, "-CA", caCertificate, "-CAkey", caKey, "-CAcreateserial",
                                "-days", "1", "-out", certificate, "-extfile", extensions])
        return (certificate, key)
    }

    private static func openssl(_ arguments: [String]) async throws {
        let result = try await run("openssl", arguments)
        guard result.status == 0 else { throw CurlFailure(status: result.status, stderr: result.stderr) }
    }
}

/// Two sidecars speaking mTLS from files: the caller's cluster presents a client certificate and checks the
/// callee's SPIFFE id; the callee's listener requires a client certificate from the CA with an allowed id.
@Suite("Upstream TLS and mTLS between sidecars, end to end")
struct MutualTLSTests {
    static let backendID = "spiffe://test.mesh/ns/default/sa/backend"
    static let frontendID = "spiffe://test.mesh/ns/default/sa/frontend"

    /// The callee's certificate, and its config: an mTLS listener in front of one echo.
    static func calleeCertificate(_ pki: TestPKI) async throws -> (certificate: String, key: String) {
        try await pki.issue("backend", sans: ["URI:\(backendID)", "DNS:localhost", "IP:127.0.0.1"])
    }

    static func callee(_ pki: TestPKI, _ server: (certificate: String, key: String), _ endpoints: [HostPort]) -> SidecarConfig {
        Harness.config(routes: [RouteConfig(destination: .cluster("app"))], clusters: [ClusterConfig(name: "app", endpoints: endpoints)]) { listener in
            listener.tls = TLSConfig(certificate: server.certificate, privateKey: server.key,
                                     clientCertificates: .init(caFile: pki.caCertificate, subjectAltNames: [frontendID]))
        }
    }

    /// The caller: a plaintext listener whose cluster speaks `upstreamProtocol` over mTLS to the callee.
    static func caller(_ pki: TestPKI, calleePort: Int, upstreamProtocol: ClusterConfig.UpstreamProtocol,
                       expecting identity: String = backendID, healthCheck: HealthCheckConfig? = nil) async throws -> Sidecar {
        let client = try await pki.issue("frontend-\(UUID().uuidString.prefix(8))", sans: ["URI:\(frontendID)"])
        let cluster = ClusterConfig(
            name: "backend", endpoints: [HostPort(host: "127.0.0.1", port: calleePort)], upstreamProtocol: upstreamProtocol,
            connectTimeout: .seconds(10), healthCheck: healthCheck,
            tls: UpstreamTLSConfig(caFile: pki.caCertificate, certificate: client.certificate, privateKey: client.key, subjectAltNames: [identity]))
        let config = Harness.config(routes: [RouteConfig(destination: .cluster("backend"))], clusters: [cluster])
        return try await Sidecar.start(config: config, logger: Harness.quietLogger)
    }

    static func url(_ sidecar: Sidecar, _ path: String = "/") -> String {
        "http://127.0.0.1:\(sidecar.listenerAddresses["main"]!.port!)\(path)"
    }

    @Test(arguments: [ClusterConfig.UpstreamProtocol.http1, .http2])
    func twoSidecarsTalkMutualTLS(upstreamProtocol: ClusterConfig.UpstreamProtocol) async throws {
        let pki = try await TestPKI.make()
        let server = try await Self.calleeCertificate(pki)
        try await withHarness(echoes: 1) { Self.callee(pki, server, $0) } _: { (harness: Harness) async throws in
            let check = HealthCheckConfig(kind: .http, interval: .milliseconds(200), timeout: .seconds(10))
            let caller = try await Self.caller(pki, calleePort: harness.port, upstreamProtocol: upstreamProtocol, healthCheck: check)
            do {
                let response = try await fetch(Self.url(caller, "/hello"))
                #expect(response.status == 200, "\(response.statusLine) \(response.headers["x-outrigger-reason"] ?? "")")
                #expect(response.body.contains(#""path":"\/hello""#), "\(response.body)")
                // The health checks speak the same mTLS (an HTTP probe would fail without its client certificate).
                let stats = caller.configStore.stats.cluster("backend")
                try await waitUntil { stats.healthChecksPassed.current >= 2 }
                #expect(stats.healthChecksFailed.current == 0)
            } catch {
                await caller.shutdown()
                throw error
            }
            await caller.shutdown()
        }
    }

    /// The same mTLS said once in the mesh: the control plane pushes the service's `tls` (Envoy's
    /// UpstreamTlsContext with file names) and the sidecar following it reads the files on its machine. A pushed
    /// identity the callee does not have is a 503, as from a file.
    @Test func theControlPlanePushesAServicesMutualTLS() async throws {
        let pki = try await TestPKI.make()
        let server = try await Self.calleeCertificate(pki)
        let client = try await pki.issue("frontend", sans: ["URI:\(Self.frontendID)"])
        try await withHarness(echoes: 1) { Self.callee(pki, server, $0) } _: { (harness: Harness) async throws in
            func service(_ name: String, expecting identity: String) -> MeshConfig.Service {
                MeshConfig.Service(cluster: ClusterConfig(
                    name: name, endpoints: [HostPort(host: "127.0.0.1", port: harness.port)], connectTimeout: .seconds(10),
                    tls: UpstreamTLSConfig(caFile: pki.caCertificate, certificate: client.certificate, privateKey: client.key, subjectAltNames: [identity])))
            }
            let mesh = try await MeshHarness.start(echoes: 0) { _ in
                MeshConfig(services: [service("backend", expecting: Self.backendID), service("impostor", expecting: "spiffe://test.mesh/ns/default/sa/other")])
            }
            do {
                try await mesh.eventually("the pushed cluster answers over mTLS") { try await mesh.answer(host: "backend") == "echo-0" }
                let refused = try await curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: impostor", mesh.outboundURL + "/"])
                #expect(refused.stdout == "503", "the callee's certificate does not carry the pushed identity")
                #expect(harness.echoes[0].requestsServed >= 1)
            } catch {
                await mesh.stop()
                throw error
            }
            await mesh.stop()
        }
    }

    /// The callee's listener refuses a client without a certificate, one from another CA, and one from the CA
    /// without an allowed SPIFFE id; the caller refuses a callee whose certificate has another id.
    @Test func identitiesAreCheckedBothWays() async throws {
        let pki = try await TestPKI.make()
        let server = try await Self.calleeCertificate(pki)
        let intruder = try await pki.issue("intruder", sans: ["URI:spiffe://test.mesh/ns/default/sa/intruder"])
        let stranger = try await makeTestCertificate()  // self-signed: not from the CA
        try await withHarness(echoes: 1) { Self.callee(pki, server, $0) } _: { (harness: Harness) async throws in
            let https = "https://localhost:\(harness.port)/"
            let noCertificate = try await curl(["-o", "/dev/null", "--cacert", pki.caCertificate, https])
            #expect(noCertificate.status != 0, "no client certificate: \(noCertificate.stderr)")
            let otherCA = try await curl(["-o", "/dev/null", "--cacert", pki.caCertificate, "--cert", stranger.certificate, "--key", stranger.privateKey, https])
            #expect(otherCA.status != 0, "a certificate from another CA: \(otherCA.stderr)")
            let wrongID = try await curl(["-o", "/dev/null", "--cacert", pki.caCertificate, "--cert", intruder.certificate, "--key", intruder.key, https])
            #expect(wrongID.status != 0, "a certificate without an allowed id: \(wrongID.stderr)")
            #expect(try await ConnectionDefenceTests.closedCount(harness, .clientCertificateRejected) == "1")
            #expect(harness.echoes[0].requestsServed == 0)

            let caller = try await Self.caller(pki, calleePort: harness.port, upstreamProtocol: .http1, expecting: "spiffe://test.mesh/ns/default/sa/other")
            let response = try await fetch(Self.url(caller))
            await caller.shutdown()
            #expect(response.status == 503 && response.headers["x-outrigger-reason"] == "connect_failure", "\(response.statusLine)")
            #expect(harness.echoes[0].requestsServed == 0)
        }
    }
}
