import Foundation
import Logging
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerEtcd

/// Every replica's part in the mesh-wide rollouts, through their log in etcd (`EtcdRollouts`).
///
/// - **As a participant** (every replica, the leader too) it follows the log: a rollout being prepared → it sends
///   the generation to the sidecars connected here and votes with their answers; a wave activated → the sidecars
///   of it connected here switch (COMMIT), and every replica serves them the generation from then on; completed →
///   the generation is every sidecar's; aborted → its sidecars drop it; rolled back → the sidecars it activated
///   are served the mesh before it again. What a sidecar is served is always what the log says: one that
///   reconnects, to any replica, gets its generation from it.
/// - **As the leader** it drives each rollout with a `RolloutStateMachine`: writes the rollout preparing, gathers
///   the votes, writes the decision (fenced by its leadership) before any sidecar hears of it, activates wave
///   after wave, reads the gate from the activated sidecars' `/stats/prometheus`, and ends the rollout — moving the mesh
///   pointer in the same transaction when it completes. A leader that takes over finishes from the log.
public final class RolloutCoordinator: Sendable {
    private let plane: ControlPlane
    private let store: EtcdMeshStore
    private let replicas: EtcdReplicas
    private let log: EtcdRollouts
    private let logger: Logger
    /// Reads a sidecar's `/stats/prometheus` (nil: it did not answer).
    private let readMetrics: @Sendable (HostPort) async -> String?
    private let state = NIOLockedValueBox(State())

    struct State {
        /// Generations this replica voted on, and the sidecars it has activated them on.
        var voted: Set<UInt64> = []
        var activated: [UInt64: Set<String>] = [:]
        /// Generations whose end this replica has carried out.
        var ended: Set<UInt64> = []
        /// The meshes of rollouts, read once.
        var meshes: [UInt64: MeshConfig] = [:]
        /// The rollout this replica drives as leader, and where its votes go.
        var driving: (generation: UInt64, votes: AsyncStream<Driver.Event>.Continuation)?
        /// Work started outside `run`'s task group (a prepare, a leader's drive), cancelled when it ends.
        var tasks: [UUID: Task<Void, Never>] = [:]
    }

    public init(plane: ControlPlane, store: EtcdMeshStore, replicas: EtcdReplicas, logger: Logger,
                readMetrics: @escaping @Sendable (HostPort) async -> String? = RolloutCoordinator.metrics(of:)) {
        self.plane = plane
        self.store = store
        self.replicas = replicas
        self.log = EtcdRollouts(client: store.client, prefix: store.prefix)
        self.logger = logger
        self.readMetrics = readMetrics
    }

    /// A sidecar's `/stats/prometheus`, within two seconds (nil: no 200 answer by then).
    public static func metrics(of admin: HostPort) async -> String? {
        guard let (status, body) = try? await ControlPlane.fetch(host: admin.host, port: admin.port, path: "/stats/prometheus", timeout: .seconds(2)),
              status == 200
        else { return nil }
        return body
    }

    /// Follows the log, and drives the rollout under way whenever `standings` says this replica leads, until
    /// cancelled.
    public func run(standings: AsyncStream<EtcdReplicas.Standing>) async {
        let (records, record) = AsyncStream<RolloutRecord>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.follow(record) }
            // One record at a time, in the log's order: a wave's activation before the rollout's end.
            group.addTask {
                for await next in records { await self.participate(next) }
            }
            group.addTask {
                for await standing in standings where standing.leading { self.startLeading() }
            }
            await group.next()
            group.cancelAll()
        }
        for task in state.withLockedValue({ $0.tasks.values }) { task.cancel() }
    }

    /// Runs `work` in a task of its own, cancelled when `run` ends.
    private func spawn(_ work: @escaping @Sendable () async -> Void) {
        let id = UUID()
        state.withLockedValue { state in
            state.tasks[id] = Task {
                await work()
                self.state.withLockedValue { _ = $0.tasks.removeValue(forKey: id) }
            }
        }
    }

    // MARK: Following the log

    /// Hands every record written to `record`, and each vote to the rollout being driven here. At the start, the last
    /// record; after a gap (etcd unreachable, a watch whose start was compacted away), every record from the newest
    /// one handed over to the last, in order, and the votes of the rollout being driven — all read at one revision,
    /// the one the watch goes on from.
    private func follow(_ record: AsyncStream<RolloutRecord>.Continuation) async {
        var failures = 0
        let seen = NIOLockedValueBox<UInt64?>(nil)
        while !Task.isCancelled {
            do {
                let (last, revision) = try await log.last()
                if let last {
                    let from = min(seen.withLockedValue { $0 } ?? last, last)
                    for generation in from...last {
                        guard let next = try await log.record(generation, at: revision) else { continue }
                        record.yield(next)
                        seen.withLockedValue { $0 = generation }
                    }
                    if let driving = state.withLockedValue({ $0.driving?.generation }) {
                        for (replica, vote) in try await log.votes(driving, at: revision) { voted(driving, replica, vote) }
                    }
                }
                failures = 0
                try await log.client.watch(log.watched, from: revision + 1) { update in
                    guard case .changes(let events, _) = update else { return true }
                    for event in events where event.type == .put {
                        let key = String(decoding: event.kv.key, as: UTF8.self)
                        if let (generation, replica) = self.voteKey(key) {
                            if let vote = try? JSONDecoder().decode(RolloutVote.self, from: event.kv.value) { self.voted(generation, replica, vote) }
                        } else if let next = try? JSONDecoder().decode(RolloutRecord.self, from: event.kv.value) {
                            record.yield(next)
                            seen.withLockedValue { $0 = max($0 ?? 0, next.generation) }
                        }
                    }
                    return true
                }
            } catch let error as EtcdError where error.isCompacted {
                logger.info("the rollouts' watch started at a compacted revision; reading the rollouts since the last one seen again")
            } catch {
                if Task.isCancelled { return }
                failures += 1
                logger.warning("cannot follow the rollouts in etcd", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
            }
        }
    }

    /// `G…/votes/REPLICA` → (G, REPLICA).
    private func voteKey(_ key: String) -> (UInt64, String)? {
        guard key.hasPrefix(log.prefix) else { return nil }
        let parts = key.dropFirst(log.prefix.count).split(separator: "/", maxSplits: 2)
        guard parts.count == 3, parts[1] == "votes", let generation = UInt64(parts[0]) else { return nil }
        return (generation, String(parts[2]))
    }

    private func voted(_ generation: UInt64, _ replica: String, _ vote: RolloutVote) {
        state.withLockedValue { state in
            if let driving = state.driving, driving.generation == generation { driving.votes.yield(.voted(replica, vote)) }
        }
    }

    // MARK: Participant

    private func participate(_ record: RolloutRecord) async {
        let generation = record.generation
        switch record.state {
        case .requested:
            if replicas.current.leading { startLeading() }
        case .preparing:
            let first = state.withLockedValue { $0.voted.insert(generation).inserted }
            // In a task of its own: the answers take up to the prepare timeout, and the log goes on meanwhile.
            if first { spawn { await self.prepare(record) } }
        case .aborted:
            guard end(generation) else { return }
            if state.withLockedValue({ $0.voted.contains(generation) }) { await plane.drop(generation: generation, timeout: nil) }
            logger.info("rollout aborted", metadata: ["generation": "\(generation)", "reason": "\(record.reason ?? "")"])
        case .committed, .completed, .rolledBack:
            guard !state.withLockedValue({ $0.ended.contains(generation) }) else { return }
            if let mesh = await mesh(of: record) {
                let (wave, notify) = state.withLockedValue { state -> ([String], Bool) in
                    let before = state.activated[generation]
                    state.activated[generation, default: []].formUnion(record.activated)
                    // A replica that did not vote is catching up on the log: the views alone tell its sidecars.
                    return (record.activated.filter { before?.contains($0) != true }, state.voted.contains(generation))
                }
                if !wave.isEmpty || record.state == .committed {
                    await plane.activate(generation: generation, mesh: mesh, version: record.version, nodes: wave, notify: notify,
                                         switchAt: record.switchAt ?? 0, timeout: nil)
                }
                guard record.isFinished, end(generation) else { return }
                if record.state == .completed {
                    plane.complete(generation: generation, mesh: mesh, version: record.version)
                    logger.info("rollout completed", metadata: ["generation": "\(generation)", "version": "\(record.version)"])
                    return
                }
            } else {
                // Its mesh is gone (a later rollout replaced it, or this one was rolled back): only its end is left to
                // carry out. What it served, if anything, is no longer served: the mesh pointer's follower brings
                // the current mesh.
                guard record.isFinished, end(generation) else { return }
            }
            plane.endRollout(generation: generation)
            // Sidecars it was prepared on but never activated drop it.
            if state.withLockedValue({ $0.voted.contains(generation) }) { await plane.drop(generation: generation, timeout: nil) }
            if record.state == .rolledBack {
                logger.warning("rollout rolled back", metadata: ["generation": "\(generation)", "reason": "\(record.reason ?? "")"])
            }
        }
    }

    /// Marks the rollout's end as carried out (false: it was already) and lets go of what was kept for it.
    private func end(_ generation: UInt64) -> Bool {
        state.withLockedValue { state in
            guard state.ended.insert(generation).inserted else { return false }
            state.meshes[generation] = nil
            state.activated[generation] = nil
            return true
        }
    }

    /// The rollout's mesh, read from the store once (nil: it cannot be read; logged).
    private func mesh(of record: RolloutRecord) async -> MeshConfig? {
        if let mesh = state.withLockedValue({ $0.meshes[record.generation] }) { return mesh }
        do {
            let mesh = try await store.load(version: record.version, chunks: record.chunks)
            state.withLockedValue { if !$0.ended.contains(record.generation) { $0.meshes[record.generation] = mesh } }
            return mesh
        } catch {
            logger.error("cannot read a rollout's mesh", metadata: ["generation": "\(record.generation)", "error": "\(error)"])
            return nil
        }
    }

    /// Prepares the generation on the sidecars connected here and votes with their answers. A replica's answers
    /// are due before the leader's deadline: it waits for its sidecars four fifths of the prepare timeout.
    private func prepare(_ record: RolloutRecord) async {
        var answers: [String: RolloutVote.Answer] = [:]
        let ended = { self.state.withLockedValue { $0.ended.contains(record.generation) } }
        if let mesh = await mesh(of: record) {
            // Aborted meanwhile (another replica's sidecar refused it first): nothing to prepare.
            guard !ended() else { return }
            let timeout = Duration.milliseconds(record.options.prepareTimeoutMilliseconds) * 4 / 5
            for (node, answer) in await plane.prepare(generation: record.generation, mesh: mesh, timeout: timeout) {
                answers[node] = RolloutVote.Answer(refusal: answer.refusal, admin: answer.admin?.description)
            }
            // Ended while its sidecars prepared it: the drop sent then may have gone before the prepare.
            if ended() {
                await plane.drop(generation: record.generation, timeout: nil)
                return
            }
        } else {
            answers["(replica \(replicas.me.id))"] = RolloutVote.Answer(refusal: "cannot read mesh \(record.version) from \(store.description)")
        }
        do {
            try await log.vote(record.generation, replica: replicas.me.id, RolloutVote(answers: answers))
        } catch {
            logger.error("cannot vote on a rollout", metadata: ["generation": "\(record.generation)", "error": "\(error)"])
        }
    }

    // MARK: Leader

    private func startLeading() {
        spawn { await self.lead() }
    }

    /// Drives the rollout under way, if any, while this replica leads; one the driver lost track of (etcd not
    /// answering a write) is taken up again from the log.
    private func lead() async {
        var failures = 0
        while !Task.isCancelled, replicas.current.leading {
            let generation: UInt64?
            do {
                generation = try await log.activeGeneration()
            } catch {
                failures += 1
                logger.warning("cannot read the rollout under way", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
                continue
            }
            guard let generation else { return }
            let (votes, sink) = AsyncStream<Driver.Event>.makeStream()
            let fresh = state.withLockedValue { state -> Bool in
                guard state.driving?.generation != generation else { return false }
                state.driving = (generation, sink)
                return true
            }
            guard fresh else { return }
            let ended = await Driver(coordinator: self, generation: generation, events: sink).run(votes)
            state.withLockedValue { if $0.driving?.generation == generation { $0.driving = nil } }
            if !ended {
                failures += 1
                try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
            }
        }
    }

    /// One rollout driven by the leader: its state machine, and the log written as it says.
    struct Driver {
        enum Event: Sendable {
            case voted(String, RolloutVote)
            case wake
        }

        let coordinator: RolloutCoordinator
        let generation: UInt64
        let events: AsyncStream<Event>.Continuation

        /// False when it stopped before the rollout ended (a write refused or failed).
        func run(_ inbox: AsyncStream<Event>) async -> Bool {
            do {
                try await drive(inbox)
                return true
            } catch {
                coordinator.logger.warning("stopped driving a rollout", metadata: ["generation": "\(generation)", "error": "\(error)"])
                return false
            }
        }

        private func drive(_ inbox: AsyncStream<Event>) async throws {
            let log = coordinator.log
            // Every write compares the leadership this drive began under: one that outlives a lost and regained
            // leadership writes nothing more (the drive that takes over starts from the log).
            let standing = coordinator.replicas.current
            guard standing.leading, let fence = standing.fence else { throw EtcdReplicasError.notLeading(coordinator.replicas.me.id) }
            guard var record = try await log.record(generation) else {
                guard try await !log.client.read(.key(log.recordKey(generation))).pairs.isEmpty else { throw RolloutWriteError.unreadable(generation) }
                // A record this version cannot read (another version's): it cannot be carried out here, and while it
                // is the active one every apply and rollout is refused. It stops being the active one.
                try await log.release(generation, by: coordinator.replicas, fence: fence)
                coordinator.logger.error("the rollout under way cannot be read by this version; it is no longer the active one",
                                         metadata: ["generation": "\(generation)"])
                return
            }
            guard !record.isFinished else { return }
            let me = coordinator.replicas.me.id
            record.leader = me
            let plan: RolloutStateMachine.Plan
            do {
                plan = try record.plan
            } catch {
                // Written by a newer or broken command: it cannot be carried out, and nothing else can while it is active.
                record.state = .aborted
                record.reason = "its plan cannot be read: \(error)"
                try await log.write(record, by: coordinator.replicas, fence: fence, with: staleChunks(record))
                return
            }
            var machine: RolloutStateMachine
            var actions: [RolloutStateMachine.Action]
            switch record.state {
            case .requested:
                let voters = try await EtcdReplicas.list(client: log.client, prefix: coordinator.store.prefix).members.map(\.id)
                record.voters = voters
                machine = RolloutStateMachine(plan: plan, voters: Set(voters))
                actions = machine.start(now: .now)
            case .preparing:
                (machine, actions) = RolloutStateMachine.recovered(plan: plan, targets: [], decision: nil)
            default:
                (machine, actions) = RolloutStateMachine.recovered(plan: plan, targets: Set(record.targets.map(\.node)), decision: .commit,
                                                                   activated: record.activated)
                actions = machine.decisionWritten(now: .now)
            }
            var admins: [String: HostPort] = [:]
            for target in record.targets { admins[target.node] = target.admin.flatMap(HostPort.init(parsing:)) }
            /// The activated sidecars' `/stats/prometheus` when their wave began, for the gate.
            var baseline: [String: RolloutGate.Sample] = [:]
            var wakeTask: Task<Void, Never>?
            defer { wakeTask?.cancel() }
            var iterator = inbox.makeAsyncIterator()
            while true {
                while !actions.isEmpty {
                    let action = actions.removeFirst()
                    switch action {
                    case .sendPrepare:
                        record.state = .preparing
                        try await log.write(record, by: coordinator.replicas, fence: fence)
                    case .wake(var at):
                        if case .soaking = machine.phase {
                            // A wave's soak begins when its sidecars switch, at the instant written with it: the soak
                            // ends that much later, and the gate's starting point is read then.
                            if let switchAt = record.switchAt {
                                let wait = StagedGenerations.wait(until: switchAt, cap: .seconds(10))
                                try await Task.sleep(for: wait)
                                at = at + wait
                            }
                            if !plan.gate.isEmpty {
                                // For the sidecars that have none yet: the wave's; all of them when this leader took
                                // the rollout over.
                                let fresh = machine.activated.filter { baseline[$0] == nil }
                                for (node, sample) in await read(fresh, admins) { baseline[node] = sample }
                            }
                        }
                        wakeTask?.cancel()
                        wakeTask = Task { [events] in
                            try? await Task.sleep(until: at, clock: .continuous)
                            if !Task.isCancelled { events.yield(.wake) }
                        }
                    case .writeDecision(.commit):
                        record.state = .committed
                        record.targets = machine.targets.map { RolloutRecord.Target(node: $0, admin: admins[$0]?.description) }
                        // The decision and the first wave go in one write (no sidecar hears of either before it).
                        actions = machine.decisionWritten(now: .now) + actions
                        if case .activate = actions.first { continue }
                        try await log.write(record, by: coordinator.replicas, fence: fence)
                    case .writeDecision(.abort(let reason)):
                        record.state = .aborted
                        record.reason = reason
                        try await log.write(record, by: coordinator.replicas, fence: fence, with: staleChunks(record))
                        actions += machine.decisionWritten(now: .now)
                    case .activate(let nodes):
                        record.activated += nodes
                        // The wave's sidecars switch together, a moment after this write, whenever their COMMITs come.
                        let switchAfter = record.options.switchAfterMilliseconds
                        record.switchAt = switchAfter > 0 ? Int64(Date().timeIntervalSince1970 * 1000) + switchAfter : nil
                        if actions.first == .finished(.completed) {
                            // The last wave: the rollout's end and the mesh pointer's move, in the same write.
                            record.state = .completed
                            try await log.write(record, by: coordinator.replicas, fence: fence,
                                                with: coordinator.store.pointerMoves(to: record.version, chunks: record.chunks, replacing: record.previous))
                        } else {
                            try await log.write(record, by: coordinator.replicas, fence: fence)
                        }
                    case .rollBack:
                        record.state = .rolledBack
                        if case .finished(.rolledBack(let reason)) = machine.phase { record.reason = reason }
                        try await log.write(record, by: coordinator.replicas, fence: fence, with: staleChunks(record))
                    case .sendDrop:
                        break  // every replica reads the abort from the log
                    case .finished(let outcome):
                        coordinator.logger.info("rollout finished", metadata: ["generation": "\(generation)", "outcome": "\(outcome)"])
                        return
                    }
                }
                guard let event = await iterator.next() else { return }
                switch event {
                case .voted(let replica, let vote):
                    for (node, answer) in vote.answers { admins[node] = answer.admin.flatMap(HostPort.init(parsing:)) }
                    actions = machine.voted(replica, answers: vote.answers.mapValues(\.refusal))
                case .wake:
                    var readings = RolloutGate.Readings()
                    if case .soaking = machine.phase, !plan.gate.isEmpty {
                        let samples = await read(machine.activated, admins)
                        // A sidecar unread now, or at the soak's start, cannot be judged.
                        let judged = machine.activated.filter { samples[$0] != nil && baseline[$0] != nil }
                        readings = RolloutGate.Sample.readings(judged.map { samples[$0]!.since(baseline[$0]!) })
                        readings.unread = machine.activated.filter { samples[$0] == nil || baseline[$0] == nil }
                        coordinator.logger.info("a wave's soak is over; the gate reads", metadata: [
                            "generation": "\(generation)", "sidecars": "\(machine.activated.count)", "unread": "\(readings.unread.count)",
                            "requests": "\(readings.requests)", "errors": "\(readings.errors)", "p99": "\(readings.p99.map { "\($0)" } ?? "-")",
                        ])
                    }
                    actions = machine.wake(now: .now, readings: readings)
                }
            }
        }

        /// The gate's samples of `nodes`, read at once (a sidecar without an admin address, or that did not answer
        /// with its stats, is missing).
        private func read(_ nodes: [String], _ admins: [String: HostPort]) async -> [String: RolloutGate.Sample] {
            await withTaskGroup(of: (String, RolloutGate.Sample?).self) { group in
                for node in nodes {
                    guard let admin = admins[node] else { continue }
                    group.addTask { (node, await coordinator.readMetrics(admin).map(RolloutGate.Sample.init(metrics:))) }
                }
                var samples: [String: RolloutGate.Sample] = [:]
                for await (node, sample) in group { samples[node] = sample }
                return samples
            }
        }

        /// A rollout that ends without its mesh becoming the current one leaves no chunks behind.
        private func staleChunks(_ record: RolloutRecord) -> [Etcdserverpb_RequestOp] {
            record.version == record.previous ? [] : [.delete(.prefix(coordinator.store.blobPrefix(record.version)))]
        }
    }
}
