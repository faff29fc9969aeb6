import Foundation
import NIOConcurrencyHelpers
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
        do {
            return EtcdMember(process: process, directory: directory, client: try await EtcdCluster.clientAddress(of: process))
        } catch {
            process.kill()
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
    }

    deinit {
        process.kill()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A real three-member etcd cluster: the members talk over Unix sockets in a directory of the cluster's own (no
/// port to pick beforehand) and serve clients on loopback ports they pick themselves. Members can be stopped and
/// started again on their data; all are killed and the directory removed when the test lets go of it.
final class EtcdCluster: Sendable {
    let directory: URL
    private let members: NIOLockedValueBox<[ChildProcess?]>
    /// Each member's client address, by index: a restarted member serves on a port it picks again.
    private let addresses: NIOLockedValueBox<[HostPort]>

    private init(directory: URL) {
        self.directory = directory
        members = NIOLockedValueBox([nil, nil, nil])
        addresses = NIOLockedValueBox([])
    }

    var clients: [HostPort] { addresses.withLockedValue { $0 } }

    static func start() async throws -> EtcdCluster {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("etcd-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let cluster = EtcdCluster(directory: directory)
        // Started together: each waits for the others to elect a leader before it serves clients.
        let processes = try (0..<3).map { try cluster.spawn($0, state: "new") }
        var clients: [HostPort] = []
        for process in processes { clients.append(try await Self.clientAddress(of: process)) }
        cluster.addresses.withLockedValue { $0 = clients }
        return cluster
    }

    private func spawn(_ index: Int, state: String) throws -> ChildProcess {
        let peers = (0..<3).map { "m\($0)=unix://peer:\($0)" }.joined(separator: ",")
        // `sh -c 'cd DIR && exec etcd …'`: the peer sockets are named relative to the working directory.
        let command = [
            "cd '\(directory.path)' && exec etcd --name m\(index) --data-dir m\(index)",
            "--listen-client-urls http://127.0.0.1:0 --advertise-client-urls http://127.0.0.1:0",
            "--listen-peer-urls unix://peer:\(index) --initial-advertise-peer-urls unix://peer:\(index)",
            "--initial-cluster \(peers) --initial-cluster-state \(state)",
        ].joined(separator: " ")
        let process = try ChildProcess("/bin/sh", ["-c", command])
        members.withLockedValue { $0[index] = process }
        return process
    }

    /// The loopback address an etcd member says it serves clients on.
    static func clientAddress(of process: ChildProcess) async throws -> HostPort {
        let marker = "serving insecure client requests on 127.0.0.1:"
        return HostPort(host: "127.0.0.1", port: try ProcessTests.port(in: try await process.waitForOutput(containing: marker), after: marker))
    }

    /// Kills member `index` (SIGKILL) and waits until it is gone.
    func stop(_ index: Int) async {
        guard let process = members.withLockedValue({ $0[index] }) else { return }
        process.kill()
        _ = await process.waitForExit()
        members.withLockedValue { $0[index] = nil }
    }

    /// Starts member `index` again on its data; it serves clients on a new port (returned).
    @discardableResult
    func restart(_ index: Int) async throws -> HostPort {
        let process = try spawn(index, state: "existing")
        let address = try await Self.clientAddress(of: process)
        addresses.withLockedValue { $0[index] = address }
        return address
    }

    deinit {
        for process in members.withLockedValue({ $0 }) { process?.kill() }
        try? FileManager.default.removeItem(at: directory)
    }
}
