import NIOCore
import NIOHTTP1
import OutriggerConfig
@testable import OutriggerCore
import Testing

/// `ProxyExchange` driven through whole exchanges — events in order on a manual clock, what it answers checked at each
/// step — without sockets.
@Suite("Proxy exchange: a request's course as one state machine, on a manual clock")
struct ProxyExchangeTests {
    static func endpoint(_ port: Int) -> Endpoint {
        let host = HostPort(host: "127.0.0.1", port: port)
        return Endpoint(configured: host, address: try! SocketAddress(ipAddress: "127.0.0.1", port: port),
                        cluster: ClusterConfig(name: "c", endpoints: [host]))
    }

    static let a = endpoint(1), b = endpoint(2)
    static let millisecond: UInt64 = 1_000_000

    static func exchange(_ policy: RetryPolicy, routeTimeout: Duration = .seconds(1), streamIdle: Duration = .seconds(5)) -> ProxyExchange {
        ProxyExchange(policy: policy, idempotent: true, isGRPC: false, isUpgrade: false, holdsHeadForFraming: false, start: 0,
                      routeTimeout: routeTimeout, streamIdleTimeout: streamIdle, endpoint: a, owesBreakerVerdict: false)
    }

    @Test func aTryPastItsTimeoutIsRetriedAfterItsBackoffAndTheSecondAnswers() {
        var exchange = Self.exchange(RetryPolicy(attempts: 3, retryOn: [.fiveXX], perTryTimeout: .milliseconds(50)))
        let armed = exchange.settleTimer()
        #expect(armed == .arm(at: 1_000 * Self.millisecond), "armed at the start for the route timeout")
        let tryTimer = exchange.tryStarting(now: 0)
        #expect(tryTimer == .none, "a try is timed from the request's end")
        let released = exchange.forward(.end(nil))
        #expect(released == nil)
        let afterEnd = exchange.requestEnded(now: 10 * Self.millisecond)
        #expect(afterEnd == .arm(at: 60 * Self.millisecond), "the per-try timeout, sooner")
        let first = exchange.leased()
        #expect(first.sendsHead && first.parts.count == 1, "the head and the end that waited for the lease")
        #expect(exchange.stage == .relaying && exchange.facts.leased)

        let fired = exchange.timerFired(now: 60 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired == .perTryTimedOut)
        var random = FastRandom(seed: 1)
        let verdict = exchange.tryFailed(.perTryTimeout, random: &random) { _ in nil }
        guard case .retry(let delay, let reason) = verdict.next else {
            Issue.record("a per-try timeout is retried: \(verdict)")
            return
        }
        #expect(reason == RetryPolicy.Condition.fiveXX.rawValue && verdict.recordsFailure)
        let joins = exchange.retryCounted()
        #expect(joins, "the request joins the cluster's active retries")
        exchange.tryEnded()
        let backoffEnds = 60 * Self.millisecond + UInt64(delay)
        let backoff = exchange.backingOff(now: 60 * Self.millisecond, delay: UInt64(delay))
        #expect(backoff == .arm(at: backoffEnds))
        #expect(exchange.stage == .backingOff && !exchange.facts.leased, "no try runs while the backoff does")
        let released2 = exchange.forward(.body(.byteBuffer(ByteBuffer())))
        #expect(released2 == nil)

        let fired2 = exchange.timerFired(now: backoffEnds, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired2 == .placeNextTry)
        exchange.nextTryPlaced(at: Self.b, now: backoffEnds, owesBreakerVerdict: true)
        #expect(exchange.tries.count == 2 && exchange.current.endpoint === Self.b && exchange.current.owesBreakerVerdict)
        #expect(exchange.tries.endpointsToAvoid(current: Self.b.id) == [Self.a.id, Self.b.id])
        let tryTimer2 = exchange.tryStarting(now: backoffEnds)
        #expect(tryTimer2 == .arm(at: backoffEnds + 50 * Self.millisecond), "the second try's own timeout")
        let second = exchange.leased()
        #expect(second.sendsHead && second.parts.count == 2, "the whole request again: its end, kept for replay, and the part that came since")

        let answer = exchange.responseHead(.response(status: 200, grpcStatus: nil, retryAfterSeconds: nil), random: &random) { _ in nil }
        #expect(answer.next == .commitResponse)
        let bodyWatch = exchange.responseCommitted(status: 200, now: backoffEnds + Self.millisecond, tunnel: false)
        #expect(bodyWatch == .none, "the timer, armed sooner for the try's timeout, finds the body's watch when it fires")
        let fired3 = exchange.timerFired(now: backoffEnds + 50 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired3 == .rearm(.arm(at: 1_010 * Self.millisecond)), "the body is watched from the route deadline, sooner than a stream-idle period")
        exchange.responseBodyRelayed(bytes: 5)
        #expect(exchange.responseStatus == 200 && exchange.responseBodyBytes == 5 && exchange.progress.responseStarted)
        let end = exchange.end(), again = exchange.end()
        #expect(end.first && end.timer == .cancel, "the one end stops the timer")
        #expect(!again.first && again.timer == .none, "and happens once")
        let left = exchange.leftCluster()
        #expect(left, "it leaves the cluster's active retries")
    }

    @Test func eachExpiryIsReadForWhatItMeans() {
        // The route timeout while no upstream was leased: 504, the upstream's failure.
        var waiting = Self.exchange(RetryPolicy.none)
        _ = waiting.settleTimer()
        let fired = waiting.timerFired(now: 1_000 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired
                == .localReply(.upstreamTimeout, countsRequestFailure: true, tryFailure: "upstream_timeout"))

        // An upload that stops: the client's stall (408, not the upstream's fault), or the upstream's (504).
        for upstreamStopped in [false, true] {
            var uploading = Self.exchange(RetryPolicy.none, streamIdle: .milliseconds(100))
            _ = uploading.leased()
            let withinLimit = uploading.requestBodyArrived(bytes: 10, limit: nil)
            #expect(withinLimit)
            let fired2 = uploading.timerFired(now: 1_000 * Self.millisecond, upstreamStoppedReading: upstreamStopped, downstreamWritable: true)
            #expect(fired2
                    == .rearm(.arm(at: 1_100 * Self.millisecond)), "bytes moved since the start: look again in a stream-idle period")
            let expected: ProxyExchange.TimerOutcome = upstreamStopped
                ? .localReply(.upstreamTimeout, countsRequestFailure: true, tryFailure: "upload_stalled")
                : .localReply(.requestTimeout, countsRequestFailure: false, tryFailure: nil)
            let fired3 = uploading.timerFired(now: 1_100 * Self.millisecond, upstreamStoppedReading: upstreamStopped, downstreamWritable: true)
            #expect(fired3 == expected)
        }

        // A response body that stops: too late for a local reply.
        var responding = Self.exchange(RetryPolicy.none, streamIdle: .milliseconds(100))
        _ = responding.leased()
        _ = responding.requestEnded(now: 0)
        let bodyWatch = responding.responseCommitted(status: 200, now: 0, tunnel: false)
        #expect(bodyWatch == .arm(at: 100 * Self.millisecond))
        responding.responseBodyRelayed(bytes: 1)
        let fired4 = responding.timerFired(now: 100 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired4
                == .rearm(.arm(at: 200 * Self.millisecond)))
        let fired5 = responding.timerFired(now: 200 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: false)
        #expect(fired5
                == .rearm(.arm(at: 300 * Self.millisecond)), "a client that takes nothing is its send timeout's business")
        let fired6 = responding.timerFired(now: 300 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired6
                == .cutResponse(tryFailure: "stream_idle_timeout"))
    }

    @Test func aHedgedTryTakesTheRequestBackWhenTheCurrentOneFails() {
        let policy = RetryPolicy(attempts: 3, retryOn: [.fiveXX, .reset], perTryTimeout: .milliseconds(50), hedgeOnPerTryTimeout: true)
        var exchange = Self.exchange(policy)
        _ = exchange.tryStarting(now: 0)
        _ = exchange.requestEnded(now: 0)
        _ = exchange.leased()
        var random = FastRandom(seed: 1)
        let fired = exchange.timerFired(now: 50 * Self.millisecond, upstreamStoppedReading: false, downstreamWritable: true)
        #expect(fired == .perTryTimedOut)
        let verdict = exchange.tryFailed(.perTryTimeout, random: &random) { _ in nil }
        #expect(verdict.next == .hedge, "a leased, complete request is hedged")

        exchange.hedgeBegins()
        #expect(exchange.hedged?.endpoint === Self.a && exchange.hedged?.countsAtEndpoint == true, "the hedge holds the first try's endpoint")
        #expect(!exchange.current.countsAtEndpoint, "the request's own hold keeps nothing")
        #expect(exchange.facts.hedgeRacing && exchange.stage == .awaitingUpstream)
        exchange.nextTryPlaced(at: Self.b, now: 50 * Self.millisecond, owesBreakerVerdict: false)
        _ = exchange.tryStarting(now: 50 * Self.millisecond)
        _ = exchange.leased()

        let verdict2 = exchange.tryFailed(.upstream(.reset, connectionReused: false), random: &random) { _ in nil }
        #expect(verdict2.next == .resumeHedge,
                "the racing try carries on, whatever the policy says")
        exchange.tryEnded()
        exchange.hedgeResumes()
        #expect(exchange.current.endpoint === Self.a && exchange.current.startedAt == 0 && exchange.current.countsAtEndpoint)
        #expect(exchange.hedged == nil && exchange.stage == .relaying && !exchange.facts.hedgeRacing)
        let dropped = exchange.hedgeDropped()
        #expect(dropped == nil, "nothing left to drop")
    }

    @Test func aResponseHeadIsReadBeforeAnythingOfItIsRelayed() {
        let once = Self.exchange(RetryPolicy.none)
        #expect(once.readResponseHead(status: 103, upgradeRequested: false) == .informational)
        #expect(once.readResponseHead(status: 100, upgradeRequested: true) == .informational)
        #expect(once.readResponseHead(status: 101, upgradeRequested: false) == .unaskedUpgrade)
        #expect(once.readResponseHead(status: 101, upgradeRequested: true) == .answer(asksTries: false), "an upgrade is never retried")
        #expect(once.readResponseHead(status: 503, upgradeRequested: false) == .answer(asksTries: false), "nothing kept to send again")
        let retrying = Self.exchange(RetryPolicy(attempts: 2, retryOn: [.fiveXX]))
        #expect(retrying.readResponseHead(status: 503, upgradeRequested: false) == .answer(asksTries: true))

        var hedging = Self.exchange(RetryPolicy(attempts: 2, retryOn: [.fiveXX], replayBufferBytes: 0))
        _ = hedging.leased()
        let kept = hedging.forward(.body(.byteBuffer(ByteBuffer(string: "more than the buffer"))))
        #expect(kept == nil && !hedging.relay.replayKept)
        #expect(hedging.readResponseHead(status: 200, upgradeRequested: false) == .answer(asksTries: false))
        hedging.hedgeBegins()
        #expect(hedging.readResponseHead(status: 200, upgradeRequested: false) == .answer(asksTries: true), "a racing hedge may still win")
    }

    @Test func theBodyLimitAppliesUntilTheResponseStarts() {
        var exchange = Self.exchange(RetryPolicy.none)
        let (first, second) = (exchange.requestBodyArrived(bytes: 10, limit: 15), exchange.requestBodyArrived(bytes: 10, limit: 15))
        #expect(first)
        #expect(!second, "past the limit: 413 here")
        var answered = Self.exchange(RetryPolicy.none)
        _ = answered.responseCommitted(status: 200, now: 0, tunnel: false)
        let withinLimit = answered.requestBodyArrived(bytes: 20, limit: 15)
        #expect(withinLimit, "once the answer went, the rest of the upload is the upstream's")
        #expect(answered.requestBodyBytes == 20)
    }
}
