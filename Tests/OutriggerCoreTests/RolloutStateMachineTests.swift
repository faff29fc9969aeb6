@testable import OutriggerControl
import Testing

/// The two-phase rollout of a generation, on a manual clock: prepare, the decision written before anyone hears it,
/// waves behind a gate, rollback, presumed abort.
@Suite("Rollout state machine")
struct RolloutStateMachineTests {
    let start = ContinuousClock.now

    func plan(waves: [Int] = [1, 10, 50, 100], gate: RolloutGate = RolloutGate(maxErrorRatio: 0.01)) -> RolloutStateMachine.Plan {
        RolloutStateMachine.Plan(generation: 7, waves: waves, prepareTimeout: .seconds(5), soak: .seconds(10), gate: gate)
    }

    @Test func everyTargetPreparedCommitsThenActivatesWaveByWaveBehindTheGate() {
        var rollout = RolloutStateMachine(plan: plan(), targets: ["c", "a", "b"])
        #expect(rollout.start(now: start) == [.sendPrepare(["a", "b", "c"]), .wake(at: start + .seconds(5))])
        #expect(rollout.prepared("a").isEmpty && rollout.prepared("a").isEmpty && rollout.prepared("x").isEmpty)
        #expect(rollout.prepared("c").isEmpty)
        // The last one: the decision goes to the log first; nobody is activated before it is written.
        #expect(rollout.prepared("b") == [.writeDecision(.commit)])
        #expect(rollout.refused("a", because: "late").isEmpty, "decided already")
        let written = start + .seconds(1)
        #expect(rollout.decisionWritten(now: written) == [.activate(["a"]), .wake(at: written + .seconds(10))])
        #expect(rollout.wake(now: written + .seconds(9), readings: .init(requests: 100, errors: 50)).isEmpty, "the soak is not over")
        let healthy = RolloutGate.Readings(requests: 1000, errors: 3)
        let second = written + .seconds(10)
        #expect(rollout.wake(now: second, readings: healthy) == [.activate(["b"]), .wake(at: second + .seconds(10))])
        #expect(rollout.wake(now: second + .seconds(10), readings: healthy) == [.activate(["c"]), .finished(.completed)])
        #expect(rollout.activated == ["a", "b", "c"] && rollout.phase == .finished(.completed))
    }

    @Test func aRefusalAbortsAndEveryTargetDropsTheGeneration() {
        var rollout = RolloutStateMachine(plan: plan(), targets: ["a", "b"])
        _ = rollout.start(now: start)
        _ = rollout.prepared("a")
        let reason = "b refused generation 7: Cluster 'users': connectTimeout: expected a duration"
        #expect(rollout.refused("b", because: "Cluster 'users': connectTimeout: expected a duration") == [.writeDecision(.abort(reason))])
        #expect(rollout.decisionWritten(now: start) == [.sendDrop(["a", "b"]), .finished(.aborted(reason))])
        #expect(rollout.activated.isEmpty)
    }

    @Test func aPrepareThatTimesOutAbortsNamingWhoDidNotPrepare() {
        var rollout = RolloutStateMachine(plan: plan(), targets: ["a", "b", "c"])
        _ = rollout.start(now: start)
        _ = rollout.prepared("b")
        #expect(rollout.wake(now: start + .seconds(4)).isEmpty)
        let actions = rollout.wake(now: start + .seconds(5))
        #expect(actions == [.writeDecision(.abort("prepare timed out after 5.0 seconds: not prepared: a, c"))])
    }

    @Test func aGateBreachRollsBackEveryActivatedSidecar() {
        var rollout = RolloutStateMachine(plan: plan(gate: RolloutGate(maxErrorRatio: 0.01, maxP99: .milliseconds(300))), targets: Set((0..<200).map { "s\($0)" }))
        _ = rollout.start(now: start)
        for target in rollout.targets { _ = rollout.prepared(target) }
        _ = rollout.decisionWritten(now: start)
        #expect(rollout.activated.count == 2, "1 % of 200")
        _ = rollout.wake(now: start + .seconds(10), readings: .init(requests: 500, errors: 0, p99: .milliseconds(20)))
        #expect(rollout.activated.count == 20, "10 %")
        let actions = rollout.wake(now: start + .seconds(20), readings: .init(requests: 2000, errors: 0, p99: .milliseconds(450)))
        let reason = "wave 2 (20 of 200 sidecars): p99 0.45 seconds is not below 0.3 seconds"
        #expect(actions == [.rollBack(rollout.activated), .finished(.rolledBack(reason))])
        #expect(rollout.wake(now: start + .seconds(60)).isEmpty, "finished")
    }

    @Test func wavesGrowByTheirShareAndByAtLeastOneSidecar() {
        let many = RolloutStateMachine(plan: plan(), targets: Set((0..<200).map { "s\($0)" }))
        #expect((0..<4).map { many.wave($0).count } == [2, 18, 80, 100])
        let few = RolloutStateMachine(plan: plan(), targets: ["a", "b", "c"])
        #expect((0..<3).map { Array(few.wave($0)) } == [["a"], ["b"], ["c"]])
        let once = RolloutStateMachine(plan: plan(waves: [100]), targets: ["a", "b"])
        #expect(Array(once.wave(0)) == ["a", "b"])
    }

    @Test func aLeaderTakingOverWithoutADecisionPresumesAbort() {
        let (undecided, actions) = RolloutStateMachine.recovered(plan: plan(), targets: ["a"], decision: nil)
        #expect(actions == [.writeDecision(.abort("the leader changed before generation 7 was decided (presumed abort)"))])
        #expect(undecided.activated.isEmpty)
        var (committed, none) = RolloutStateMachine.recovered(plan: plan(waves: [100]), targets: ["a", "b"], decision: .commit)
        #expect(none.isEmpty)
        #expect(committed.decisionWritten(now: start) == [.activate(["a", "b"]), .finished(.completed)])
        // Committed, two waves activated by the leader before: on from the third, and a breach rolls back all three.
        var (resumed, _) = RolloutStateMachine.recovered(plan: plan(), targets: ["a", "b", "c", "d"], decision: .commit, activated: ["a", "b"])
        #expect(resumed.decisionWritten(now: start) == [.activate(["c"]), .wake(at: start + .seconds(10))])
        #expect(resumed.wake(now: start + .seconds(10), readings: .init(requests: 10, errors: 5)).first == .rollBack(["a", "b", "c"]))
    }

    @Test func theLastWaveTakesEveryTargetLeft() {
        var rollout = RolloutStateMachine(plan: plan(waves: [1, 10]), targets: Set((0..<50).map { "s\($0)" }))
        _ = rollout.start(now: start)
        for target in rollout.targets { _ = rollout.prepared(target) }
        _ = rollout.decisionWritten(now: start)
        _ = rollout.wake(now: start + .seconds(10), readings: .init(requests: 10, errors: 0))
        #expect(rollout.activated.count == 50 && rollout.phase == .finished(.completed))
    }

    @Test func theGateIsReadFromItsFlagAndSaysWhatItExpected() throws {
        #expect(try RolloutGate(parsing: "error-ratio<1%,p99<300ms") == RolloutGate(maxErrorRatio: 0.01, maxP99: .milliseconds(300)))
        #expect(try RolloutGate(parsing: " p99 < 1.5s ") == RolloutGate(maxP99: .milliseconds(1500)))
        #expect(throws: RolloutGateError.malformed("latency<3", "expected error-ratio or p99")) { try RolloutGate(parsing: "latency<3") }
        #expect(throws: RolloutGateError.malformed("error-ratio<1", "expected a percentage, e.g. error-ratio<1%")) { try RolloutGate(parsing: "error-ratio<1") }
        #expect(throws: RolloutGateError.malformed("p99=3ms", "expected NAME<LIMIT, e.g. error-ratio<1% or p99<300ms")) { try RolloutGate(parsing: "p99=3ms") }
        #expect(throws: RolloutGateError.malformed("p99<1e20s", "expected a duration, e.g. p99<300ms or p99<1s")) { try RolloutGate(parsing: "p99<1e20s") }
        let gate = RolloutGate(maxErrorRatio: 0.01)
        #expect(gate.breach(.init(requests: 1000, errors: 9)) == nil)
        #expect(gate.breach(.init(requests: 1000, errors: 25)) == "error ratio 2.5% (25 of 1000) is not below 1%")
        #expect(gate.breach(.init()) == nil, "a wave that served nothing breaches nothing")
    }
}
