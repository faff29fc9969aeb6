import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerXDS
import SwiftProtobuf

/// `outrigger control`: serves every sidecar its view of the mesh over ADS (state of the world), keeps
/// connected sidecars registered as endpoints of their service, and pushes again when the mesh file or the
/// registrations change. The mesh file is the store: one narrow seam (`reload`) that an etcd store can sit behind.
public final class ControlPlane: Sendable {
    /// What a connected stream needs from the plane: its identity, and where to send new snapshots.
    struct Stream: Sendable {
        var identity: SidecarIdentity
        var connectedAt: ContinuousClock.Instant
        var push: AsyncStream<[XDSType: [String: XDSResource]]>.Continuation
        var status: [XDSType: TypeStatus] = [:]
    }

    /// Per type, for status: what was sent and ACKed, and the last NACK.
    public struct TypeStatus: Sendable, Hashable {
        public var sent: String?
        public var acked: String?
        public var nack: String?
    }

    struct State: Sendable {
        var mesh: MeshConfig
        var streams: [UInt64: Stream] = [:]
        var nextStream: UInt64 = 0
        /// Sidecars registered as endpoints, by service then node; kept for `registrationGrace` after their stream ends.
        var registered: [String: [String: HostPort]] = [:]
        /// When a gone sidecar's registration is removed, by node.
        var leaving: [String: (service: String, generation: UInt64)] = [:]
        var generation: UInt64 = 0
    }

    private let state: NIOLockedValueBox<State>
    private let meshPath: String?
    private let logger: Logger
    /// How long a sidecar whose stream ended stays an endpoint (a reconnect within it changes nothing).
    let registrationGrace: Duration

    public init(mesh: MeshConfig, meshPath: String?, registrationGrace: Duration = .seconds(5), logger: Logger) {
        self.state = NIOLockedValueBox(State(mesh: mesh))
        self.meshPath = meshPath
        self.registrationGrace = registrationGrace
        self.logger = logger
    }

    public var mesh: MeshConfig { state.withLockedValue { $0.mesh } }

    /// Reads the mesh file again; a bad one is logged and the running mesh kept.
    @discardableResult
    public func reload() -> Bool {
        guard let meshPath else { return false }
        do {
            let mesh = try MeshConfig.load(contentsOf: meshPath)
            apply(mesh)
            logger.info("mesh reloaded", metadata: ["file": "\(meshPath)"])
            return true
        } catch {
            logger.error("mesh rejected; keeping the running mesh\n\(error)", metadata: ["file": "\(meshPath)"])
            return false
        }
    }

    /// Swaps in `mesh` and pushes every sidecar its new view.
    public func apply(_ mesh: MeshConfig) {
        state.withLockedValue { $0.mesh = mesh }
        pushAll()
    }

    /// Per connected sidecar: node, service, and per type the versions sent and ACKed and the last NACK.
    public func status() -> [(identity: SidecarIdentity, status: [XDSType: TypeStatus])] {
        state.withLockedValue { state in state.streams.values.map { ($0.identity, $0.status) }.sorted { $0.identity.node < $1.identity.node } }
    }

    // MARK: Streams

    func open(_ identity: SidecarIdentity) -> (id: UInt64, pushes: AsyncStream<[XDSType: [String: XDSResource]]>) {
        let (pushes, continuation) = AsyncStream<[XDSType: [String: XDSResource]]>.makeStream()
        let id = state.withLockedValue { state -> UInt64 in
            state.nextStream += 1
            state.streams[state.nextStream] = Stream(identity: identity, connectedAt: .now, push: continuation)
            state.leaving[identity.node] = nil
            if let address = identity.inboundAddress { state.registered[identity.service, default: [:]][identity.node] = address }
            return state.nextStream
        }
        logger.info("sidecar connected", metadata: ["node": "\(identity.node)", "service": "\(identity.service)"])
        pushAll()
        return (id, pushes)
    }

    func close(_ id: UInt64) {
        let gone = state.withLockedValue { state -> (SidecarIdentity, UInt64)? in
            guard let stream = state.streams.removeValue(forKey: id) else { return nil }
            stream.push.finish()
            // Another stream of the same node (a reconnect that raced this close) keeps the registration.
            guard !state.streams.values.contains(where: { $0.identity.node == stream.identity.node }) else { return nil }
            state.generation += 1
            state.leaving[stream.identity.node] = (stream.identity.service, state.generation)
            return (stream.identity, state.generation)
        }
        guard let (identity, generation) = gone else { return }
        logger.info("sidecar disconnected", metadata: ["node": "\(identity.node)"])
        Task { [registrationGrace] in
            try? await Task.sleep(for: registrationGrace)
            let removed = self.state.withLockedValue { state -> Bool in
                guard let leaving = state.leaving[identity.node], leaving.generation == generation else { return false }
                state.leaving[identity.node] = nil
                state.registered[leaving.service]?[identity.node] = nil
                return true
            }
            if removed { self.pushAll() }
        }
    }

    func record(_ id: UInt64, _ event: ADSStreamStateMachine.Event) {
        state.withLockedValue { state in
            switch event {
            case .acked(let type, let version):
                state.streams[id]?.status[type, default: TypeStatus()].acked = version
                state.streams[id]?.status[type, default: TypeStatus()].nack = nil
            case .nacked(let type, let version, let message):
                state.streams[id]?.status[type, default: TypeStatus()].nack = "\(version): \(message)"
            }
        }
        if case .nacked(let type, let version, let message) = event {
            let node = state.withLockedValue { $0.streams[id]?.identity.node ?? "?" }
            logger.warning("sidecar refused a push", metadata: ["node": "\(node)", "type": "\(type.shortName)", "version": "\(version)", "error": "\(message)"])
        }
    }

    func sent(_ id: UInt64, _ type: XDSType, version: String) {
        state.withLockedValue { $0.streams[id]?.status[type, default: TypeStatus()].sent = version }
    }

    /// Computes each connected sidecar's view and hands it to its stream (which sends only what changed).
    func pushAll() {
        let (mesh, registered, streams) = state.withLockedValue { state in
            (state.mesh, state.registered.mapValues { $0.values.sorted { $0.description < $1.description } }, state.streams)
        }
        for stream in streams.values {
            do {
                stream.push.yield(try MeshView.resources(mesh: mesh, registered: registered, for: stream.identity))
            } catch {
                logger.error("cannot build a sidecar's view", metadata: ["node": "\(stream.identity.node)", "error": "\(error)"])
            }
        }
    }

    // MARK: Serving

    /// Serves ADS on `address` until the task is cancelled; `onListening` gets the bound port.
    public func serve(host: String, port: Int, onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: host, port: port), transportSecurity: .plaintext)
        let server = GRPCServer(transport: transport, services: [AggregatedDiscoveryService(plane: self)])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            let address = try await transport.listeningAddress
            onListening(address.ipv4?.port ?? address.ipv6?.port ?? port)
        }
    }
}

/// The ADS endpoint: one task per sidecar stream, driving its `ADSStreamStateMachine` with the sidecar's
/// requests and the plane's snapshots, and writing the responses it asks for.
struct AggregatedDiscoveryService: Envoy_Service_Discovery_V3_AggregatedDiscoveryService.SimpleServiceProtocol {
    let plane: ControlPlane

    enum Input: Sendable {
        case request(Envoy_Service_Discovery_V3_DiscoveryRequest)
        case snapshot([XDSType: [String: XDSResource]])
        case ended
    }

    func streamAggregatedResources(
        request: RPCAsyncSequence<Envoy_Service_Discovery_V3_DiscoveryRequest, any Error>,
        response: RPCWriter<Envoy_Service_Discovery_V3_DiscoveryResponse>,
        context: ServerContext
    ) async throws {
        let (inputs, input) = AsyncStream<Input>.makeStream()
        var opened: UInt64?
        defer { if let opened { plane.close(opened) } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await next in request { input.yield(.request(next)) }
                } catch {}
                input.yield(.ended)
            }
            var machine = ADSStreamStateMachine()
            for await next in inputs {
                let responses: [ADSStreamStateMachine.Response]
                switch next {
                case .request(let message):
                    if opened == nil {
                        // The first request names the node; its view is computed and pushed from then on.
                        let (id, pushes) = plane.open(try Self.identity(of: message.node))
                        opened = id
                        group.addTask {
                            for await snapshot in pushes { input.yield(.snapshot(snapshot)) }
                        }
                    }
                    guard let type = XDSType(rawValue: message.typeURL) else { continue }  // types we do not serve are ignored, as Envoy's servers do
                    let parsed = ADSStreamStateMachine.Request(type: type, versionInfo: message.versionInfo, nonce: message.responseNonce,
                                                               resourceNames: message.resourceNames,
                                                               error: message.hasErrorDetail ? message.errorDetail.message : nil)
                    let (events, out) = machine.received(parsed)
                    for event in events { plane.record(opened!, event) }
                    responses = out
                case .snapshot(let resources):
                    responses = machine.snapshotChanged(resources)
                case .ended:
                    group.cancelAll()
                    return
                }
                for out in responses {
                    var message = Envoy_Service_Discovery_V3_DiscoveryResponse()
                    message.typeURL = out.type.rawValue
                    message.versionInfo = out.version
                    message.nonce = out.nonce
                    message.resources = out.resources.map(\.body)
                    message.controlPlane.identifier = "outrigger"
                    try await response.write(message)
                    plane.sent(opened!, out.type, version: out.version)
                }
            }
        }
    }

    func deltaAggregatedResources(
        request: RPCAsyncSequence<Envoy_Service_Discovery_V3_DeltaDiscoveryRequest, any Error>,
        response: RPCWriter<Envoy_Service_Discovery_V3_DeltaDiscoveryResponse>,
        context: ServerContext
    ) async throws {
        throw RPCError(code: .unimplemented, message: "outrigger control serves state-of-the-world ADS (StreamAggregatedResources) only")
    }

    /// The sidecar's identity from its node: id, service (metadata `service`, else `cluster`), listeners and app.
    static func identity(of node: Envoy_Config_Core_V3_Node) throws -> SidecarIdentity {
        guard !node.id.isEmpty else { throw RPCError(code: .invalidArgument, message: "the first DiscoveryRequest must carry node.id") }
        let fields = node.metadata.fields
        let service = fields[NodeMetadata.service]?.stringValue ?? node.cluster
        guard !service.isEmpty else { throw RPCError(code: .invalidArgument, message: "node '\(node.id)' names no service (node.cluster or metadata '\(NodeMetadata.service)')") }
        var listeners: [String: HostPort] = [:]
        for (name, value) in fields[NodeMetadata.listeners]?.structValue.fields ?? [:] {
            guard let address = HostPort(parsing: value.stringValue) else {
                throw RPCError(code: .invalidArgument, message: "node '\(node.id)': metadata \(NodeMetadata.listeners).\(name): expected HOST:PORT, found '\(value.stringValue)'")
            }
            listeners[name] = address
        }
        let app = fields[NodeMetadata.app].flatMap { HostPort(parsing: $0.stringValue) }
        let zone = node.locality.zone.isEmpty ? nil : node.locality.zone
        return SidecarIdentity(node: node.id, service: service, zone: zone, listeners: listeners, app: app)
    }
}

/// The keys of an Outrigger sidecar's node metadata.
public enum NodeMetadata {
    public static let service = "outrigger.service"
    /// A struct: listener name → its bound HOST:PORT.
    public static let listeners = "outrigger.listeners"
    public static let app = "outrigger.app"
}
