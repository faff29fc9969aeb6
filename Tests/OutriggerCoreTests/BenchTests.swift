import Foundation
import OutriggerBench
import Testing

@Suite("Load scheduler and report")
struct LoadSchedulerTests {
    @Test func openLoopHandsOutRequestsAtTheirIntendedTimes() {
        var scheduler = LoadScheduler(rate: 1000, start: 5_000_000, duration: 10_000_000)  // 1 ms apart, 10 ms
        #expect(scheduler.connectionFree(now: 5_000_000) == .send(intended: 5_000_000))
        #expect(scheduler.connectionFree(now: 5_000_000) == .wait(until: 6_000_000), "the next one is not due yet")
        #expect(scheduler.connectionFree(now: 6_000_000) == .send(intended: 6_000_000))
        // A connection that frees up late sends at once, and latency will count from the due time.
        #expect(scheduler.connectionFree(now: 9_500_000) == .send(intended: 7_000_000))
        #expect(scheduler.connectionFree(now: 9_500_000) == .send(intended: 8_000_000))
        #expect(scheduler.connectionFree(now: 9_500_000) == .send(intended: 9_000_000))
        #expect(scheduler.connectionFree(now: 9_500_000) == .wait(until: 10_000_000))
        for index in 5..<10 { #expect(scheduler.connectionFree(now: 20_000_000) == .send(intended: 5_000_000 + UInt64(index) * 1_000_000)) }
        #expect(scheduler.connectionFree(now: 20_000_000) == .stop, "exactly rate × duration requests")
        #expect(scheduler.scheduled == 10)
    }

    @Test func closedLoopSendsWheneverAConnectionIsFree() {
        var scheduler = LoadScheduler(rate: nil, start: 0, duration: 100)
        #expect(scheduler.connectionFree(now: 10) == .send(intended: 10))
        #expect(scheduler.connectionFree(now: 10) == .send(intended: 10))
        #expect(scheduler.connectionFree(now: 100) == .stop)
    }

    @Test func outcomesAndPercentiles() throws {
        var results = BenchResults()
        for micros in 1...1000 { results.record(.status2xx, latencyMicroseconds: UInt64(micros * 10)) }
        results.record(.status5xx, latencyMicroseconds: 5)
        results.record(.timeout, latencyMicroseconds: 10_000_000)
        results.record(.connectError, latencyMicroseconds: nil)
        results.measuredSeconds = 2
        #expect(results.completed == 1000)
        #expect(results.failed == 3)
        #expect(results.achievedRate == 501.5)
        #expect(abs(results.latencyMilliseconds(50) - 5) < 0.01)
        let summary = try JSONDecoder().decode([String: AnyDecodable].self, from: results.json())
        #expect(summary.keys.sorted() == ["achievedRate", "completed", "durationSeconds", "failed", "latencyMilliseconds", "outcomes", "sent", "unfinished"])
        #expect(RequestOutcome.status(404) == .status4xx && !RequestOutcome.status4xx.isFailure)
    }
}

/// Decodes any JSON value (only its presence is checked).
struct AnyDecodable: Decodable {
    init(from decoder: any Decoder) throws {}
}

@Suite("Load dispatch: free workers and the one wake-up they share")
struct LoadDispatchTests {
    final class Worker {
        let id: Int
        var open = true
        init(_ id: Int) { self.id = id }
    }

    static func sends(_ actions: [LoadDispatch<Worker>.Action]) -> [String] {
        actions.map {
            switch $0 {
            case .send(let worker, let intended): "send \(worker.id) \(intended)"
            case .stop(let worker): "stop \(worker.id)"
            case .wake(let at): "wake \(at)"
            }
        }
    }

    @Test func manyFreeWorkersShareOneWakeUpAndTakeTurns() {
        var dispatch = LoadDispatch<Worker>(scheduler: LoadScheduler(rate: 1000, start: 0, duration: 3_000_000))  // 3 requests, 1 ms apart
        let workers = (0..<64).map(Worker.init)
        var actions: [String] = []
        for worker in workers { actions += Self.sends(dispatch.workerFree(worker, now: 0, usable: { $0.open })) }
        #expect(actions == ["send 0 0", "wake 1000000"], "the first sends; one wake-up for all the others")
        #expect(dispatch.freeCount == 63)
        #expect(Self.sends(dispatch.woke(now: 1_000_000, usable: { $0.open })) == ["send 1 1000000", "wake 2000000"])
        workers[2].open = false
        #expect(Self.sends(dispatch.woke(now: 2_500_000, usable: { $0.open })) == ["send 3 2000000"] + (4..<64).map { "stop \($0)" },
                "a closed worker leaves the line; once the schedule is over, every waiting worker stops")
        #expect(Self.sends(dispatch.workerFree(workers[0], now: 3_000_000, usable: { $0.open })) == ["stop 0"])
        #expect(dispatch.freeCount == 0)
    }

    @Test func aWorkerFreedLateSendsWhatIsDueAtOnce() {
        var dispatch = LoadDispatch<Worker>(scheduler: LoadScheduler(rate: 1000, start: 0, duration: 10_000_000))
        let worker = Worker(0)
        #expect(Self.sends(dispatch.workerFree(worker, now: 0, usable: { $0.open })) == ["send 0 0"])
        #expect(Self.sends(dispatch.workerFree(worker, now: 2_500_000, usable: { $0.open })) == ["send 0 1000000"])
        #expect(Self.sends(dispatch.workerFree(worker, now: 2_500_000, usable: { $0.open })) == ["send 0 2000000"])
        #expect(Self.sends(dispatch.workerFree(worker, now: 2_500_000, usable: { $0.open })) == ["wake 3000000"])
        #expect(dispatch.wakeAt == 3_000_000)
    }

    @Test func closedLoopSendsOnEveryFreeWorker() {
        var dispatch = LoadDispatch<Worker>(scheduler: LoadScheduler(rate: nil, start: 0, duration: 100))
        for id in 0..<3 { #expect(Self.sends(dispatch.workerFree(Worker(id), now: 10, usable: { _ in true })) == ["send \(id) 10"]) }
        #expect(Self.sends(dispatch.workerFree(Worker(9), now: 100, usable: { _ in true })) == ["stop 9"])
    }
}
