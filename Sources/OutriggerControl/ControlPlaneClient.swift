import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerProxy
import OutriggerXDS
import SwiftProtobuf

/// The sidecar's side of the control plane: one ADS stream at a time to one of `addresses`, reconnecting with
/// jittered exponential backoff across all of them. Each push is validated and applied through
/// `Sidecar.apply` (the same atomic swap as a file reload), then ACKed; a refused one is NACKed with the
/// resource and field, and the running config stays. A lost control plane changes nothing (fail static).
public final class ControlPlaneClient: Sendable {
    private let addresses: [HostPort]
    private let overrides: @Sendable (inout SidecarConfig) -> Void
    private let trustedCertificates: String?
    private let identity: SidecarIdentity
    private let sidecar: Sidecar
    private let base: SidecarConfig
    private let logger: Logger
    private let state = NIOLockedValueBox(XDSClientState())
    /// A generation a rollout prepared here and has not decided yet: its config, ready to switch to, and what the
    /// accepted state becomes when it is committed.
    private let staged = NIOLockedValueBox<(generation: UInt64, prepared: Sidecar.PreparedConfig, state: XDSClientState)?>(nil)
    /// Where the last accepted config is kept (nil: nowhere).
    private let stateFile: String?
    /// The open stream's outbox, for the drain notice.
    private let outbox = NIOLockedValueBox<AsyncStream<Envoy_Service_Discovery_V3_DiscoveryRequest>.Continuation?>(nil)
    private let isDraining = NIOLockedValueBox(false)
    /// Connected now, pushes applied and refused, when the last was applied (for stats and `/config_dump`).
    private let counters = NIOLockedValueBox(Counters())

    public struct Counters: Sendable {
        public var connected = false
        public var accepted = 0
        public var rejected = 0
        public var lastRejection: String?
        /// Streams that ended or could not be opened.
        public var streamFailures = 0
        public var lastAppliedAt: ContinuousClock.Instant?
    }

    /// - Parameter stateDirectory: where the last accepted config is persisted (written atomically after each
    ///   applied push) and read back by `restore`.
    /// - Parameter overrides: applied to every config before it is applied (the command line's flags, such as
    ///   `--access-log`, win over pushes as they win over files).
    /// - Parameter trustedCertificates: a PEM bundle of the CAs the control plane's certificate must chain to:
    ///   xDS over TLS (nil: plaintext).
    public init(addresses: [HostPort], identity: SidecarIdentity, sidecar: Sidecar, base: SidecarConfig, stateDirectory: String? = nil,
                trustedCertificates: String? = nil, overrides: @escaping @Sendable (inout SidecarConfig) -> Void = { _ in }, logger: Logger) {
        self.trustedCertificates = trustedCertificates
        self.overrides = overrides
        self.addresses = addresses
        self.identity = identity
        self.sidecar = sidecar
        self.base = base
        self.stateFile = stateDirectory.map { URL(fileURLWithPath: $0).appendingPathComponent("xds-state.pb").path }
        self.logger = logger
        sidecar.setAdminExtension { [weak self] in
            self?.adminExtension() ?? AdminExtension(prometheusText: "", configDumpKey: "controlPlane", configDumpJSON: "null")
        }
    }

    /// `outrigger_control_*` stats, and for `/config_dump` each accepted resource's version and source and the last NACK.
    func adminExtension() -> AdminExtension {
        let counters = status
        let (versions, accepted) = state.withLockedValue { ($0.versions, $0.accepted) }
        let age = counters.lastAppliedAt.map { ContinuousClock.now - $0 }.map(\.inSeconds)
        var text = """
        # HELP outrigger_control_connected Whether the stream to the control plane is open.
        # TYPE outrigger_control_connected gauge
        outrigger_control_connected \(counters.connected ? 1 : 0)
        # HELP outrigger_control_updates_total Control-plane pushes applied or held (accepted) and refused (rejected, NACKed).
        # TYPE outrigger_control_updates_total counter
        outrigger_control_updates_total{result="accepted"} \(counters.accepted)
        outrigger_control_updates_total{result="rejected"} \(counters.rejected)
        # HELP outrigger_control_stream_failures_total Streams to the control plane that ended or could not be opened.
        # TYPE outrigger_control_stream_failures_total counter
        outrigger_control_stream_failures_total \(counters.streamFailures)

        """
        if let age {
            text += "# HELP outrigger_control_last_update_age_seconds Time since a push was last applied.\n"
            text += "# TYPE outrigger_control_last_update_age_seconds gauge\noutrigger_control_last_update_age_seconds \(age)\n"
        }
        var types: [String: Any] = [:]
        for type in XDSType.allCases.sorted() {
            types[type.shortName] = ["version": versions[type] ?? "", "resources": accepted[type].keys.sorted()]
        }
        let object: [String: Any] = [
            "source": addresses.map(\.description).joined(separator: ","),
            "node": identity.node,
            "connected": counters.connected,
            "types": types,
            "lastNack": counters.lastRejection.map { $0 as Any } ?? NSNull(),
        ]
        return AdminExtension(prometheusText: text, configDumpKey: "controlPlane", configDumpJSON: PlainHTTPServer.json(object))
    }

    /// Applies the persisted config, if there is one and it is still valid: a sidecar restarted while its
    /// control plane is down serves what it last accepted. Returns whether it did.
    @discardableResult
    public func restore() async -> Bool {
        guard let stateFile, let data = FileManager.default.contents(atPath: stateFile) else {
            logger.notice("no persisted control-plane config; serving the start-up config until the control plane answers")
            return false
        }
        do {
            let persisted = try Outrigger_V1_PersistedState(serializedBytes: data)
            var (restored, config) = try XDSClientState.restoring(persisted, base: base)
            // Listeners stay where this process bound them (the persisted ones may name a port of the last one).
            for index in config.listeners.indices {
                if let address = identity.listeners[config.listeners[index].name] { config.listeners[index].address = address }
            }
            overrides(&config)
            try await sidecar.apply(config)
            state.withLockedValue { $0 = restored }
            logger.notice("serving the persisted control-plane config until the control plane answers", metadata: ["file": "\(stateFile)"])
            return true
        } catch {
            logger.error("the persisted control-plane config is unusable; serving the start-up config", metadata: ["file": "\(stateFile)", "error": "\(error)"])
            return false
        }
    }

    /// Tells the control plane this sidecar is draining (its node metadata, on the open stream), so it stops
    /// being an endpoint of its service before it closes.
    public func announceDraining() {
        isDraining.withLockedValue { $0 = true }
        let request = state.withLockedValue { state in
            self.request(.cluster, version: state.versions[.cluster] ?? "", nonce: state.nonces[.cluster] ?? "", names: [])
        }
        var notice = request
        notice.node = node()
        outbox.withLockedValue { _ = $0?.yield(notice) }
    }

    private func persist() {
        guard let stateFile else { return }
        do {
            let bytes: [UInt8] = try state.withLockedValue { $0.persisted }.serializedBytes()
            let temporary = stateFile + ".tmp"
            try Data(bytes).write(to: URL(fileURLWithPath: temporary))
            guard rename(temporary, stateFile) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } catch {
            logger.error("cannot persist the control-plane config", metadata: ["file": "\(stateFile)", "error": "\(error)"])
        }
    }

    public var status: Counters { counters.withLockedValue { $0 } }

    /// Streams until cancelled, reconnecting after every failure.
    public func run() async {
        var failures = 0
        var index = 0
        while !Task.isCancelled {
            let address = addresses[index % addresses.count]
            index += 1
            let connected = NIOLockedValueBox(false)
            do {
                try await stream(to: address) { connected.withLockedValue { $0 = true } }
            } catch {
                if Task.isCancelled { break }
                logger.warning("control plane stream ended; serving the last accepted config", metadata: ["address": "\(address)", "error": "\(error)"])
            }
            counters.withLockedValue { $0.connected = false; $0.streamFailures += 1 }
            failures = connected.withLockedValue { $0 } ? 1 : failures + 1
            try? await Task.sleep(for: ReconnectBackoff.delay(after: failures, ceiling: .seconds(10)))
        }
    }

    private func stream(to address: HostPort, connected: @escaping @Sendable () -> Void) async throws {
        var security = HTTP2ClientTransport.Posix.TransportSecurity.plaintext
        if let trustedCertificates {
            security = .tls { $0.trustRoots = .certificates([.file(path: trustedCertificates, format: .pem)]) }
        }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        // HTTP/2 PINGs notice a control plane that vanished without closing the connection.
        config.connection.keepalive = .init(time: .seconds(10), timeout: .seconds(5), allowWithoutCalls: false)
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: address.host, port: address.port), transportSecurity: security, config: config)
        try await withGRPCClient(transport: transport) { client in
            let ads = Envoy_Service_Discovery_V3_AggregatedDiscoveryService.Client(wrapping: client)
            let (outbox, send) = AsyncStream<Envoy_Service_Discovery_V3_DiscoveryRequest>.makeStream()
            self.outbox.withLockedValue { $0 = send }
            defer { self.outbox.withLockedValue { $0 = nil } }
            // Clusters and listeners by wildcard; endpoints and routes by the names already held (a reconnect).
            let resume = state.withLockedValue { state in
                state.streamStarted()
                return (state.versions, state.names)
            }
            var first = true
            for type in [XDSType.cluster, .listener, .endpoints, .route] {
                let names = resume.1[type] ?? []
                if (type == .endpoints || type == .route) && names.isEmpty { continue }
                var request = request(type, version: resume.0[type] ?? "", nonce: "", names: names)
                if first { request.node = node(); first = false }
                send.yield(request)
            }
            try await ads.streamAggregatedResources(requestProducer: { writer in
                for await request in outbox { try await writer.write(request) }
            }, onResponse: { response in
                defer { send.finish() }
                var first = true
                for try await message in response.messages {
                    if first {
                        // Connected once the control plane has answered (a call it refused at once is no connection).
                        first = false
                        connected()
                        self.counters.withLockedValue { $0.connected = true }
                    }
                    for request in await self.handle(message) { send.yield(request) }
                }
            })
        }
    }

    /// Decides, applies, and answers one response (its ACK or NACK, then any new subscriptions).
    private func handle(_ message: Envoy_Service_Discovery_V3_DiscoveryResponse) async -> [Envoy_Service_Discovery_V3_DiscoveryRequest] {
        if message.typeURL == StagedGenerations.typeURL { return await handleStaged(message) }
        guard let type = XDSType(rawValue: message.typeURL) else {
            var nack = request(.cluster, version: "", nonce: message.nonce, names: [])
            nack.typeURL = message.typeURL
            nack.errorDetail.code = 12  // UNIMPLEMENTED
            nack.errorDetail.message = "resource type \(message.typeURL) is not implemented"
            return [nack]
        }
        let decision = state.withLockedValue { $0.received(type: type, version: message.versionInfo, nonce: message.nonce, resources: message.resources, base: base) }
        var refusal: String?
        var applied = false
        switch decision {
        case .apply(var config):
            overrides(&config)
            do {
                try await sidecar.apply(config)
                applied = true
                counters.withLockedValue { $0.lastAppliedAt = .now }
                logger.info("control plane config applied", metadata: ["type": "\(type.shortName)", "version": "\(message.versionInfo)"])
            } catch {
                refusal = "\(type.shortName): cannot apply: \(error)"
            }
        case .hold:
            break
        case .reject(let rejection):
            refusal = rejection.description
        }
        if let refusal {
            logger.error("control plane push refused; keeping the running config\n\(refusal)", metadata: ["version": "\(message.versionInfo)"])
            counters.withLockedValue { $0.rejected += 1; $0.lastRejection = refusal }
            let (version, names) = state.withLockedValue { ($0.versions[type] ?? "", $0.names[type] ?? []) }
            var nack = request(type, version: version, nonce: message.nonce, names: names)
            nack.errorDetail.code = 3  // INVALID_ARGUMENT
            nack.errorDetail.message = refusal
            return [nack]
        }
        counters.withLockedValue { $0.accepted += 1 }
        let (names, changes, versions, nonces) = state.withLockedValue { state in
            state.commit()
            let changes = state.subscriptionChanges()
            return (state.names[type] ?? [], changes, state.versions, state.nonces)
        }
        if applied { persist() }
        var requests = [request(type, version: message.versionInfo, nonce: message.nonce, names: names)]
        for (changed, list) in changes.sorted(by: { $0.key < $1.key }) {
            requests.append(request(changed, version: versions[changed] ?? "", nonce: nonces[changed] ?? "", names: list))
        }
        return requests
    }

    /// A rollout's message: prepare a generation (validate and warm it, serve nothing of it), commit it (switch to
    /// it at once, and take its resources as accepted), or abort it. Answered with an ACK, or a NACK saying why.
    private func handleStaged(_ message: Envoy_Service_Discovery_V3_DiscoveryResponse) async -> [Envoy_Service_Discovery_V3_DiscoveryRequest] {
        var answer = Envoy_Service_Discovery_V3_DiscoveryRequest()
        answer.typeURL = message.typeURL
        answer.versionInfo = message.versionInfo
        answer.responseNonce = message.nonce
        var subscriptions: [Envoy_Service_Discovery_V3_DiscoveryRequest] = []
        do {
            guard message.resources.count == 1 else { throw StagedGenerations.Refusal("expected one StagedGeneration, got \(message.resources.count)") }
            let stage = try Outrigger_V1_StagedGeneration(unpackingAny: message.resources[0])
            switch stage.phase {
            case .prepare:
                let (restored, decoded) = try XDSClientState.restoring(stage.view, base: base)
                var config = decoded
                overrides(&config)
                let prepared = try await sidecar.prepare(config)
                staged.withLockedValue { $0 = (stage.generation, prepared, restored) }
                logger.info("generation prepared", metadata: ["generation": "\(stage.generation)"])
            case .commit:
                guard let held = staged.withLockedValue({ $0 }), held.generation == stage.generation else {
                    throw StagedGenerations.Refusal("generation \(stage.generation) was not prepared here")
                }
                // The instant every sidecar of the wave switches at, if it has not passed (at most a second ahead:
                // the stream's other messages wait meanwhile, and a clock that far off is not waited for).
                let wait = StagedGenerations.wait(until: stage.switchAtUnixMs)
                if wait > .zero { try await Task.sleep(for: wait) }
                try await sidecar.activate(held.prepared)
                staged.withLockedValue { $0 = nil }
                let (changes, versions, nonces) = state.withLockedValue { state in
                    state.adopt(held.state)
                    return (state.subscriptionChanges(), state.versions, state.nonces)
                }
                for (type, names) in changes.sorted(by: { $0.key < $1.key }) {
                    subscriptions.append(request(type, version: versions[type] ?? "", nonce: nonces[type] ?? "", names: names))
                }
                persist()
                counters.withLockedValue { $0.lastAppliedAt = .now }
                logger.info("generation committed", metadata: ["generation": "\(stage.generation)"])
            case .abort, .UNRECOGNIZED:
                staged.withLockedValue { if $0?.generation == stage.generation { $0 = nil } }
            }
        } catch {
            answer.errorDetail.code = 3  // INVALID_ARGUMENT
            answer.errorDetail.message = "\(error)"
            logger.error("a rollout's generation refused", metadata: ["version": "\(message.versionInfo)", "error": "\(error)"])
        }
        return [answer] + subscriptions
    }

    private func request(_ type: XDSType, version: String, nonce: String, names: [String]) -> Envoy_Service_Discovery_V3_DiscoveryRequest {
        var request = Envoy_Service_Discovery_V3_DiscoveryRequest()
        request.typeURL = type.rawValue
        request.versionInfo = version
        request.responseNonce = nonce
        request.resourceNames = names
        return request
    }

    private func node() -> Envoy_Config_Core_V3_Node {
        var node = Envoy_Config_Core_V3_Node()
        node.id = identity.node
        node.cluster = identity.service
        node.userAgentName = "outrigger"
        if let zone = identity.zone { node.locality.zone = zone }
        var listeners = Google_Protobuf_Struct()
        for (name, address) in identity.listeners { listeners.fields[name] = Google_Protobuf_Value(stringValue: address.description) }
        node.metadata.fields[NodeMetadata.service] = Google_Protobuf_Value(stringValue: identity.service)
        node.metadata.fields[NodeMetadata.listeners] = Google_Protobuf_Value(structValue: listeners)
        if let app = identity.app { node.metadata.fields[NodeMetadata.app] = Google_Protobuf_Value(stringValue: app.description) }
        if let admin = identity.admin { node.metadata.fields[NodeMetadata.admin] = Google_Protobuf_Value(stringValue: admin.description) }
        if isDraining.withLockedValue({ $0 }) { node.metadata.fields[NodeMetadata.draining] = Google_Protobuf_Value(boolValue: true) }
        return node
    }
}
