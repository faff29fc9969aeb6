/// One mesh-wide rollout of a generation, as the leading replica drives it: a two-phase commit across the target
/// sidecars, then activation in waves with a gate between them. Pure: events go in with the clock's reading, the
/// actions to run come out (what to send to which sidecars, what to write to the durable log, when to wake up).
///
/// - **Prepare**: every replica sends generation G to the sidecars connected to it as a staged snapshot; each
///   sidecar validates and warms it without serving it, and answers prepared or refused. A replica votes once, with
///   the answers of all its sidecars (one that did not answer in time is a refusal): the targets are the sidecars
///   of every vote.
/// - **Decide**: every replica voted and every target prepared before the deadline → the decision *commit* is
///   written to the log first, and only then are sidecars told; a refusal or the deadline → *abort*, and the
///   sidecars drop G. A leader that takes over a rollout whose decision is not in the log decides abort (presumed
///   abort).
/// - **Waves**: the committed generation is activated on a growing share of the targets (e.g. 1 %, 10 %, 50 %,
///   100 %, each at least one sidecar); after each wave the gate is read over the activated sidecars for the soak
///   period; a breach rolls every activated sidecar back to G − 1 and ends the rollout, saying why.
struct RolloutStateMachine: Sendable {
    typealias Instant = ContinuousClock.Instant

    struct Plan: Sendable, Equatable {
        var generation: UInt64
        /// Cumulative shares of the targets, in percent, the last 100.
        var waves: [Int] = [100]
        var prepareTimeout: Duration = .seconds(5)
        /// How long the gate watches each wave before the next.
        var soak: Duration = .seconds(10)
        var gate = RolloutGate()
    }

    enum Decision: Sendable, Equatable {
        case commit
        case abort(String)
    }

    enum Outcome: Sendable, Equatable {
        /// Every target runs the generation.
        case completed
        case aborted(String)
        /// Committed, then rolled back to the generation before by a gate breach.
        case rolledBack(String)
    }

    enum Action: Sendable, Equatable {
        /// Ask every replica to prepare its sidecars and vote.
        case sendPrepare
        /// Durable before any sidecar hears of it.
        case writeDecision(Decision)
        /// Every replica tells the sidecars that prepared the generation to drop it.
        case sendDrop
        case activate([String])
        case rollBack([String])
        /// Call `wake` then (with the gate's readings over the activated sidecars, after a wave's soak).
        case wake(at: Instant)
        case finished(Outcome)
    }

    enum Phase: Sendable, Equatable {
        case idle
        case preparing(deadline: Instant)
        /// The decision handed out to be written; nothing more happens until it is.
        case deciding(Decision)
        /// Wave `wave` (an index into the plan's waves) activated, watched until `until`.
        case soaking(wave: Int, until: Instant)
        case finished(Outcome)
    }

    let plan: Plan
    /// The replicas whose votes decide.
    let voters: Set<String>
    /// The targets in the order waves take them (sorted, so every replica that recovers the rollout agrees): the
    /// sidecars of every vote, known once all are in.
    private(set) var targets: [String] = []
    private(set) var phase: Phase = .idle
    /// The votes in so far: each replica's sidecars, by node.
    private(set) var votes: [String: Set<String>] = [:]
    /// The sidecars running the generation so far.
    private(set) var activated: [String] = []

    init(plan: Plan, voters: Set<String>) {
        self.plan = plan
        self.voters = voters
    }

    /// The sidecars of wave `index`: its cumulative share of the targets, rounded up, at least one more than the
    /// wave before while any are left; the last wave takes every target left, whatever its share says.
    func wave(_ index: Int) -> ArraySlice<String> {
        func count(_ wave: Int) -> Int {
            guard wave >= 0 else { return 0 }
            let percent = wave == plan.waves.count - 1 ? 100 : min(100, max(0, plan.waves[wave]))
            let share = (targets.count * percent + 99) / 100
            return min(targets.count, max(share, count(wave - 1) + 1))
        }
        return targets[count(index - 1)..<count(index)]
    }

    mutating func start(now: Instant) -> [Action] {
        guard phase == .idle else { return [] }
        guard !voters.isEmpty else {
            phase = .deciding(.commit)
            return [.writeDecision(.commit)]
        }
        let deadline = now + plan.prepareTimeout
        phase = .preparing(deadline: deadline)
        return [.sendPrepare, .wake(at: deadline)]
    }

    /// A replica's vote: each of its sidecars' answer, nil when prepared, else why not. The first refusal aborts;
    /// the last vote, all prepared, commits.
    mutating func voted(_ replica: String, answers: [String: String?]) -> [Action] {
        guard case .preparing = phase, voters.contains(replica), votes[replica] == nil else { return [] }
        if let (node, reason) = answers.compactMap({ node, refusal in refusal.map { (node, $0) } }).min(by: { $0.0 < $1.0 }) {
            return decideAbort("\(node) refused generation \(plan.generation): \(reason)")
        }
        votes[replica] = Set(answers.keys)
        guard votes.count == voters.count else { return [] }
        targets = votes.values.reduce(into: Set<String>()) { $0.formUnion($1) }.sorted()
        phase = .deciding(.commit)
        return [.writeDecision(.commit)]
    }

    private mutating func decideAbort(_ reason: String) -> [Action] {
        phase = .deciding(.abort(reason))
        return [.writeDecision(.abort(reason))]
    }

    /// The decision is in the log: only now are the sidecars told.
    mutating func decisionWritten(now: Instant) -> [Action] {
        guard case .deciding(let decision) = phase else { return [] }
        switch decision {
        case .abort(let reason):
            phase = .finished(.aborted(reason))
            return [.sendDrop, .finished(.aborted(reason))]
        case .commit:
            guard !activated.isEmpty else { return activate(wave: 0, now: now) }
            guard activated.count < targets.count else { return activate(wave: plan.waves.count - 1, now: now) }
            // Recovered between waves: the last wave activated is watched again, a whole soak, before the next (its
            // soak may have been cut short, or have ended in a breach the leader before could not write).
            let soaked = plan.waves.indices.last { wave($0).allSatisfy(activated.contains) } ?? 0
            let until = now + plan.soak
            phase = .soaking(wave: soaked, until: until)
            return [.wake(at: until)]
        }
    }

    private mutating func activate(wave index: Int, now: Instant) -> [Action] {
        let nodes = wave(index).filter { !activated.contains($0) }
        activated += nodes
        let until = now + plan.soak
        if index == plan.waves.count - 1 || activated.count == targets.count {
            phase = .finished(.completed)
            return [.activate(nodes), .finished(.completed)]
        }
        phase = .soaking(wave: index, until: until)
        return [.activate(nodes), .wake(at: until)]
    }

    /// The clock reached a wake-up: the prepare deadline, or the end of a wave's soak with the gate's readings
    /// over the activated sidecars.
    mutating func wake(now: Instant, readings: RolloutGate.Readings = RolloutGate.Readings()) -> [Action] {
        switch phase {
        case .preparing(let deadline) where now >= deadline:
            let missing = voters.subtracting(votes.keys).sorted()
            return decideAbort("prepare timed out after \(plan.prepareTimeout): no vote from replica \(missing.joined(separator: ", "))")
        case .soaking(let wave, let until) where now >= until:
            if let breach = plan.gate.breach(readings) {
                let reason = "wave \(wave + 1) (\(activated.count) of \(targets.count) sidecars): \(breach)"
                phase = .finished(.rolledBack(reason))
                return [.rollBack(activated), .finished(.rolledBack(reason))]
            }
            return activate(wave: wave + 1, now: now)
        default:
            return []
        }
    }

    /// A leader taking over a rollout from the log: with no decision written, presumed abort; with a commit, the
    /// sidecars the log says were activated are soaked again, and the waves go on after them (a breach rolls back
    /// those too).
    static func recovered(plan: Plan, targets: Set<String>, decision: Decision?, activated: [String] = []) -> (RolloutStateMachine, [Action]) {
        var machine = RolloutStateMachine(plan: plan, voters: [])
        machine.targets = targets.sorted()
        guard let decision else {
            return (machine, machine.decideAbort("the leader changed before generation \(plan.generation) was decided (presumed abort)"))
        }
        machine.phase = .deciding(decision)
        machine.activated = activated
        return (machine, [])
    }
}
