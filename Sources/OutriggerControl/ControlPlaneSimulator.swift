import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOConcurrencyHelpers
import NIOPosix
import OutriggerConfig
import OutriggerXDS
import SwiftProtobuf

/// `outrigger control simulate`: N sidecars, one ADS stream on its own connection each, that subscribe like a
/// sidecar (clusters and listeners by wildcard, then endpoints and routes by name), decode every resource they
/// are sent into Envoy's message types, and ACK. The driver changes the mesh — the mesh file edited and the control
/// plane signalled (SIGHUP), an apply to etcd that replicas follow (the sidecars spread over them), or a two-phase
/// rollout through etcd — and times how long until every sidecar has ACKed the new routes. A simulated sidecar
/// answers a rollout's PREPARE (decoding every resource of the view) and COMMIT with an ACK, and notes when the
/// COMMIT came: the mixed-generation window is the first COMMIT to the last.
public final class ControlPlaneSimulator: Sendable {
    /// What one simulated sidecar saw last of its routes.
    struct RouteState: Sendable {
        var version = ""
        var ackedAt = ContinuousClock.now
    }

    public struct ChangeResult: Sendable, Codable {
        /// The first sidecar's ACK: with `maxMilliseconds`, the window in which sidecars ran different meshes.
        public var minMilliseconds: Double
        public var p50Milliseconds: Double
        public var p99Milliseconds: Double
        public var maxMilliseconds: Double
        public var converged: Int
        /// CPU seconds the control plane spent on this change (from its /proc/PID/stat), and the simulator (the
        /// simulated sidecars' own work, on the same machine).
        public var controlCPUSeconds: Double
        public var simulatorCPUSeconds: Double?
        /// A rollout: from its request to the last sidecar's COMMIT, and from the first COMMIT to the last.
        public var rolloutMilliseconds: Double?
        public var windowMilliseconds: Double?
        /// A rollout: etcd's writes (revisions) from its request to its end, and the bytes of the keys it wrote.
        public var etcdWrites: Int64?
        public var etcdBytes: Int?
    }

    public struct Report: Sendable, Codable {
        public var sidecars: Int
        public var services: Int
        public var connectSeconds: Double
        public var changes: [ChangeResult]
        public var controlRSSMiB: Double
        public var controlPeakRSSMiB: Double
        public var simulatorRSSMiB: Double
    }

    /// How a change is made: the mesh text of a round goes where the control plane reads it.
    public enum Changer: Sendable {
        /// Written to the file, and the control plane (this process id) signalled.
        case file(String, pid: Int32)
        /// Applied to etcd, which the replicas follow.
        case etcd(EtcdMeshStore)
        /// Rolled out through etcd (two-phase, one wave): the replicas' leader drives it; the sidecars switch this many
        /// milliseconds after the leader writes the wave (0: each on its COMMIT).
        case rollout(EtcdMeshStore, switchAfter: Int64)

        /// Makes the change; a rollout's generation, and etcd's revision before it.
        @discardableResult
        func change(to text: String) async throws -> (generation: UInt64, revision: Int64)? {
            let sources = [MeshConfig.Source(file: "mesh.yaml", text: text)]
            switch self {
            case .file(let path, let pid):
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                kill(pid, SIGHUP)
            case .etcd(let store):
                _ = try await store.apply(sources, path: "mesh.yaml")
            case .rollout(let store, let switchAfter):
                let revision = try await store.client.read(.key(store.currentKey)).revision
                let staged = try await store.stage(sources, path: "mesh.yaml")
                let generation = try await EtcdRollouts(client: store.client, prefix: store.prefix)
                    .request(staged, store: store, options: RolloutOptions(soakMilliseconds: 0, switchAfterMilliseconds: switchAfter))
                return (generation, revision)
            }
            return nil
        }
    }

    /// When a simulated sidecar was told to commit a generation; the generation it prepared last, and its routes'
    /// version (what it runs once committed, as a sidecar adopts the view it prepared).
    struct Commit: Sendable {
        var generation: UInt64 = 0
        var at = ContinuousClock.now
        var prepared: (generation: UInt64, routes: String)?
    }

    private let controls: [HostPort]
    private let count: Int
    private let routes: [NIOLockedValueBox<RouteState>]
    private let commits: [NIOLockedValueBox<Commit>]
    private let group: MultiThreadedEventLoopGroup

    /// `controls`: the control planes (replicas) the sidecars connect to, sidecar i to `controls[i % count]`.
    public init(controls: [HostPort], sidecars: Int) {
        self.controls = controls
        self.count = sidecars
        self.routes = (0..<sidecars).map { _ in NIOLockedValueBox(RouteState()) }
        self.commits = (0..<sidecars).map { _ in NIOLockedValueBox(Commit()) }
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// The mesh the simulation edits: `services` services of two endpoints each; change `round` moves the
    /// first service's route between two weight splits.
    public static func mesh(services: Int, round: Int) -> String {
        var text = "services:\n"
        for index in 0..<services {
            text += "  - name: svc-\(index)\n    endpoints: [127.0.0.1:\(20000 + 2 * index), 127.0.0.1:\(20001 + 2 * index)]\n"
        }
        let weight = round % 2 == 0 ? 90 : 10
        text += "  - name: svc-canary\n    endpoints: [127.0.0.1:19999]\n"
        text += "  - name: front\n    endpoints: []\n    routes:\n      - weightedClusters:\n"
        text += "          - {cluster: svc-0, weight: \(weight)}\n          - {cluster: svc-canary, weight: \(100 - weight)}\n"
        return text
    }

    /// Runs the simulation: connects every sidecar, then `changes` mesh edits, each timed to the last ACK. The CPU and
    /// memory reported are the control planes' (`controlPIDs`), added up.
    public func run(changer: Changer, services: Int, changes: Int, controlPIDs: [Int32]) async throws -> Report {
        if case .rollout(let store, _) = changer {
            try await Changer.etcd(store).change(to: Self.mesh(services: services, round: 0))
        } else {
            try await changer.change(to: Self.mesh(services: services, round: 0))
        }
        try await Task.sleep(for: .milliseconds(300))
        let started = ContinuousClock.now
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                group.addTask {
                    // As a sidecar does: a stream that fails (5,000 connecting at once overflow the listen
                    // backlog) is opened again.
                    while !Task.isCancelled {
                        do { try await self.stream(index) } catch {}
                        try? await Task.sleep(for: .milliseconds(Int.random(in: 100...300)))
                    }
                }
            }
            // Connected and synced: every sidecar has some routes.
            do {
                try await waitUntil(timeout: .seconds(120)) { self.routes.allSatisfy { !$0.withLockedValue { $0.version }.isEmpty } }
            } catch {
                let synced = routes.filter { !$0.withLockedValue { $0.version }.isEmpty }.count
                throw SimulationTimeout(detail: "\(synced) of \(count) sidecars synced after 120 s")
            }
            let connectSeconds = (ContinuousClock.now - started).inSeconds
            var results: [ChangeResult] = []
            for round in 1...max(changes, 1) {
                let before = routes.map { $0.withLockedValue { $0.version } }
                let cpuBefore = controlPIDs.map(Self.cpuSeconds(pid:)).reduce(0, +)
                let simulatorBefore = Self.cpuSeconds(pid: getpid())
                let changedAt = ContinuousClock.now
                let rollout = try await changer.change(to: Self.mesh(services: services, round: round))
                do {
                    try await waitUntil(timeout: .seconds(60)) {
                        zip(self.routes, before).allSatisfy { route, old in route.withLockedValue { $0.version } != old }
                    }
                } catch {
                    let converged = zip(self.routes, before).filter { route, old in route.withLockedValue { $0.version } != old }.count
                    throw SimulationTimeout(detail: "change \(round): \(converged) of \(count) sidecars have the new routes after 60 s")
                }
                var latencies = routes.map { ($0.withLockedValue { $0.ackedAt } - changedAt).inSeconds * 1000 }.sorted()
                if latencies.isEmpty { latencies = [0] }
                var result = ChangeResult(minMilliseconds: latencies[0], p50Milliseconds: latencies[latencies.count / 2],
                                          p99Milliseconds: latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))],
                                          maxMilliseconds: latencies.last!, converged: latencies.count,
                                          controlCPUSeconds: controlPIDs.map(Self.cpuSeconds(pid:)).reduce(0, +) - cpuBefore)
                result.simulatorCPUSeconds = Self.cpuSeconds(pid: getpid()) - simulatorBefore
                if case .rollout(let store, _) = changer, let (generation, revision) = rollout {
                    try await measure(generation, since: revision, changedAt: changedAt, store: store, into: &result)
                }
                results.append(result)
                try await Task.sleep(for: .milliseconds(500))
            }
            group.cancelAll()
            let memory = controlPIDs.map(Self.memoryMiB(pid:)).reduce((resident: 0.0, peak: 0.0)) { ($0.resident + $1.resident, $0.peak + $1.peak) }
            return Report(sidecars: count, services: services, connectSeconds: connectSeconds, changes: results,
                          controlRSSMiB: memory.resident, controlPeakRSSMiB: memory.peak, simulatorRSSMiB: Self.memoryMiB(pid: getpid()).resident)
        }
    }

    /// A rollout's figures, once it has ended: every sidecar's COMMIT, the window between the first and the last,
    /// and what it wrote to etcd.
    private func measure(_ generation: UInt64, since revision: Int64, changedAt: ContinuousClock.Instant, store: EtcdMeshStore,
                         into result: inout ChangeResult) async throws {
        let log = EtcdRollouts(client: store.client, prefix: store.prefix)
        let deadline = ContinuousClock.now + .seconds(60)
        while try await log.activeGeneration() == generation {
            guard ContinuousClock.now < deadline else { throw SimulationTimeout(detail: "rollout \(generation) did not end within 60 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
        guard let record = try await log.record(generation), record.state == .completed else {
            throw SimulationTimeout(detail: "rollout \(generation) did not complete: \(try await log.record(generation)?.reason ?? "?")")
        }
        let times = commits.compactMap { commit in commit.withLockedValue { $0.generation == generation ? $0.at : nil } }
        guard let first = times.min(), let last = times.max(), times.count == count else {
            throw SimulationTimeout(detail: "rollout \(generation): \(times.count) of \(count) sidecars got its COMMIT")
        }
        result.rolloutMilliseconds = (last - changedAt).inSeconds * 1000
        result.windowMilliseconds = (last - first).inSeconds * 1000
        let now = try await store.client.read(.prefix(log.recordKey(generation)))
        let chunks = try await store.client.read(.prefix(store.blobPrefix(record.version)))
        result.etcdWrites = now.revision - revision
        result.etcdBytes = (now.pairs + chunks.pairs).reduce(0) { $0 + $1.key.count + $1.value.count }
    }

    /// One simulated sidecar's stream, until cancelled.
    private func stream(_ index: Int) async throws {
        let control = controls[index % controls.count]
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: control.host, port: control.port), transportSecurity: .plaintext,
                                                       eventLoopGroup: group)
        try await withGRPCClient(transport: transport) { client in
            let ads = Envoy_Service_Discovery_V3_AggregatedDiscoveryService.Client(wrapping: client)
            let (outbox, send) = AsyncStream<Envoy_Service_Discovery_V3_DiscoveryRequest>.makeStream()
            var first = Envoy_Service_Discovery_V3_DiscoveryRequest()
            first.node.id = "sim-\(index)"
            first.node.cluster = "sim"
            var listeners = Google_Protobuf_Struct()
            listeners.fields[MeshView.outboundListener] = Google_Protobuf_Value(stringValue: "127.0.0.1:15001")
            first.node.metadata.fields[NodeMetadata.listeners] = Google_Protobuf_Value(structValue: listeners)
            first.typeURL = XDSType.cluster.rawValue
            send.yield(first)
            var listenerRequest = Envoy_Service_Discovery_V3_DiscoveryRequest()
            listenerRequest.typeURL = XDSType.listener.rawValue
            send.yield(listenerRequest)
            try await ads.streamAggregatedResources(requestProducer: { writer in
                for await request in outbox { try await writer.write(request) }
            }, onResponse: { response in
                defer { send.finish() }
                for try await message in response.messages {
                    if message.typeURL == StagedGenerations.typeURL {
                        send.yield(self.answerStaged(message, index))
                        continue
                    }
                    guard let type = XDSType(rawValue: message.typeURL) else { continue }
                    var names: [String] = []
                    // Decode every resource, as a sidecar would before validating it.
                    for body in message.resources {
                        names.append(try XDSDecoder.uncheckedName(of: body, type: type))
                    }
                    var ack = Envoy_Service_Discovery_V3_DiscoveryRequest()
                    ack.typeURL = message.typeURL
                    ack.versionInfo = message.versionInfo
                    ack.responseNonce = message.nonce
                    if type == .endpoints || type == .route { ack.resourceNames = names.sorted() }
                    send.yield(ack)
                    switch type {
                    case .cluster:
                        var endpoints = Envoy_Service_Discovery_V3_DiscoveryRequest()
                        endpoints.typeURL = XDSType.endpoints.rawValue
                        endpoints.resourceNames = names.sorted()
                        send.yield(endpoints)
                    case .listener:
                        var routes = Envoy_Service_Discovery_V3_DiscoveryRequest()
                        routes.typeURL = XDSType.route.rawValue
                        routes.resourceNames = names.sorted()
                        send.yield(routes)
                    case .route:
                        let now = ContinuousClock.now
                        self.routes[index].withLockedValue { $0 = RouteState(version: message.versionInfo, ackedAt: now) }
                    case .endpoints:
                        break
                    }
                }
            })
        }
    }

    /// A rollout's message answered as a sidecar answers it: a PREPARE's view decoded, a COMMIT noted; an ACK.
    private func answerStaged(_ message: Envoy_Service_Discovery_V3_DiscoveryResponse, _ index: Int) -> Envoy_Service_Discovery_V3_DiscoveryRequest {
        let now = ContinuousClock.now
        var ack = Envoy_Service_Discovery_V3_DiscoveryRequest()
        ack.typeURL = message.typeURL
        ack.versionInfo = message.versionInfo
        ack.responseNonce = message.nonce
        guard let body = message.resources.first, let stage = try? Outrigger_V1_StagedGeneration(unpackingAny: body) else { return ack }
        switch stage.phase {
        case .prepare:
            var routes = ""
            for entry in stage.view.types {
                guard let type = XDSType(rawValue: entry.typeURL) else { continue }
                for resource in entry.resources { _ = try? XDSDecoder.uncheckedName(of: resource, type: type) }
                if type == .route { routes = entry.version }
            }
            commits[index].withLockedValue { $0.prepared = (stage.generation, routes) }
        case .commit:
            // As a sidecar does: the switch at the instant the COMMIT names (timed when the timer fires), else now.
            let wait = StagedGenerations.wait(until: stage.switchAtUnixMs)
            let switched: @Sendable () -> Void = {
                let at = ContinuousClock.now
                let routes = self.commits[index].withLockedValue { commit -> String? in
                    commit.generation = stage.generation
                    commit.at = at
                    return commit.prepared?.generation == stage.generation ? commit.prepared?.routes : nil
                }
                if let routes { self.routes[index].withLockedValue { $0 = RouteState(version: routes, ackedAt: at) } }
            }
            if wait > .zero {
                Task {
                    try? await Task.sleep(until: now + wait, clock: .continuous)
                    switched()
                }
            } else {
                switched()
            }
        default:
            break
        }
        return ack
    }

    private func waitUntil(timeout: Duration, _ condition: @Sendable () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { throw SimulationTimeout(detail: "") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    struct SimulationTimeout: Error, CustomStringConvertible {
        var detail: String
        var description: String { "the simulated sidecars did not all converge in time: \(detail)" }
    }


    /// User + system CPU seconds of a process.
    static func cpuSeconds(pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Resident and peak resident memory of a process.
    static func memoryMiB(pid: Int32) -> (resident: Double, peak: Double) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Double {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return (Double(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "") ?? 0) / 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }
}
