import Foundation
import OutriggerConfig
import Testing

/// A real etcd server (Debian's `etcd-server`), one member on loopback ports it picks itself, with its data in a
/// directory of its own: killed and removed when the test lets go of it.
final class EtcdMember: Sendable {
    let process: ChildProcess
    let directory: URL
    let client: HostPort

    private init(process: ChildProcess, directory: URL, client: HostPort) {
        self.process = process
        self.directory = directory
        self.client = client
    }

    static func start() async throws -> EtcdMember {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("etcd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let process = try ChildProcess(try which("etcd"), [
            "--name", "single", "--data-dir", directory.appendingPathComponent("data").path,
            "--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
            "--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0",
            "--initial-cluster", "single=http://127.0.0.1:0", "--log-level", "info",
        ])
        let marker = "serving insecure client requests on 127.0.0.1:"
        let announced: String
        do {
            announced = try await process.waitForOutput(containing: marker)
        } catch {
            process.kill()
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        let port = try ProcessTests.port(in: announced, after: marker)
        return EtcdMember(process: process, directory: directory, client: HostPort(host: "127.0.0.1", port: port))
    }

    deinit {
        process.kill()
        try? FileManager.default.removeItem(at: directory)
    }
}
