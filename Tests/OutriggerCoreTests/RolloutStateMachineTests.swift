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

    @Test func everyReplicaVotingPreparedCommitsThenActivatesWaveByWaveBehindTheGate() {
        var rollout = RolloutStateMachine(plan: plan(), voters: ["r1", "r2"])
        #expect(rollout.start(now: start) == [.sendPrepare, .wake(at: start + .seconds(5))])
        #expect(rollout.voted("r1", answers: ["c": nil, "a": nil]).isEmpty)
        #expect(rollout.voted("r1", answers: ["x": "late"]).isEmpty, "one vote per replica")
        #expect(rollout.voted("r9", answers: ["x": nil]).isEmpty, "not a voter")
        // The last vote: the decision goes to the log first; nobody is activated before it is written.
        #expect(rollout.voted("r2", answers: ["b": nil]) == [.writeDecision(.commit)])
        #expect(rollout.targets == ["a", "b", "c"], "the sidecars of every vote")
        #expect(rollout.voted("r2", answers: ["b": "late"]).isEmpty, "decided already")
        let written = start + .seconds(1)
        #expect(rollout.decisionWritten(now: written) == [.activate(["a"]), .wake(at: written + .seconds(10))])
        #expect(rollout.wake(now: written + .seconds(9), readings: .init(requests: 100, errors: 50)).isEmpty, "the soak is not over")
        let healthy = RolloutGate.Readings(requests: 1000, errors: 3)
        let second = written + .seconds(10)
        #expect(rollout.wake(now: second, readings: healthy) == [.activate(["b"]), .wake(at: second + .seconds(10))])
        #expect(rollout.wake(now: second + .seconds(10), readings: healthy) == [.activate(["c"]), .finished(.completed)])
        #expect(rollout.activated == ["a", "b", "c"] && rollout.phase == .finished(.completed))
    }

    @Test func aRefusalAbortsAndEveryReplicaDropsTheGeneration() {
        var rollout = RolloutStateMachine(plan: plan(), voters: ["r1", "r2"])
        _ = rollout.start(now: start)
        _ = rollout.voted("r1", answers: ["a": nil])
        let reason = "b refused generation 7: Cluster 'users': connectTimeout: expected a duration"
        #expect(rollout.voted("r2", answers: ["c": nil, "b": "Cluster 'users': connectTimeout: expected a duration", "d": "later"]) == [.writeDecision(.abort(reason))])
        #expect(rollout.decisionWritten(now: start) == [.sendDrop, .finished(.aborted(reason))])
        #expect(rollout.activated.isEmpty)
    }

    @Test func aPrepareThatTimesOutAbortsNamingWhoDidNotVote() {
        var rollout = RolloutStateMachine(plan: plan(), voters: ["r1", "r2", "r3"])
        _ = rollout.start(now: start)
        _ = rollout.voted("r2", answers: ["a": nil])
        #expect(rollout.wake(now: start + .seconds(4)).isEmpty)
        let actions = rollout.wake(now: start + .seconds(5))
        #expect(actions == [.writeDecision(.abort("prepare timed out after 5.0 seconds: no vote from replica r1, r3"))])
    }

    @Test func aMeshWithoutSidecarsCommitsAtOnce() {
        var rollout = RolloutStateMachine(plan: plan(), voters: ["r1"])
        _ = rollout.start(now: start)
        #expect(rollout.voted("r1", answers: [:]) == [.writeDecision(.commit)])
        #expect(rollout.decisionWritten(now: start) == [.activate([]), .finished(.completed)])
    }

    @Test func aGateBreachRollsBackEveryActivatedSidecar() {
        var rollout = RolloutStateMachine(plan: plan(gate: RolloutGate(maxErrorRatio: 0.01, maxP99: .milliseconds(300))), voters: ["r1"])
        _ = rollout.start(now: start)
        _ = rollout.voted("r1", answers: Dictionary(uniqueKeysWithValues: (0..<200).map { ("s\($0)", nil) }))
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
        let (many, _) = RolloutStateMachine.recovered(plan: plan(), targets: Set((0..<200).map { "s\($0)" }), decision: .commit)
        #expect((0..<4).map { many.wave($0).count } == [2, 18, 80, 100])
        let (few, _) = RolloutStateMachine.recovered(plan: plan(), targets: ["a", "b", "c"], decision: .commit)
        #expect((0..<3).map { Array(few.wave($0)) } == [["a"], ["b"], ["c"]])
        let (once, _) = RolloutStateMachine.recovered(plan: plan(waves: [100]), targets: ["a", "b"], decision: .commit)
        #expect(Array(once.wave(0)) == ["a", "b"])
    }

    @Test func aLeaderTakingOverWithoutADecisionPresumesAbort() {
        let (undecided, actions) = RolloutStateMachine.recovered(plan: plan(), targets: ["a"], decision: nil)
        #expect(actions == [.writeDecision(.abort("the leader changed before generation 7 was decided (presumed abort)"))])
        #expect(undecided.activated.isEmpty)
        var (committed, none) = RolloutStateMachine.recovered(plan: plan(waves: [100]), targets: ["a", "b"], decision: .commit)
        #expect(none.isEmpty)
        #expect(committed.decisionWritten(now: start) == [.activate(["a", "b"]), .finished(.completed)])
        // Committed, two waves activated by the leader before: those are soaked again (a breach the leader before saw
        // but could not write is seen again), then the third goes, and a breach rolls back all three.
        var (resumed, _) = RolloutStateMachine.recovered(plan: plan(), targets: ["a", "b", "c", "d"], decision: .commit, activated: ["a", "b"])
        #expect(resumed.decisionWritten(now: start) == [.wake(at: start + .seconds(10))])
        #expect(resumed.phase == .soaking(wave: 1, until: start + .seconds(10)))
        #expect(resumed.wake(now: start + .seconds(10), readings: .init(requests: 10, errors: 0)) == [.activate(["c"]), .wake(at: start + .seconds(20))])
        #expect(resumed.wake(now: start + .seconds(20), readings: .init(requests: 10, errors: 5)).first == .rollBack(["a", "b", "c"]))
        var (breached, _) = RolloutStateMachine.recovered(plan: plan(), targets: ["a", "b", "c", "d"], decision: .commit, activated: ["a"])
        _ = breached.decisionWritten(now: start)
        #expect(breached.wake(now: start + .seconds(10), readings: .init(requests: 10, errors: 5)).first == .rollBack(["a"]))
        // Every target activated already: it completes.
        var (done, _) = RolloutStateMachine.recovered(plan: plan(), targets: ["a", "b"], decision: .commit, activated: ["a", "b"])
        #expect(done.decisionWritten(now: start) == [.activate([]), .finished(.completed)])
    }

    @Test func theLastWaveTakesEveryTargetLeft() {
        var rollout = RolloutStateMachine(plan: plan(waves: [1, 10]), voters: ["r1"])
        _ = rollout.start(now: start)
        _ = rollout.voted("r1", answers: Dictionary(uniqueKeysWithValues: (0..<50).map { ("s\($0)", nil) }))
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
        #expect(gate.breach(.init(requests: 1000, errors: 0, unread: ["web-7"]))
            == "the gate cannot read the stats of 1 sidecar(s) (web-7): their admin listeners must be reachable from the control plane")
        #expect(RolloutGate().breach(.init(unread: ["web-7"])) == nil, "no gate, nothing to read")
    }

    @Test func theGateReadsWhatASidecarsRoutesCountedDuringTheSoak() {
        func metrics(requests: Int, errors: Int, fast: Int, slow: Int) -> String {
            """
            # TYPE outrigger_route_server_errors_total counter
            outrigger_route_server_errors_total{listener="outbound",route="users/0"} \(errors)
            outrigger_route_request_duration_seconds_bucket{listener="outbound",route="users/0",le="0.01"} \(fast)
            outrigger_route_request_duration_seconds_bucket{listener="outbound",route="users/0",le="0.5"} \(fast + slow)
            outrigger_route_request_duration_seconds_bucket{listener="outbound",route="users/0",le="+Inf"} \(requests)
            outrigger_route_request_duration_seconds_sum{listener="outbound",route="users/0"} 1.5
            outrigger_route_request_duration_seconds_count{listener="outbound",route="users/0"} \(requests)
            outrigger_downstream_requests_total{listener="outbound"} 999
            """
        }
        let before = RolloutGate.Sample(metrics: metrics(requests: 100, errors: 1, fast: 100, slow: 0))
        #expect(before.series.count == 5, "the route's counts and buckets, nothing else: \(before.series)")
        // 200 more: 10 of them 5xx, 5 slow (0.01–0.5 s): the 99th percentile is in the 0.5 s bucket.
        let after = RolloutGate.Sample(metrics: metrics(requests: 300, errors: 11, fast: 295, slow: 5))
        let readings = RolloutGate.Sample.readings([after.since(before)])
        #expect(readings == RolloutGate.Readings(requests: 200, errors: 10, p99: .milliseconds(500)))
        #expect(RolloutGate(maxErrorRatio: 0.01).breach(readings) == "error ratio 5% (10 of 200) is not below 1%")
        // A sidecar whose counters went back (its routes replaced) counts from zero; two sidecars are summed.
        let reset = RolloutGate.Sample(metrics: metrics(requests: 50, errors: 0, fast: 50, slow: 0)).since(before)
        #expect(RolloutGate.Sample.readings([reset, after.since(before)]) == RolloutGate.Readings(requests: 250, errors: 10, p99: .milliseconds(500)))
        #expect(RolloutGate.Sample.readings([]) == RolloutGate.Readings(), "nothing served: no p99")
    }
}
