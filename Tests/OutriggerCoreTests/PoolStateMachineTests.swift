@testable import OutriggerCore
import Testing

@Suite("HTTP/1.1 pool state machine")
struct PoolStateMachineTests {
    @Test func reusesIdleConnectionsMostRecentFirst() {
        var pool = HTTP1PoolStateMachine(maxConnections: 4, maxPending: 1)
        #expect(pool.leaseRequested(1) == .connect)
        pool.connectSucceeded(10)
        #expect(pool.leaseRequested(2) == .connect)
        pool.connectSucceeded(11)
        #expect(pool.released(10, reusable: true) == .keepIdle)
        #expect(pool.released(11, reusable: true) == .keepIdle)
        #expect(pool.leaseRequested(3) == .use(11))
        #expect(pool.leaseRequested(4) == .use(10))
        #expect(pool.openConnections == 2)
    }

    @Test func waitsAtTheLimitThenOverflows() {
        var pool = HTTP1PoolStateMachine(maxConnections: 1, maxPending: 2)
        #expect(pool.leaseRequested(1) == .connect)
        pool.connectSucceeded(10)
        #expect(pool.leaseRequested(2) == .wait)
        #expect(pool.leaseRequested(3) == .wait)
        #expect(pool.leaseRequested(4) == .overflow(.pendingRequests))
        #expect(pool.released(10, reusable: true) == .handOver(to: 2), "waiters are served in order")
        #expect(pool.released(10, reusable: true) == .handOver(to: 3))
        #expect(pool.released(10, reusable: true) == .keepIdle)
    }

    @Test func unusableConnectionIsClosedAndReplacedForTheNextWaiter() {
        var pool = HTTP1PoolStateMachine(maxConnections: 1, maxPending: 4)
        _ = pool.leaseRequested(1)
        pool.connectSucceeded(10)
        #expect(pool.leaseRequested(2) == .wait)
        #expect(pool.released(10, reusable: false) == .close(then: .connect(for: 2)))
        pool.connectSucceeded(11)
        #expect(pool.openConnections == 1)
    }

    @Test func failedConnectStartsOneForAWaiter() {
        var pool = HTTP1PoolStateMachine(maxConnections: 1, maxPending: 4)
        #expect(pool.leaseRequested(1) == .connect)
        #expect(pool.leaseRequested(2) == .wait)
        #expect(pool.connectFailed() == .connect(for: 2))
        #expect(pool.connectFailed() == .none)
        #expect(pool.isEmpty)
    }

    @Test func cancelledWaiterIsNotServed() {
        var pool = HTTP1PoolStateMachine(maxConnections: 1, maxPending: 4)
        _ = pool.leaseRequested(1)
        pool.connectSucceeded(10)
        _ = pool.leaseRequested(2)
        _ = pool.leaseRequested(3)
        pool.waiterCancelled(2)
        #expect(pool.released(10, reusable: true) == .handOver(to: 3))
    }

    @Test func closedIdleConnectionFreesItsSlot() {
        var pool = HTTP1PoolStateMachine(maxConnections: 1, maxPending: 4)
        _ = pool.leaseRequested(1)
        pool.connectSucceeded(10)
        _ = pool.released(10, reusable: true)
        #expect(pool.idleConnectionClosed(10) == .none)
        #expect(pool.leaseRequested(2) == .connect)
    }

    @Test func theClusterWideConnectionLimitMakesRequestsWaitForThisPoolsConnections() {
        var pool = HTTP1PoolStateMachine(maxConnections: 4, maxPending: 4)
        var clusterSlots = 1  // other pools hold the rest of the cluster's connections
        let reserve = { () -> Bool in
            guard clusterSlots > 0 else { return false }
            clusterSlots -= 1
            return true
        }
        #expect(pool.leaseRequested(1, reserveConnection: reserve) == .connect)
        pool.connectSucceeded(10)
        #expect(pool.leaseRequested(2, reserveConnection: reserve) == .wait, "the cluster is full: wait for connection 10")
        #expect(pool.released(10, reusable: true, reserveConnection: reserve) == .handOver(to: 2))
        // Connection 10 turns out unusable: it still holds its slot while it closes, so the waiter waits…
        #expect(pool.leaseRequested(3, reserveConnection: reserve) == .wait)
        #expect(pool.released(10, reusable: false, reserveConnection: reserve) == .close(then: .none))
        // …and gets a new connection once it has closed and given its slot back.
        clusterSlots += 1
        #expect(pool.idleConnectionClosed(10, reserveConnection: reserve) == .connect(for: 3))
    }

    @Test func withNoConnectionToWaitForTheClusterLimitOverflowsAtOnce() {
        var pool = HTTP1PoolStateMachine(maxConnections: 4, maxPending: 4)
        #expect(pool.leaseRequested(1, reserveConnection: { false }) == .overflow(.connections))
        #expect(pool.isEmpty)
        // Waiters left without a connection when the last one fails to open, and the cluster has no room.
        #expect(pool.leaseRequested(2) == .connect)
        #expect(pool.leaseRequested(3, reserveConnection: { false }) == .wait)
        #expect(pool.leaseRequested(4, reserveConnection: { false }) == .wait)
        #expect(pool.connectFailed(reserveConnection: { false }) == .overflow([3, 4]))
        #expect(pool.isEmpty)
    }

    @Test func drainIdleReturnsEveryIdleConnection() {
        var pool = HTTP1PoolStateMachine(maxConnections: 3, maxPending: 0)
        for id in 1...3 { _ = pool.leaseRequested(id); pool.connectSucceeded(id * 10) }
        _ = pool.released(10, reusable: true)
        _ = pool.released(20, reusable: true)
        #expect(pool.drainIdle().sorted() == [10, 20])
        #expect(pool.openConnections == 1)
    }
}

@Suite("Stats")
struct StatsTests {
    @Test func histogramQuantilesAreWithinBucketError() {
        let histogram = LatencyHistogram()
        for micros in 1...10_000 { histogram.record(microseconds: UInt64(micros)) }
        let snapshot = histogram.snapshot()
        #expect(snapshot.count == 10_000)
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0), (0.999, 9_990.0)] {
            let measured = snapshot.quantile(q) * 1_000_000
            #expect(measured >= exact && measured <= exact * 1.125, "p\(q * 100) = \(measured) µs, exact \(exact)")
        }
        #expect(snapshot.cumulativeBuckets[0] == 500, "le=0.0005 s holds 1...500 µs")
        #expect(snapshot.cumulativeBuckets.last == 10_000)
    }

    @Test func loopShardsAndTheSharedShardSumIntoOneSnapshot() {
        let histogram = LatencyHistogram(loops: 2)
        histogram.record(microseconds: 400, loop: 0)
        histogram.record(microseconds: 400, loop: 1)
        histogram.record(microseconds: 3_000, loop: 1)
        histogram.record(microseconds: 3_000, loop: 7)  // not a loop of this histogram: the shared shard
        histogram.record(microseconds: 200_000_000)
        let snapshot = histogram.snapshot()
        #expect(snapshot.count == 5)
        #expect(snapshot.cumulativeBuckets[0] == 2, "le=0.0005 s: the two 400 µs samples")
        #expect(snapshot.cumulativeBuckets[3] == 4, "le=0.005 s: and the two 3 ms ones")
        #expect(snapshot.cumulativeBuckets[LatencyHistogram.prometheusBounds.count - 1] == 4, "200 s is above the top bound")
        #expect(snapshot.cumulativeBuckets.last == 5)
        #expect(abs(snapshot.sumSeconds - 200.0068) < 1e-9)
        #expect(snapshot.quantile(0.5) * 1_000_000 >= 3_000)
    }

    @Test func everyBoundLandsInItsOwnPrometheusBucket() {
        // Each bound, one below and one above: the bucket found from the fine bucket's table entry is the one a
        // scan of the bounds would find (`le` is inclusive).
        for (index, bound) in LatencyHistogram.prometheusBounds.enumerated() {
            let micros = UInt64(bound * 1_000_000)
            for (value, expected) in [(micros - 1, index), (micros, index), (micros + 1, index + 1)] {
                let histogram = LatencyHistogram(loops: 1)
                histogram.record(microseconds: value, loop: 0)
                let buckets = histogram.snapshot().cumulativeBuckets
                #expect(buckets.firstIndex(of: 1) == expected, "\(value) µs")
            }
        }
    }

    @Test func fineBucketsCoverEveryValue() {
        for value: UInt64 in [0, 1, 7, 8, 9, 15, 16, 100, 1_000_000, UInt64(Int64.max)] {
            let index = LatencyHistogram.fineIndex(value)
            #expect(LatencyHistogram.fineUpperBound(index) >= value)
            if index > 0 { #expect(LatencyHistogram.fineUpperBound(index - 1) < value) }
        }
    }

    @Test func prometheusTextHasEveryFamilyAndLabel() {
        let stats = ProxyStats()
        stats.listener("in").requestsTotal.increment()
        stats.cluster("svc").recordResponse(status: 503)
        stats.recordLocalReply(.noRoute)
        stats.listener("in").requestDuration.record(microseconds: 1500)
        let text = stats.prometheusText()
        #expect(text.contains("outrigger_downstream_requests_total{listener=\"in\"} 1\n"))
        #expect(text.contains("outrigger_upstream_responses_total{cluster=\"svc\",code=\"5xx\"} 1\n"))
        #expect(text.contains("outrigger_local_replies_total{reason=\"no_route\"} 1\n"))
        #expect(text.contains("outrigger_request_duration_seconds_bucket{listener=\"in\",le=\"0.001\"} 0\n"))
        #expect(text.contains("outrigger_request_duration_seconds_bucket{listener=\"in\",le=\"0.0025\"} 1\n"))
        #expect(text.contains("outrigger_request_duration_seconds_count{listener=\"in\"} 1\n"))
        #expect(text.contains("# TYPE outrigger_request_duration_seconds histogram\n"))
    }
}
