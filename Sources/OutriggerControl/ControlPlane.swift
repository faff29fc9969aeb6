import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import NIOConcurrencyHelpers
import NIOCore
import OutriggerConfig
import OutriggerEtcd
import OutriggerProxy
import OutriggerXDS
import SwiftProtobuf

/// `outrigger control`: serves every sidecar its view of the mesh over ADS (state of the world), keeps
/// connected sidecars registered as endpoints of their service, and pushes again when the mesh file or the
/// registrations change. The mesh comes from a `MeshStore` (the mesh file today), through one narrow seam:
/// `reload` reads its snapshot, `follow` waits for its changes.
public final class ControlPlane: Sendable {
    /// A view handed to a stream, with the change it answers (for convergence).
    struct Push: Sendable {
        var resources: [XDSType: [String: XDSResource]]
        /// Each type's version (content hash) of its whole set, computed once per distinct view.
        var versions: [XDSType: String]
        /// When the change this view carries was made (the first change of a debounced burst).
        var changedAt: ContinuousClock.Instant
        /// Pushes are numbered as they are computed; a stream drops one older than what it already has.
        var generation: UInt64 = 0
    }

    /// What a connected stream needs from the plane: its identity, and where to send new views.
    struct Stream: Sendable {
        var identity: SidecarIdentity
        var connectedAt: Date
        var push: AsyncStream<Push>.Continuation
        /// A rollout's messages and its sidecar's views as a rollout changes them, each sent in order (none replaces
        /// another).
        var staging: AsyncStream<Staging>.Continuation
        var status: [XDSType: TypeStatus] = [:]
        var draining = false
    }

    /// What a rollout hands a stream: a message (PREPARE, COMMIT, ABORT), and the sidecar's view from then on.
    struct Staging: Sendable {
        var message: Outrigger_V1_StagedGeneration?
        /// `message` encoded as the resource it is sent as, once for every stream it goes to (`XDSEncoder.pack`: an Any
        /// made from a message encodes it again every time it is written).
        var packed: Google_Protobuf_Any?
        var push: Push?
        /// With a PREPARE: the view it carries, with its versions (what the sidecar runs once it commits it).
        var prepared: Push?

        init(message: Outrigger_V1_StagedGeneration? = nil, push: Push? = nil, prepared: Push? = nil) {
            self.message = message
            self.packed = message.flatMap { try? XDSEncoder.pack($0) }
            self.push = push
            self.prepared = prepared
        }
    }

    /// Per type, for status: what was sent and ACKed, and the last NACK.
    public struct TypeStatus: Sendable, Hashable {
        public var sent: String?
        public var acked: String?
        public var nack: String?
    }

    /// One connected sidecar, for `/status` and `outrigger control status`.
    public struct SidecarStatus: Sendable {
        public var identity: SidecarIdentity
        public var connectedAt: Date
        public var draining: Bool
        public var types: [XDSType: TypeStatus]
        /// The store's version of the mesh it is served (a rollout's, once activated on it).
        public var mesh: String?
        /// The rollout's generation, when activated on it.
        public var generation: UInt64?

        /// SYNCED (every type ACKed at the version sent), NACKED (the last answer to some type was a NACK) or STALE.
        public var sync: String {
            if types.values.contains(where: { $0.nack != nil }) { return "NACKED" }
            return types.values.allSatisfy { $0.sent == nil || $0.sent == $0.acked } ? "SYNCED" : "STALE"
        }
    }

    struct State: Sendable {
        var mesh: MeshConfig
        /// The store's version of `mesh` (nil: not from the store).
        var meshVersion: String?
        var streams: [UInt64: Stream] = [:]
        var nextStream: UInt64 = 0
        /// Sidecars registered as endpoints, by service then node; kept for `registrationGrace` after their stream ends.
        var registered: [String: [String: HostPort]] = [:]
        /// Nodes whose registration is removed once their grace passes, with the generation that scheduled it.
        var leaving: [String: (service: String, generation: UInt64)] = [:]
        var generation: UInt64 = 0
        /// The number of the last push computed.
        var pushes: UInt64 = 0
        /// The first change not pushed yet, and the last (debounce).
        var pendingSince: ContinuousClock.Instant?
        var lastChange: ContinuousClock.Instant?
        /// With replicas: this one's id and where it stands.
        var replica: (id: String, standing: EtcdReplicas.Standing)?
        /// A rollout's answers being waited for, by the version its message went out with. (An answer nobody waits
        /// for any more is dropped.)
        var answers: [String: Awaited] = [:]
        /// A committed rollout's mesh, served to the sidecars activated so far (the others keep `mesh`).
        var rollout: ActiveRollout?
        /// Streams sent a COMMIT they have not answered yet: no plain push reaches them meanwhile (one would switch
        /// their sidecar before the COMMIT's instant); their answer brings them the newest view.
        var awaitingCommit: Set<UInt64> = []
        /// Of those, the ones a push left out: they are pushed to once they answer.
        var missedPush: Set<UInt64> = []

        /// The mesh `node` is served.
        func mesh(for node: String) -> MeshConfig {
            if let rollout, rollout.activated.contains(node) { return rollout.mesh }
            return mesh
        }
    }

    /// The answers to one rollout message, by node: nil when ACKed, else the NACK; each one wakes the waiter.
    struct Awaited: Sendable {
        var answers: [String: String?] = [:]
        var wake: AsyncStream<Void>.Continuation
    }

    struct ActiveRollout: Sendable {
        var generation: UInt64
        var mesh: MeshConfig
        var version: String
        var activated: Set<String> = []
    }

    private let state: NIOLockedValueBox<State>
    private let store: (any MeshStore)?
    /// Registrations shared with the other replicas through etcd (nil: this process's own sidecars only).
    private let shared: EtcdRegistrations?
    private let logger: Logger
    /// How long a sidecar whose stream ended stays an endpoint (a reconnect within it changes nothing).
    let registrationGrace: Duration
    /// Changes closer together than this are pushed as one; a burst is pushed at most `debounceMax` after it began.
    let debounce: Duration
    let debounceMax: Duration
    public let metrics = ControlPlaneMetrics()

    /// - Parameters:
    ///   - mesh: what to serve first; `version`: its version in `store`, when it came from there.
    ///   - store: where `reload` and `follow` read the mesh; nil: only `apply` changes it.
    ///   - registrations: where the sidecars' registrations are kept when other replicas serve them too (their
    ///     `follow` and `keepAlive` run in `followRegistrations`); nil: in this process.
    public init(mesh: MeshConfig, version: String? = nil, store: (any MeshStore)? = nil, registrations: EtcdRegistrations? = nil,
                registrationGrace: Duration = .seconds(5), debounce: Duration = .milliseconds(100), debounceMax: Duration = .seconds(1),
                logger: Logger) {
        self.state = NIOLockedValueBox(State(mesh: mesh, meshVersion: version))
        self.store = store
        self.shared = registrations
        self.registrationGrace = registrationGrace
        self.debounce = debounce
        self.debounceMax = debounceMax
        self.logger = logger
    }

    public var mesh: MeshConfig { state.withLockedValue { $0.mesh } }

    /// Reads the store's mesh again; a broken one is logged and the running mesh kept, the same version is
    /// not applied again.
    @discardableResult
    public func reload() async -> Bool {
        await reloaded() == .applied
    }

    enum Reload: Equatable {
        case applied
        /// The store holds a mesh that cannot be served: refused, the running mesh kept.
        case rejected
        /// The store could not be read (etcd unreachable, no quorum): nothing is known of what it holds.
        case unreadable
    }

    private func reloaded() async -> Reload {
        guard let store else { return .rejected }
        do {
            let snapshot = try await store.snapshot()
            guard snapshot.version != state.withLockedValue({ $0.meshVersion }) else { return .applied }
            apply(snapshot.mesh, version: snapshot.version)
            logger.info("mesh reloaded", metadata: ["store": "\(store.description)", "version": "\(snapshot.version)"])
            return .applied
        } catch let error as MeshStoreUnreadable {
            logger.warning("cannot read the mesh now; serving the running mesh\n\(error)", metadata: ["store": "\(store.description)"])
            return .unreadable
        } catch {
            metrics.meshRejected.add(1)
            logger.error("mesh rejected; keeping the running mesh\n\(error)", metadata: ["store": "\(store.description)"])
            return .rejected
        }
    }

    /// Reloads whenever the store's content changes, until cancelled. A broken mesh is tried once per change
    /// (the follower waits on what it saw, not on what it applied); a store that could not be read is read again,
    /// with backoff, until it can be.
    public func follow() async {
        guard let store else { return }
        var seen: String
        if let applied = state.withLockedValue({ $0.meshVersion }) { seen = applied } else { seen = await store.currentVersion() }
        var failures = 0
        while !Task.isCancelled {
            if failures == 0 {
                do { try await store.waitForChange(after: seen) } catch { return }
            }
            let version = await store.currentVersion()
            if await reloaded() == .unreadable {
                failures += 1
                try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
                continue
            }
            failures = 0
            seen = version
        }
    }

    /// Swaps in `mesh` (of the store's `version`, when from there); every sidecar gets its new view (debounced).
    public func apply(_ mesh: MeshConfig, version: String? = nil) {
        state.withLockedValue { state in
            state.mesh = mesh
            state.meshVersion = version
        }
        changed()
    }

    /// Every connected sidecar, by node.
    public func status() -> [SidecarStatus] {
        state.withLockedValue { state in
            state.streams.values.map { stream in
                let activated = state.rollout.flatMap { $0.activated.contains(stream.identity.node) ? $0 : nil }
                return SidecarStatus(identity: stream.identity, connectedAt: stream.connectedAt, draining: stream.draining, types: stream.status,
                                     mesh: activated?.version ?? state.meshVersion, generation: activated?.generation)
            }
            .sorted { $0.identity.node < $1.identity.node }
        }
    }

    // MARK: Streams

    func open(_ identity: SidecarIdentity) -> (id: UInt64, pushes: AsyncStream<Push>, staging: AsyncStream<Staging>) {
        // Only the newest view matters to a stream: an older one still buffered is replaced.
        let (pushes, continuation) = AsyncStream<Push>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let (staging, stagingContinuation) = AsyncStream<Staging>.makeStream()
        let (id, mesh, registered, registers, twin, generation) = state.withLockedValue { state in
            state.nextStream += 1
            state.pushes += 1
            let sameNode = state.streams.filter { $0.value.identity.node == identity.node }
            state.streams[state.nextStream] = Stream(identity: identity, connectedAt: Date(), push: continuation, staging: stagingContinuation)
            state.leaving[identity.node] = nil
            var registers = false
            // Shared: etcd's registrations are the plane's, once written there and watched back.
            if shared == nil {
                // A node that comes back as another service leaves the old one.
                for service in state.registered.keys where service != identity.service {
                    if state.registered[service]?.removeValue(forKey: identity.node) != nil { registers = true }
                }
                if let address = identity.inboundAddress, state.registered[identity.service]?[identity.node] != address {
                    state.registered[identity.service, default: [:]][identity.node] = address
                    registers = true
                }
            }
            return (state.nextStream, state.mesh(for: identity.node), state.registered, registers, !sameNode.isEmpty, state.pushes)
        }
        if let shared, let address = identity.inboundAddress {
            Task { await shared.register(node: identity.node, service: identity.service, address: address) }
        }
        if twin {
            // A reconnect that beat the old stream's end, or two sidecars given one id. Both are served; the
            // registration is the newest one's, and stays while either is connected.
            logger.warning("a second stream for a node id already connected; both are served, the newest registers", metadata: ["node": "\(identity.node)"])
        }
        metrics.connected.add(1)
        logger.info("sidecar connected", metadata: ["node": "\(identity.node)", "service": "\(identity.service)"])
        // Its own view at once; everyone else's (it may be a new endpoint of theirs) with the next debounced push.
        do {
            continuation.yield(Self.push(try MeshView.resources(mesh: mesh, registered: Self.lists(registered), for: identity), changedAt: .now,
                                         generation: generation))
        } catch {
            logger.error("cannot build a sidecar's view", metadata: ["node": "\(identity.node)", "error": "\(error)"])
        }
        if registers { changed() }
        return (id, pushes, staging)
    }

    func close(_ id: UInt64) {
        let gone = state.withLockedValue { state -> (SidecarIdentity, UInt64)? in
            guard let stream = state.streams.removeValue(forKey: id) else { return nil }
            state.awaitingCommit.remove(id)
            state.missedPush.remove(id)
            stream.push.finish()
            stream.staging.finish()
            // Another stream of the same node (a reconnect that raced this close) keeps the registration.
            guard !state.streams.values.contains(where: { $0.identity.node == stream.identity.node }) else { return nil }
            state.generation += 1
            state.leaving[stream.identity.node] = (stream.identity.service, state.generation)
            return (stream.identity, state.generation)
        }
        metrics.connected.add(-1)
        guard let (identity, generation) = gone else { return }
        logger.info("sidecar disconnected", metadata: ["node": "\(identity.node)"])
        Task { [registrationGrace] in
            try? await Task.sleep(for: registrationGrace)
            await self.deregister(identity.node, ifGeneration: generation)
        }
    }

    private func deregister(_ node: String, ifGeneration generation: UInt64?) async {
        let removed = state.withLockedValue { state -> Bool in
            guard let leaving = state.leaving[node], generation == nil || leaving.generation == generation else { return false }
            state.leaving[node] = nil
            if shared != nil { return true }
            return state.registered[leaving.service]?.removeValue(forKey: node) != nil
        }
        guard removed else { return }
        if let shared { await shared.deregister(node: node) } else { changed() }
    }

    /// Where this replica stands among the replicas sharing its store (for `/status`).
    public func standing(_ id: String, _ standing: EtcdReplicas.Standing) {
        state.withLockedValue { $0.replica = (id, standing) }
    }

    var replica: (id: String, standing: EtcdReplicas.Standing)? { state.withLockedValue { $0.replica } }

    /// With shared registrations: follows them (every replica's sidecars) and keeps this replica's alive, until
    /// cancelled. Each change is pushed, as a local registration would be.
    /// `read` is called once all of them have been read the first time: a replica serves no sidecar before, or
    /// the first views it sent would lack every endpoint registered through the other replicas.
    public func followRegistrations(read: @escaping @Sendable () -> Void = {}) async {
        guard let shared else { return }
        let first = NIOLockedValueBox(true)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await shared.keepAlive() }
            group.addTask {
                await shared.follow { registered in
                    let changed = self.state.withLockedValue { state in
                        defer { state.registered = registered }
                        return state.registered != registered
                    }
                    if changed { self.changed() }
                    let isFirst = first.withLockedValue { value -> Bool in
                        defer { value = false }
                        return value
                    }
                    if isFirst { read() }
                }
            }
        }
    }

    /// A sidecar said it is draining (its node metadata in a later request): it stops being an endpoint now,
    /// so callers stop picking it before it closes.
    func draining(_ id: UInt64) {
        let identity = state.withLockedValue { state -> SidecarIdentity? in
            guard let stream = state.streams[id], !stream.draining else { return nil }
            state.streams[id]?.draining = true
            if shared != nil { return stream.identity }
            return state.registered[stream.identity.service]?.removeValue(forKey: stream.identity.node) != nil ? stream.identity : nil
        }
        guard let identity else { return }
        logger.info("sidecar draining; removed from its service's endpoints", metadata: ["service": "\(identity.service)"])
        if let shared {
            Task { await shared.deregister(node: identity.node) }
        } else {
            changed()
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
        switch event {
        case .acked: metrics.acks.add(1)
        case .nacked(let type, let version, let message):
            metrics.nacks.add(1)
            let node = state.withLockedValue { $0.streams[id]?.identity.node ?? "?" }
            logger.warning("sidecar refused a push", metadata: ["node": "\(node)", "type": "\(type.shortName)", "version": "\(version)", "error": "\(message)"])
        }
    }

    /// A sidecar answered a rollout's message.
    func answered(_ id: UInt64, version: String, refusal: String?) {
        state.withLockedValue { state in
            guard let node = state.streams[id]?.identity.node, state.answers[version] != nil else { return }
            state.answers[version]?.answers[node] = .some(refusal)
            state.answers[version]?.wake.yield()
        }
    }

    // MARK: Rollouts

    /// A rollout's first phase on every sidecar connected here: each gets its view of `mesh` as `generation`, to
    /// validate and warm without serving it. Returns each node's answer — nil: prepared; else why not (one that
    /// did not answer within `timeout` says so) — and where its admin answers.
    public func prepare(generation: UInt64, mesh: MeshConfig, timeout: Duration) async -> [String: (refusal: String?, admin: HostPort?)] {
        let (streams, registered) = state.withLockedValue { ($0.streams, Self.lists($0.registered)) }
        // Sidecars that differ only in node id see the same view: each distinct one is built and encoded once.
        var byShape: [SidecarIdentity: Staging] = [:]
        var messages: [UInt64: Staging] = [:]
        var answers: [String: (refusal: String?, admin: HostPort?)] = [:]
        var admins: [String: HostPort?] = [:]
        for (id, stream) in streams {
            admins[stream.identity.node] = stream.identity.admin
            do {
                let shape = stream.identity.shape
                let staging = try byShape[shape] ?? {
                    let view = try MeshView.resources(mesh: mesh, registered: registered, for: stream.identity)
                    return Staging(message: StagedGenerations.message(generation: generation, phase: .prepare, view: view),
                                   prepared: Self.push(view, changedAt: .now, generation: 0))
                }()
                byShape[shape] = staging
                messages[id] = staging
            } catch {
                answers[stream.identity.node] = ("cannot build its view of generation \(generation): \(error)", stream.identity.admin)
            }
        }
        for (node, refusal) in await send(messages, version: StagedGenerations.version(generation, .prepare), to: streams, timeout: timeout) {
            answers[node] = (refusal, admins[node] ?? nil)
        }
        return answers
    }

    /// A committed rollout's wave: `nodes` are served `mesh` (the store's `version`) from now on, and those connected
    /// here switch to the generation they prepared (COMMIT). One that did not prepare it here gets it as a plain
    /// push. Returns the answers of those told, as `prepare` does. With `notify` false (a replica catching up on the
    /// log), nobody is told: the views alone say it.
    /// With `timeout` nil, the answers are not waited for.
    @discardableResult
    /// `switchAt`: when the sidecars switch (milliseconds since the Unix epoch; 0: on receipt).
    public func activate(generation: UInt64, mesh: MeshConfig, version: String, nodes: [String], notify: Bool = true,
                         switchAt: Int64 = 0, timeout: Duration?) async -> [String: String?] {
        let wave = Set(nodes)
        let streams = state.withLockedValue { state in
            if state.rollout?.generation != generation { state.rollout = ActiveRollout(generation: generation, mesh: mesh, version: version) }
            state.rollout!.activated.formUnion(wave)
            let streams = state.streams.filter { wave.contains($0.value.identity.node) }
            if notify { state.awaitingCommit.formUnion(streams.keys) }
            return streams
        }
        let version = StagedGenerations.version(generation, .commit)
        let wakes = notify && timeout != nil ? expect(version) : nil
        let commit = Staging(message: notify ? StagedGenerations.message(generation: generation, phase: .commit, switchAt: switchAt) : nil)
        // The generation's views go with the COMMIT, in order, on the rollout's channel (the pushes' channel keeps
        // only the newest, and an older view computed before the activation could take the place of these).
        for (stream, push) in views(for: Set(streams.keys), changedAt: .now, evenAwaitingCommit: true).values {
            var staging = commit
            staging.push = push
            stream.staging.yield(staging)
        }
        guard let wakes, let timeout else { return [:] }
        return await gather(version, wakes, from: Set(streams.values.map(\.identity.node)), timeout: timeout)
    }

    /// An aborted rollout: every sidecar connected here drops the generation, if it prepared it.
    public func drop(generation: UInt64, timeout: Duration?) async {
        let streams = state.withLockedValue { $0.streams }
        let message = Staging(message: StagedGenerations.message(generation: generation, phase: .abort))
        _ = await send(streams.mapValues { _ in message }, version: StagedGenerations.version(generation, .abort), to: streams, timeout: timeout)
    }

    /// A rollout that ended without becoming the mesh (rolled back, or its end carried out after a later one
    /// replaced it): the sidecars it activated are served the plane's mesh again.
    public func endRollout(generation: UInt64) {
        let changed = state.withLockedValue { state -> Bool in
            guard state.rollout?.generation == generation else { return false }
            state.rollout = nil
            return true
        }
        if changed { self.changed() }
    }

    /// A completed rollout: its mesh is every sidecar's.
    public func complete(generation: UInt64, mesh: MeshConfig, version: String) {
        state.withLockedValue { state in
            if state.rollout?.generation == generation { state.rollout = nil }
            state.mesh = mesh
            state.meshVersion = version
        }
        changed()
    }

    /// The rollout served now, and the sidecars it has been activated on.
    var rollout: (generation: UInt64, activated: Int)? {
        state.withLockedValue { state in state.rollout.map { ($0.generation, $0.activated.count) } }
    }

    /// Sends each stream its message; with a `timeout`, waits for the answers (nil: sends, and waits for nothing).
    private func send(_ messages: [UInt64: Staging], version: String, to streams: [UInt64: Stream],
                      timeout: Duration?) async -> [String: String?] {
        let wakes = timeout != nil ? expect(version) : nil
        for (id, message) in messages { streams[id]?.staging.yield(message) }
        guard let wakes, let timeout else { return [:] }
        return await gather(version, wakes, from: Set(messages.keys.compactMap { streams[$0]?.identity.node }), timeout: timeout)
    }

    /// Starts keeping the answers to the message going out as `version`: each one wakes the stream returned.
    private func expect(_ version: String) -> AsyncStream<Void> {
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        state.withLockedValue { $0.answers[version] = Awaited(wake: wake) }
        return wakes
    }

    /// The answers of `nodes` to the message that went out as `version` (waited for since it went out), once all
    /// have answered or `timeout` has passed: one that did not answer says so.
    private func gather(_ version: String, _ wakes: AsyncStream<Void>, from nodes: Set<String>, timeout: Duration) async -> [String: String?] {
        // The deadline ends the wait as a last wake would.
        let deadline = Task { [state] in
            try? await Task.sleep(for: timeout)
            state.withLockedValue { $0.answers[version]?.wake.finish() }
        }
        defer { deadline.cancel() }
        let everyone = { self.state.withLockedValue { Set(($0.answers[version]?.answers ?? [:]).keys).isSuperset(of: nodes) } }
        if !everyone() {
            for await _ in wakes where everyone() { break }
        }
        let answers = state.withLockedValue { state in
            defer { state.answers[version] = nil }
            return state.answers[version]?.answers ?? [:]
        }
        var all = answers.filter { nodes.contains($0.key) }
        for node in nodes where all[node] == nil { all[node] = .some("did not answer within \(timeout)") }
        return all
    }

    /// A stream's sidecar answered its COMMIT: plain pushes reach it again; one that a push left out meanwhile gets
    /// the next (debounced, so a wave's answers make one push).
    func commitAnswered(_ id: UInt64) {
        let missed = state.withLockedValue { state in
            state.awaitingCommit.remove(id) != nil && state.missedPush.remove(id) != nil
        }
        if missed { changed() }
    }

    func sent(_ id: UInt64, _ type: XDSType, version: String) {
        metrics.responses.add(1)
        state.withLockedValue { $0.streams[id]?.status[type, default: TypeStatus()].sent = version }
    }

    /// The mesh or the registrations changed: push once no change came for `debounce`, or `debounceMax` after
    /// the burst began, whichever is first.
    func changed() {
        let now = ContinuousClock.now
        let start = state.withLockedValue { state -> Bool in
            state.lastChange = now
            guard state.pendingSince == nil else { return false }
            state.pendingSince = now
            return true
        }
        guard start else { return }
        Task {
            while true {
                let due = self.state.withLockedValue { state -> ContinuousClock.Instant? in
                    guard let since = state.pendingSince, let last = state.lastChange else { return nil }
                    return min(last + self.debounce, since + self.debounceMax)
                }
                guard let due else { return }
                if ContinuousClock.now >= due { break }
                try? await Task.sleep(until: due, clock: .continuous)
            }
            let since = self.state.withLockedValue { state -> ContinuousClock.Instant? in
                defer { state.pendingSince = nil }
                return state.pendingSince
            }
            self.pushAll(changedAt: since ?? .now)
        }
    }

    /// Computes each connected sidecar's view and hands it to its stream (which sends only what changed).
    func pushAll(changedAt: ContinuousClock.Instant) {
        metrics.pushes.add(1)
        for (stream, push) in views(for: nil, changedAt: changedAt).values { stream.push.yield(push) }
    }

    /// Each stream's view now (of `only` these streams; nil: every one), numbered as one push. Streams awaiting a
    /// COMMIT's answer are left out, unless `evenAwaitingCommit`.
    private func views(for only: Set<UInt64>?, changedAt: ContinuousClock.Instant, evenAwaitingCommit: Bool = false) -> [UInt64: (Stream, Push)] {
        let (mesh, rollout, registered, streams, generation) = state.withLockedValue { state in
            state.pushes += 1
            var streams = only.map { ids in state.streams.filter { ids.contains($0.key) } } ?? state.streams
            if !evenAwaitingCommit, !state.awaitingCommit.isEmpty {
                let left = Set(streams.keys).intersection(state.awaitingCommit)
                state.missedPush.formUnion(left)
                streams = streams.filter { !left.contains($0.key) }
            }
            return (state.mesh, state.rollout, Self.lists(state.registered), streams, state.pushes)
        }
        // Sidecars that differ only in node id see the same thing: each distinct view is built once per push (and
        // once more for those a rollout has activated).
        var views: [SidecarIdentity: Push] = [:]
        var rolledOut: [SidecarIdentity: Push] = [:]
        var out: [UInt64: (Stream, Push)] = [:]
        for (id, stream) in streams {
            let shape = stream.identity.shape
            let activated = rollout?.activated.contains(stream.identity.node) == true
            do {
                let push = try (activated ? rolledOut : views)[shape]
                    ?? Self.push(try MeshView.resources(mesh: activated ? rollout!.mesh : mesh, registered: registered, for: stream.identity),
                                 changedAt: changedAt, generation: generation)
                if activated { rolledOut[shape] = push } else { views[shape] = push }
                out[id] = (stream, push)
            } catch {
                logger.error("cannot build a sidecar's view", metadata: ["node": "\(stream.identity.node)", "error": "\(error)"])
            }
        }
        return out
    }

    static func push(_ resources: [XDSType: [String: XDSResource]], changedAt: ContinuousClock.Instant, generation: UInt64) -> Push {
        Push(resources: resources, versions: resources.mapValues(ADSStreamStateMachine.version(of:)), changedAt: changedAt, generation: generation)
    }

    private static func lists(_ registered: [String: [String: HostPort]]) -> [String: [HostPort]] {
        registered.mapValues { $0.values.sorted { $0.description < $1.description } }
    }

    // MARK: Serving

    /// The listen backlog of the ADS port (Linux caps it at `net.core.somaxconn`, 4,096 by default).
    static let listenBacklog: Int32 = 4096

    /// Serves ADS on `host:port` until the task is cancelled; `onListening` gets the bound port.
    /// - Parameter tls: the server's certificate chain and private key (PEM files): xDS over TLS.
    public func serve(host: String, port: Int, tls: OutriggerConfig.TLSConfig? = nil, onListening: @Sendable (Int) -> Void = { _ in }) async throws {
        let security: HTTP2ServerTransport.Posix.TransportSecurity = tls.map { tls in
            .tls(certificateChain: [.file(path: tls.certificate, format: .pem)], privateKey: .file(path: tls.privateKey, format: .pem))
        } ?? .plaintext
        var config = HTTP2ServerTransport.Posix.Config.defaults
        // PINGs notice a sidecar that vanished without closing its connection (its registration then ends);
        // sidecars ping every 10 s while their stream is open.
        config.connection.keepalive = .init(time: .seconds(30), timeout: .seconds(10),
                                            clientBehavior: .init(minPingIntervalWithoutCalls: .seconds(5), allowWithoutCalls: true))
        // A fleet reconnecting at once (a control-plane restart) overflows NIO's default listen backlog of 128:
        // the dropped SYNs wait out the kernel's retransmission backoff (1 s, 3 s, 7 s…), so 5,000 sidecars took
        // two minutes to connect. The transport sets no backlog; its listener callback runs before the listen.
        config.channelDebuggingCallbacks.onBindTCPListener = { channel in
            channel.setOption(ChannelOptions.backlog, value: Self.listenBacklog)
        }
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: host, port: port), transportSecurity: security, config: config)
        let server = GRPCServer(transport: transport, services: [AggregatedDiscoveryService(plane: self)])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            let address = try await transport.listeningAddress
            onListening(address.ipv4?.port ?? address.ipv6?.port ?? port)
        }
    }
}

/// The ADS endpoint: one task per sidecar stream, driving its `ADSStreamStateMachine` with the sidecar's
/// requests and the plane's views, and writing the responses it asks for.
struct AggregatedDiscoveryService: Envoy_Service_Discovery_V3_AggregatedDiscoveryService.SimpleServiceProtocol {
    let plane: ControlPlane

    enum Input: Sendable {
        case request(Envoy_Service_Discovery_V3_DiscoveryRequest)
        case push(ControlPlane.Push)
        case stage(ControlPlane.Staging)
        case ended
        /// The request stream broke: bytes that are no DiscoveryRequest, a message over the size limit.
        case failed(any Error)
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
                    input.yield(.ended)
                } catch {
                    input.yield(.failed(error))
                }
            }
            var machine = ADSStreamStateMachine()
            /// The change the last view carried, until the sidecar has answered all of it.
            var converging: ContinuousClock.Instant?
            var lastGeneration: UInt64 = 0
            var stagedNonce = 0
            /// The last generation this stream sent the sidecar to prepare, and its view.
            var prepared: (generation: UInt64, view: ControlPlane.Push)?
            /// A COMMIT sent and not answered yet (pushes held meanwhile), with the view prepared through this stream.
            var committing: (generation: UInt64, view: ControlPlane.Push?)?
            for await next in inputs {
                let responses: [ADSStreamStateMachine.Response]
                switch next {
                case .request(let message):
                    let id: UInt64
                    if let opened {
                        id = opened
                    } else {
                        // The first request names the node; its view is computed and pushed from then on.
                        let (newID, pushes, staging) = plane.open(try Self.identity(of: message.node, peer: context.remotePeer))
                        opened = newID
                        id = newID
                        machine = ADSStreamStateMachine(noncePrefix: "\(newID)-")
                        group.addTask {
                            for await push in pushes { input.yield(.push(push)) }
                            input.yield(.ended)  // replaced by a newer stream of the same node
                        }
                        group.addTask {
                            for await stage in staging { input.yield(.stage(stage)) }
                        }
                    }
                    if message.typeURL == StagedGenerations.typeURL {
                        let refusal = message.hasErrorDetail ? message.errorDetail.message : nil
                        plane.answered(id, version: message.versionInfo, refusal: refusal)
                        // The answer to a COMMIT this stream holds its pushes for: switched, the sidecar runs the view
                        // it prepared (only what differs from it goes next); refused, it runs what it ran before.
                        guard let pending = committing, message.versionInfo == StagedGenerations.version(pending.generation, .commit) else { continue }
                        committing = nil
                        plane.commitAnswered(id)
                        if refusal == nil, let view = pending.view {
                            for (type, version) in machine.adopt(view.resources, versions: view.versions) {
                                plane.sent(id, type, version: version)
                                plane.record(id, .acked(type, version: version))
                            }
                            responses = machine.release()
                        } else if refusal == nil {
                            // Prepared through a stream before a reconnect: what it runs is not known here.
                            _ = machine.release()
                            responses = machine.resendAll()
                        } else {
                            responses = machine.release()
                        }
                        break
                    }
                    if message.node.metadata.fields[NodeMetadata.draining]?.boolValue == true { plane.draining(id) }
                    guard let type = XDSType(rawValue: message.typeURL) else { continue }  // types we do not serve are ignored, as Envoy's servers do
                    let parsed = ADSStreamStateMachine.Request(type: type, versionInfo: message.versionInfo, nonce: message.responseNonce,
                                                               resourceNames: message.resourceNames,
                                                               error: message.hasErrorDetail ? message.errorDetail.message : nil)
                    let (events, out) = machine.received(parsed)
                    for event in events { plane.record(id, event) }
                    responses = out
                    if !events.isEmpty, machine.isSynced, let since = converging {
                        plane.metrics.convergence.observe(ContinuousClock.now - since)
                        converging = nil
                    }
                case .stage(let staging):
                    if let stage = staging.message, let packed = staging.packed {
                        var message = Envoy_Service_Discovery_V3_DiscoveryResponse()
                        message.typeURL = StagedGenerations.typeURL
                        message.versionInfo = StagedGenerations.version(stage.generation, stage.phase)
                        stagedNonce += 1
                        message.nonce = "\(opened ?? 0)-s\(stagedNonce)"
                        message.resources = [packed]
                        message.controlPlane.identifier = "outrigger"
                        try await response.write(message)
                    }
                    if let view = staging.prepared, let stage = staging.message { prepared = (stage.generation, view) }
                    guard let push = staging.push else { continue }
                    if let stage = staging.message, stage.phase == .commit {
                        // The sidecar switches to the view it prepared (at the COMMIT's instant), which may be older
                        // than what this stream sent meanwhile, or refuses to. Until it answers, the newest view is
                        // kept and nothing sent; its answer says what it runs.
                        machine.hold()
                        if push.generation > lastGeneration {
                            lastGeneration = push.generation
                            _ = machine.snapshotChanged(push.resources, versions: push.versions)
                        }
                        committing = (stage.generation, prepared?.generation == stage.generation ? prepared?.view : nil)
                        prepared = nil
                        continue
                    } else {
                        guard push.generation > lastGeneration else { continue }
                        lastGeneration = push.generation
                        responses = machine.snapshotChanged(push.resources, versions: push.versions)
                    }
                case .push(let push):
                    guard push.generation > lastGeneration else { continue }
                    lastGeneration = push.generation
                    responses = machine.snapshotChanged(push.resources, versions: push.versions)
                    if !responses.isEmpty && converging == nil { converging = push.changedAt }
                case .ended:
                    group.cancelAll()
                    return
                case .failed(let error):
                    group.cancelAll()
                    // Only this stream ends, with a status that says why.
                    throw error as? RPCError ?? RPCError(code: .invalidArgument, message: "cannot read the DiscoveryRequest stream: \(error)")
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

    /// The sidecar's identity from its node: id, service (metadata `outrigger.service`, else `cluster`),
    /// listeners and app.
    static func identity(of node: Envoy_Config_Core_V3_Node, peer: String = "") throws -> SidecarIdentity {
        guard !node.id.isEmpty else { throw RPCError(code: .invalidArgument, message: "the first DiscoveryRequest must carry node.id") }
        let fields = node.metadata.fields
        let service = fields[NodeMetadata.service]?.stringValue ?? node.cluster
        guard !service.isEmpty else { throw RPCError(code: .invalidArgument, message: "node '\(node.id)' names no service (node.cluster or metadata '\(NodeMetadata.service)')") }
        var listeners: [String: HostPort] = [:]
        for (name, value) in fields[NodeMetadata.listeners]?.structValue.fields ?? [:] {
            guard let address = HostPort(parsing: value.stringValue) else {
                throw RPCError(code: .invalidArgument, message: "node '\(node.id)': metadata \(NodeMetadata.listeners).\(name): expected HOST:PORT, found '\(value.stringValue)'")
            }
            listeners[name] = Self.reachable(address, peer: peer)
        }
        let app = fields[NodeMetadata.app].flatMap { HostPort(parsing: $0.stringValue) }
        let admin = fields[NodeMetadata.admin].flatMap { HostPort(parsing: $0.stringValue) }.map { Self.reachable($0, peer: peer) }
        let zone = node.locality.zone.isEmpty ? nil : node.locality.zone
        return SidecarIdentity(node: node.id, service: service, zone: zone, listeners: listeners, app: app, admin: admin)
    }
}

extension AggregatedDiscoveryService {
    /// Where a sidecar's listener bound to `address` is reached: a listener on every address (0.0.0.0) at the IP
    /// its gRPC connection came from.
    static func reachable(_ address: HostPort, peer: String) -> HostPort {
        guard address.isUnspecified, let host = peerAddress(peer) else { return address }
        return HostPort(host: host, port: address.port)
    }

    /// The IP of a gRPC peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`): where a sidecar that listens on every
    /// address is reached.
    static func peerAddress(_ peer: String) -> String? {
        guard let colon = peer.firstIndex(of: ":") else { return nil }
        return HostPort(parsing: String(peer[peer.index(after: colon)...]))?.host
    }
}

extension HostPort {
    /// 0.0.0.0 or ::, which a listener binds to mean every address and a caller cannot use.
    var isUnspecified: Bool { host == "0.0.0.0" || host == "::" }
}

/// The keys of an Outrigger sidecar's node metadata.
public enum NodeMetadata {
    public static let service = "outrigger.service"
    /// A struct: listener name → its bound HOST:PORT.
    public static let listeners = "outrigger.listeners"
    public static let app = "outrigger.app"
    /// The sidecar's admin listener, HOST:PORT.
    public static let admin = "outrigger.admin"
    /// True in a request sent when the sidecar starts draining (SIGTERM).
    public static let draining = "outrigger.draining"
}
