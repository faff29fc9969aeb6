import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Exchange tries: every decision about a request's next try, without sockets")
struct ExchangeTriesTests {
    static let policy = RetryPolicy(attempts: 3, retryOn: [.fiveXX, .reset, .connectFailure, .unavailable])
    static let hedging = RetryPolicy(attempts: 3, retryOn: [.fiveXX, .reset], perTryTimeout: .milliseconds(50), hedgeOnPerTryTimeout: true)

    static func tries(_ policy: RetryPolicy = policy, idempotent: Bool = true, grpc: Bool = false, upgrade: Bool = false) -> ExchangeTries {
        ExchangeTries(policy: policy, idempotent: idempotent, isGRPC: grpc, isUpgrade: upgrade)
    }

    static func facts(complete: Bool = true, started: Bool = false, replay: Bool = true, body: Int = 0, leased: Bool = true,
                      holding: Bool = false, hedge: Bool = false) -> TryFacts {
        TryFacts(requestComplete: complete, responseStarted: started, replayKept: replay, bodyBytes: body, leased: leased,
                 holdingResponse: holding, hedgeRacing: hedge)
    }

    /// The cluster's side of a decision: what it answers, and each time it was asked (with whether the request
    /// already counted as a retry).
    final class Cluster {
        var refusal: String?
        var asked: [Bool] = []
        init(refusal: String? = nil) { self.refusal = refusal }
    }

    static func failed(_ tries: inout ExchangeTries, _ failure: TryFailure, _ facts: TryFacts = facts(), cluster: Cluster = Cluster()) -> TryVerdict {
        var random = FastRandom(seed: 7)
        return tries.tryFailed(failure, facts: facts, random: &random) { counted in
            cluster.asked.append(counted)
            return cluster.refusal
        }
    }

    static func answered(_ tries: inout ExchangeTries, _ outcome: AttemptOutcome, _ facts: TryFacts = facts(), cluster: Cluster = Cluster()) -> TryVerdict {
        var random = FastRandom(seed: 7)
        return tries.responseHead(outcome, facts: facts, random: &random) { counted in
            cluster.asked.append(counted)
            return cluster.refusal
        }
    }

    static func heldEnded(_ tries: inout ExchangeTries, grpcStatus: Int?, cluster: Cluster = Cluster()) -> TryVerdict {
        var random = FastRandom(seed: 7)
        return tries.heldResponseEnded(grpcStatus: grpcStatus, facts: facts(holding: true), random: &random) { counted in
            cluster.asked.append(counted)
            return cluster.refusal
        }
    }

    static func isRetry(_ verdict: TryVerdict, reason: String) -> Bool {
        if case .retry(_, reason) = verdict.next { return true }
        return false
    }

    static func response(_ status: Int, grpc: Int? = nil) -> AttemptOutcome {
        .response(status: status, grpcStatus: grpc, retryAfterSeconds: nil)
    }

    @Test func aPooledConnectionFoundClosedIsResentOnceWithoutAPolicy() {
        var tries = Self.tries(.none)
        let stale = TryFailure.upstream(.closed, connectionReused: true)
        let noBody = Self.facts(replay: false)
        let verdict1 = Self.failed(&tries, stale, noBody)
        #expect(verdict1 == TryVerdict(.resendTransparently(reason: ClusterStats.staleConnection)),
                "no mark against the endpoint, no failure counted")
        let verdict2 = Self.failed(&tries, stale, noBody)
        #expect(verdict2
                == TryVerdict(.localReply(.upstreamReset), recordsFailure: true, countsRequestFailure: true), "once only")

        var fresh = Self.tries(.none)
        let verdict3 = Self.failed(&fresh, .upstream(.closed, connectionReused: false), noBody)
        #expect(verdict3.next == .localReply(.upstreamReset),
                "a new connection closed on the request is the upstream's doing")
        var withBody = Self.tries(.none)
        let verdict4 = Self.failed(&withBody, stale, Self.facts(replay: false, body: 10))
        #expect(verdict4.next == .localReply(.upstreamReset),
                "a body that was not kept cannot be sent again")
        var reset = Self.tries(.none)
        let verdict5 = Self.failed(&reset, .upstream(.reset, connectionReused: true), noBody)
        #expect(verdict5.next == .localReply(.upstreamReset),
                "a reset is the upstream aborting a request it had: the policy's call")
    }

    @Test func aRefusedStreamIsResentOnceThenLeftToThePolicy() {
        var tries = Self.tries(RetryPolicy(attempts: 3, retryOn: [.refusedStream]), idempotent: false)
        let refused = TryFailure.upstream(.refusedStream, connectionReused: false)
        let verdict6 = Self.failed(&tries, refused)
        #expect(verdict6 == TryVerdict(.resendTransparently(reason: "refused-stream")))
        let second = Self.failed(&tries, refused)
        #expect(Self.isRetry(second, reason: "refused-stream"), "never processed: resent whatever the method")
        #expect(second.recordsFailure && second.countsRequestFailure)
    }

    @Test func aFailureOnceTheResponseStartedCutsIt() {
        var tries = Self.tries()
        let cluster = Cluster()
        let verdict7 = Self.failed(&tries, .upstream(.reset, connectionReused: false), Self.facts(started: true), cluster: cluster)
        #expect(verdict7
                == TryVerdict(.cutResponse, countsRequestFailure: true))
        #expect(cluster.asked.isEmpty, "no budget is spent on a request that cannot be retried")
    }

    @Test func connectFailuresAreRetriedEvenForAPostAndOtherLeaseFailuresAreAnswered() {
        var post = Self.tries(idempotent: false)
        let verdict = Self.failed(&post, .leaseFailed(.connectFailure), Self.facts(leased: false))
        #expect(Self.isRetry(verdict, reason: "connect-failure") && verdict.recordsFailure, "it never left")

        var once = Self.tries(.none)
        let verdict8 = Self.failed(&once, .leaseFailed(.connectFailure), Self.facts(replay: false, leased: false))
        #expect(verdict8
                == TryVerdict(.localReply(.connectFailure), recordsFailure: true), "a route that does not retry")

        var full = Self.tries()
        let verdict9 = Self.failed(&full, .leaseFailed(.overflow), Self.facts(leased: false))
        #expect(verdict9 == TryVerdict(.localReply(.overflow)),
                "a full pool is no mark against the endpoint")
        let verdict10 = Self.failed(&full, .leaseFailed(.overflow), Self.facts(leased: false, hedge: true))
        #expect(verdict10 == TryVerdict(.resumeHedge),
                "the hedged try carries on")
    }

    @Test func aResetIsRetriedOnlyWhenSafe() {
        var get = Self.tries()
        let verdict11 = Self.failed(&get, .upstream(.reset, connectionReused: false))
        #expect(Self.isRetry(verdict11, reason: "reset"))
        var post = Self.tries(idempotent: false)
        let verdict12 = Self.failed(&post, .upstream(.reset, connectionReused: false))
        #expect(verdict12
                == TryVerdict(.localReply(.upstreamReset), recordsFailure: true, countsRequestFailure: true, noRetry: "not_idempotent"))
        var unkept = Self.tries()
        let verdict13 = Self.failed(&unkept, .upstream(.reset, connectionReused: false), Self.facts(replay: false))
        #expect(verdict13.noRetry == nil,
                "a body outgrew the replay buffer: nothing to resend, nothing asked")
    }

    @Test func aProtocolErrorIsNeverRetried() {
        var tries = Self.tries()
        let cluster = Cluster()
        let verdict14 = Self.failed(&tries, .upstream(.protocolError, connectionReused: false), cluster: cluster)
        #expect(verdict14
                == TryVerdict(.localReply(.upstreamProtocolError), recordsFailure: true, countsRequestFailure: true))
        #expect(cluster.asked.isEmpty)
        let verdict15 = Self.failed(&tries, .upstream(.protocolError, connectionReused: false), Self.facts(hedge: true))
        #expect(verdict15.next == .resumeHedge)
    }

    @Test func theClusterIsAskedLastAndKnowsWhetherTheRequestAlreadyCounts() {
        var tries = Self.tries()
        let cluster = Cluster()
        let verdict16 = Self.answered(&tries, Self.response(404), cluster: cluster)
        #expect(verdict16 == TryVerdict(.commitResponse))
        #expect(cluster.asked.isEmpty, "nothing asked for a retry")
        let verdict17 = Self.failed(&tries, .upstream(.reset, connectionReused: false), cluster: cluster)
        #expect(Self.isRetry(verdict17, reason: "reset"))
        _ = tries.retryCounted()
        tries.nextTryStarted(at: 2, previous: 1)
        cluster.refusal = "budget"
        let verdict18 = Self.failed(&tries, .upstream(.reset, connectionReused: false), cluster: cluster)
        #expect(verdict18.noRetry == "budget")
        #expect(cluster.asked == [false, true])
    }

    @Test func attemptsRunOut() {
        var tries = Self.tries()
        #expect(tries.count == 1)
        tries.nextTryStarted(at: 1, previous: 0)
        let verdict19 = Self.failed(&tries, .upstream(.reset, connectionReused: false))
        #expect(Self.isRetry(verdict19, reason: "reset"))
        tries.nextTryStarted(at: 2, previous: 1)
        #expect(tries.count == 3)
        let verdict20 = Self.failed(&tries, .upstream(.reset, connectionReused: false))
        #expect(verdict20.noRetry == "attempts")
    }

    @Test func aPerTryTimeoutHedgesOnlyALeasedRequestWhoseBodyIsAllSent() {
        var tries = Self.tries(Self.hedging)
        let verdict21 = Self.failed(&tries, .perTryTimeout)
        #expect(verdict21 == TryVerdict(.hedge), "the try runs on: its verdict waits for its end")
        for facts in [Self.facts(leased: false), Self.facts(complete: false), Self.facts(holding: true)] {
            var other = Self.tries(Self.hedging)
            let verdict = Self.failed(&other, .perTryTimeout, facts)
            #expect(Self.isRetry(verdict, reason: "5xx") && verdict.recordsFailure)
        }
        var upgrade = Self.tries(Self.hedging, upgrade: true)
        let verdict22 = Self.failed(&upgrade, .perTryTimeout)
        #expect(Self.isRetry(verdict22, reason: "5xx"))
        var second = Self.tries(Self.hedging)
        let verdict23 = Self.failed(&second, .perTryTimeout, Self.facts(hedge: true))
        #expect(verdict23 == TryVerdict(.resumeHedge, recordsFailure: true),
                "one hedge at a time: the earlier try takes over")
        var refused = Self.tries(Self.hedging)
        let verdict24 = Self.failed(&refused, .perTryTimeout, cluster: Cluster(refusal: "maxActiveRetries"))
        #expect(verdict24
                == TryVerdict(.localReply(.upstreamTimeout), recordsFailure: true, countsRequestFailure: true, noRetry: "maxActiveRetries"))
    }

    @Test func anAnswerTheRouteRetriesWaitsForTheHedgeAndAnyOtherWins() {
        var tries = Self.tries(Self.hedging)
        let verdict25 = Self.answered(&tries, Self.response(503), Self.facts(hedge: true))
        #expect(verdict25 == TryVerdict(.resumeHedge))
        let verdict26 = Self.answered(&tries, Self.response(200), Self.facts(hedge: true))
        #expect(verdict26 == TryVerdict(.commitResponse, dropsHedge: true))
        #expect(!tries.hedgeAnswerWins(Self.response(503)), "an answer the route retries: the current try carries on")
        #expect(tries.hedgeAnswerWins(Self.response(201)), "the hedged try's answer is the request's")
    }

    @Test func anAnswerTheRouteRetriesIsRetriedWhenSafe() {
        var get = Self.tries()
        let verdict27 = Self.answered(&get, Self.response(503))
        #expect(Self.isRetry(verdict27, reason: "5xx"))
        var post = Self.tries(idempotent: false)
        let verdict28 = Self.answered(&post, Self.response(503))
        #expect(verdict28 == TryVerdict(.commitResponse, noRetry: "not_idempotent"))
    }

    @Test func aGRPCAnswerIsHeldForItsTrailers() {
        var call = Self.tries(RetryPolicy(attempts: 2, retryOn: [.unavailable]), idempotent: false, grpc: true)
        let verdict29 = Self.answered(&call, Self.response(200))
        #expect(verdict29 == TryVerdict(.holdResponse))
        let verdict30 = Self.answered(&call, Self.response(200, grpc: 0))
        #expect(verdict30 == TryVerdict(.commitResponse), "a trailers-only answer says it all")
        let verdict31 = Self.heldEnded(&call, grpcStatus: 14)
        #expect(Self.isRetry(verdict31, reason: "unavailable"), "a status the route lists is its opt-in")
        let verdict32 = Self.heldEnded(&call, grpcStatus: 0)
        #expect(verdict32 == TryVerdict(.commitResponse))
        let verdict33 = Self.heldEnded(&call, grpcStatus: nil)
        #expect(verdict33 == TryVerdict(.commitResponse))
        let verdict34 = Self.heldEnded(&call, grpcStatus: 14, cluster: Cluster(refusal: "budget"))
        #expect(verdict34 == TryVerdict(.commitResponse, noRetry: "budget"))

        var plain = Self.tries(RetryPolicy(attempts: 2, retryOn: [.fiveXX]), grpc: true)
        let verdict35 = Self.answered(&plain, Self.response(200))
        #expect(verdict35 == TryVerdict(.commitResponse), "no gRPC status to wait for")
    }

    @Test func theTriesLedger() {
        var tries = Self.tries()
        let first = tries.endpointsToAvoid(current: 4)
        #expect(first == [4])
        tries.nextTryStarted(at: 9, previous: 4)
        #expect(tries.count == 2)
        let second = tries.endpointsToAvoid(current: 9)
        #expect(second == [4, 9])
        let (firstCount, secondCount) = (tries.retryCounted(), tries.retryCounted())
        #expect(firstCount && !secondCount, "counted once in the cluster's active retries")
        let (firstLeave, secondLeave) = (tries.leftCluster(), tries.leftCluster())
        #expect(firstLeave && !secondLeave)
        #expect(tries.nextTryUnplaceable(.breakerOpen, facts: Self.facts()).next == .localReply(.breakerOpen))
        #expect(tries.nextTryUnplaceable(.breakerOpen, facts: Self.facts(hedge: true)).next == .resumeHedge)
        #expect(tries.mayRetry && !Self.tries(.none).mayRetry)
    }
}
