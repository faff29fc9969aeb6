/// One mesh-wide rollout of a generation, as the leading replica drives it: a two-phase commit across the target
/// sidecars, then activation in waves with a gate between them. Pure: events go in with the clock's reading, the
/// actions to run come out (what to send to which sidecars, what to write to the durable log, when to wake up).
///
/// - **Prepare**: every target gets generation G as a staged snapshot; it validates and warms it without serving
///   it, and answers prepared or refused.
/// - **Decide**: all prepared before the deadline → the decision *commit* is written to the log first, and only
///   then are sidecars told; a refusal or the deadline → *abort*, and the sidecars drop G. A leader that takes
///   over a rollout whose decision is not in the log decides abort (presumed abort).
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
        case sendPrepare([String])
        /// Durable before any sidecar hears of it.
        case writeDecision(Decision)
        case sendDrop([String])
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
    /// The targets in the order waves take them (sorted, so every replica that recovers the rollout agrees).
    let targets: [String]
    private(set) var phase: Phase = .idle
    private(set) var prepared: Set<String> = []
    /// The sidecars running the generation so far.
    private(set) var activated: [String] = []

    init(plan: Plan, targets: Set<String>) {
        self.plan = plan
        self.targets = targets.sorted()
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
        guard !targets.isEmpty else {
            phase = .deciding(.commit)
            return [.writeDecision(.commit)]
        }
        let deadline = now + plan.prepareTimeout
        phase = .preparing(deadline: deadline)
        return [.sendPrepare(targets), .wake(at: deadline)]
    }

    mutating func prepared(_ node: String) -> [Action] {
        guard case .preparing = phase, targets.contains(node) else { return [] }
        prepared.insert(node)
        guard prepared.count == targets.count else { return [] }
        phase = .deciding(.commit)
        return [.writeDecision(.commit)]
    }

    mutating func refused(_ node: String, because reason: String) -> [Action] {
        guard case .preparing = phase, targets.contains(node) else { return [] }
        return decideAbort("\(node) refused generation \(plan.generation): \(reason)")
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
            return [.sendDrop(targets), .finished(.aborted(reason))]
        case .commit:
            // Recovered: on from the first wave not wholly activated yet.
            let first = plan.waves.indices.first { wave($0).contains { !activated.contains($0) } } ?? plan.waves.count - 1
            return activate(wave: first, now: now)
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
            let missing = targets.filter { !prepared.contains($0) }
            return decideAbort("prepare timed out after \(plan.prepareTimeout): not prepared: \(missing.joined(separator: ", "))")
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
    /// waves go on after the sidecars the log says were activated (a breach then rolls back those too).
    static func recovered(plan: Plan, targets: Set<String>, decision: Decision?, activated: [String] = []) -> (RolloutStateMachine, [Action]) {
        var machine = RolloutStateMachine(plan: plan, targets: targets)
        guard let decision else {
            return (machine, machine.decideAbort("the leader changed before generation \(plan.generation) was decided (presumed abort)"))
        }
        machine.phase = .deciding(decision)
        machine.activated = activated
        return (machine, [])
    }
}

/// What a wave must hold to let the next one go: `error-ratio<1%,p99<300ms`.
struct RolloutGate: Sendable, Equatable {
    /// Failed requests per request, over the activated sidecars.
    var maxErrorRatio: Double?
    var maxP99: Duration?

    struct Readings: Sendable, Equatable {
        var requests = 0
        var errors = 0
        var p99: Duration?
    }

    init(maxErrorRatio: Double? = nil, maxP99: Duration? = nil) {
        self.maxErrorRatio = maxErrorRatio
        self.maxP99 = maxP99
    }

    /// Parses `error-ratio<1%,p99<300ms` (either, both, in any order); the error says what was expected.
    init(parsing text: String) throws(RolloutGateError) {
        for term in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !term.isEmpty {
            let parts = term.split(separator: "<", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { throw .malformed(term, "expected NAME<LIMIT, e.g. error-ratio<1% or p99<300ms") }
            switch parts[0] {
            case "error-ratio":
                guard parts[1].hasSuffix("%"), let percent = Double(parts[1].dropLast()), (0...100).contains(percent) else {
                    throw .malformed(term, "expected a percentage, e.g. error-ratio<1%")
                }
                maxErrorRatio = percent / 100
            case "p99":
                guard let limit = Self.duration(parts[1]) else { throw .malformed(term, "expected a duration, e.g. p99<300ms or p99<1s") }
                maxP99 = limit
            default:
                throw .malformed(term, "expected error-ratio or p99")
            }
        }
    }

    private static func duration(_ text: String) -> Duration? {
        let (number, scale): (Substring, Double) = text.hasSuffix("ms") ? (text.dropLast(2), 1000) : text.hasSuffix("s") ? (text.dropLast(), 1_000_000) : ("", 0)
        // Up to a day: a limit no p99 reaches is no gate.
        guard let value = Double(number), value > 0, value * scale <= 86_400_000_000 else { return nil }
        return .microseconds(Int64(value * scale))
    }

    /// What the readings breach, or nil. A wave that served nothing breaches nothing.
    func breach(_ readings: Readings) -> String? {
        if let maxErrorRatio, readings.requests > 0 {
            let ratio = Double(readings.errors) / Double(readings.requests)
            if ratio >= maxErrorRatio {
                return "error ratio \(Self.percent(ratio)) (\(readings.errors) of \(readings.requests)) is not below \(Self.percent(maxErrorRatio))"
            }
        }
        if let maxP99, let p99 = readings.p99, p99 >= maxP99 {
            return "p99 \(p99) is not below \(maxP99)"
        }
        return nil
    }

    private static func percent(_ ratio: Double) -> String {
        let value = (ratio * 1000).rounded() / 10
        return value == value.rounded() ? "\(Int(value))%" : "\(value)%"
    }
}

enum RolloutGateError: Error, Equatable, CustomStringConvertible {
    case malformed(String, String)

    var description: String {
        switch self {
        case .malformed(let term, let expected): "--gate: '\(term)': \(expected)"
        }
    }
}
