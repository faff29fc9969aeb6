import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// A request's tries: starting one, passive health, retries and hedging.
extension ProxyRequestHandler {
    // MARK: Attempts and retries

    /// Leases an upstream for the request's current attempt and arms its per-try timer.
    func startAttempt(_ request: ProxiedRequest) {
        // The callee may give up early: it hears how long this try can still take (the whole route timeout
        // until the request has ended: no clock read for a first try).
        var now = request.start.uptimeNanoseconds
        let firstTry = request.exchange.tries.count == 1
        if !firstTry || request.exchange.progress.requestComplete { now = NIODeadline.now().uptimeNanoseconds }
        // A first try that cannot carry a caller's value got its field with the proxy's other own fields, after the
        // head's (`requestHead`): a later try's replaces it there.
        if !request.mayCarryExpectedTimeout {
            if !firstTry { request.appendedFields.expectedTimeout = expectedTimeout(of: request, now: now, callerSaid: nil) }
        } else {
            // A caller's sidecar may have said already how long it waits (the header arrives through a second
            // sidecar): the callee hears one value, the shorter.
            let given = firstTry ? request.upstreamHead.headers.first(name: OutriggerHeader.expectedTimeout) : nil
            let milliseconds = expectedTimeout(of: request, now: now, callerSaid: given)
            if firstTry && given == nil {
                request.upstreamHead.headers.addOwn(name: OutriggerHeader.expectedTimeout, value: milliseconds)
            } else {
                request.upstreamHead.headers.replaceOrAdd(name: OutriggerHeader.expectedTimeout, value: milliseconds)
            }
        }
        // Each try is a client span of its own, a child of the request's server span; a trace started here sends its
        // `traceparent` beside the head's fields.
        request.appendedFields.traceparent = request.trace?.startTry(spanID: local.random.nonZero(), attempt: request.exchange.tries.count,
                                                         endpoint: request.endpoint.addressText, at: now, into: &request.upstreamHead.headers)
        // Like the route timeout, a try's timeout counts from the request's end.
        apply(request.exchange.tryStarting(now: now), to: request)
        request.ticket = local.acquire(cluster: request.cluster, endpoint: request.endpoint, for: request)
    }

    /// `x-outrigger-expected-timeout-ms` for the request's current try: what is left of the route timeout at `now`,
    /// within the per-try timeout, or what the caller's sidecar said (`callerSaid`) when that is shorter.
    func expectedTimeout(of request: ProxiedRequest, now: UInt64, callerSaid given: String?) -> String {
        var expected = Int64(request.exchange.timer.timeLeftForTry(now: now))
        // The client's number, so multiplied with its overflow seen: a value past Int64 in nanoseconds (~292 years)
        // trapped the process. It is longer than any timeout here, so this hop's stands.
        if let given, let callerMilliseconds = Int64(given), callerMilliseconds >= 0 {
            let (callerNanoseconds, overflow) = callerMilliseconds.multipliedReportingOverflow(by: 1_000_000)
            if !overflow { expected = min(expected, callerNanoseconds) }
        }
        return DecimalText.string(max(expected / 1_000_000, 0))
    }

    func perTryTimeoutFired(_ request: ProxiedRequest) {
        let verdict = decide(request) { exchange, random, refusal in exchange.tryFailed(.perTryTimeout, random: &random, budgetRefusal: refusal) }
        // The try failed with the timeout, unless it runs on as a hedge (its verdict and span then wait for its end).
        if verdict.next != .hedge { request.trace?.tryFailed(ExchangeTimer.Expiry.perTryTimeout.traceName) }
        follow(verdict, of: request, abandoningUpstream: true)
    }

    /// Passive health: the try's result goes to its endpoint's breaker (once) and failure streak.
    func recordOutcome(_ result: AttemptResult, of request: ProxiedRequest) {
        let owed = request.exchange.current.takeBreakerDebt()
        request.cluster.recordTry(result, at: request.endpoint, owesBreakerVerdict: owed, countsForOutliers: request.exchange.current.countsAtEndpoint,
                                  random: &local.random, clock: Self.uptime)
    }

    static func uptime() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    /// Microseconds from `start` to `end` (uptime ns; 0 when `end` is not later).
    static func microseconds(from start: UInt64, to end: UInt64) -> UInt64 {
        end > start ? (end - start) / 1000 : 0
    }

    // MARK: Verdicts

    /// What the exchange decides for the request, from its own state; the cluster's limits and budget are asked only
    /// when the policy would retry.
    func decide(_ request: ProxiedRequest,
                _ question: (inout ProxyExchange, inout FastRandom, (_ countsAsRetry: Bool) -> String?) -> TryVerdict) -> TryVerdict {
        let cluster = request.cluster
        let verdict = question(&request.exchange, &local.random) { alreadyCounted in self.retryRefusal(in: cluster, alreadyCounted: alreadyCounted) }
        if let why = verdict.noRetry, request.accessLogHead != nil { request.decisions.append("no_retry:" + why) }
        return verdict
    }

    /// Why the cluster refuses a retry now (nil: it allows it): its limit of retries in flight, then its budget.
    private func retryRefusal(in cluster: ClusterRuntime, alreadyCounted: Bool) -> String? {
        if !alreadyCounted && cluster.stats.activeRetries.current >= cluster.limits.maxActiveRetries {
            cluster.stats.overflowMaxActiveRetries.increment()
            return "maxActiveRetries"
        }
        guard local.withdrawRetry(from: cluster, now: NIODeadline.now()) else {
            cluster.stats.retryBudgetExhausted.increment()
            return "budget"
        }
        return nil
    }

    /// Carries out a verdict on a failed try: its passive-health record and failure count, then the next try, the
    /// hedge taking over, or the local reply (after letting go of the upstream when `abandoningUpstream`).
    func follow(_ verdict: TryVerdict, of request: ProxiedRequest, abandoningUpstream: Bool = false) {
        if verdict.recordsFailure { recordOutcome(.localFailure, of: request) }
        if verdict.countsRequestFailure { request.cluster.stats.requestFailures.increment() }
        if verdict.dropsHedge { dropHedge(request, result: nil) }
        switch verdict.next {
        case .resendTransparently(let reason):
            request.exchange.keepForResend()
            beginRetry(request, after: 0, reason: reason)
        case .retry(let delay, let reason):
            beginRetry(request, after: delay, reason: reason)
        case .hedge:
            // Only a leased try is hedged (`TryFacts.leased`).
            guard case .proxying(_, let upstream) = state else { return assertionFailure("a hedge without a leased try") }
            beginHedge(request, leaving: upstream)
        case .resumeHedge:
            _ = resumeHedge(request)
        case .localReply(let reason):
            if abandoningUpstream { abandonUpstream() }
            localReply(reason, request: request)
        case .cutResponse:
            // Too late for a local reply: the response is cut so the client sees it incomplete.
            if request.accessLogHead != nil { request.decisions.append(LocalReplyReason.upstreamReset.rawValue) }
            recordFinished(request)
            state = .closing
            downstream.close()
        case .commitResponse, .holdResponse:
            break  // answers to a response head: carried out where it arrived
        }
    }

    /// Lets go of the current attempt — its connection closes (its state is unknown) and its endpoint's load
    /// drops — and starts the next after `delay` nanoseconds.
    func beginRetry(_ request: ProxiedRequest, after delay: Int64, reason: String) {
        endCurrentTry(request)
        countRetry(request, reason: reason)
        apply(request.exchange.backingOff(now: NIODeadline.now().uptimeNanoseconds, delay: UInt64(max(delay, 0))), to: request)
        state = .leasing(request)
    }

    /// Lets go of the current try: its connection (closed: its state is unknown) or lease, its timers, its
    /// endpoint's load and its breaker's probe slot.
    private func endCurrentTry(_ request: ProxiedRequest) {
        releaseTry(request)
        request.exchange.dropHeldResponse()
        switch state {
        case .proxying(_, let upstream): upstream.abort()
        default:
            request.ticket?.cancel()
            request.ticket = nil
        }
    }

    /// What the current try holds besides its connection: its timers, its breaker's probe slot (when it ends
    /// without a verdict) and its endpoint's load.
    func releaseTry(_ request: ProxiedRequest) {
        request.exchange.tryEnded()
        // One clock reading ends the try for its span and its duration.
        let now = request.exchange.current.countsAtEndpoint || request.trace?.runningTry != nil ? Self.uptime() : 0
        if let ended = request.trace?.endTry(at: now) { recordSpan(of: ended, request) }
        if request.exchange.current.takeBreakerDebt() { request.cluster.abandonBreakerProbe(at: request.endpoint) }
        if request.exchange.current.leaveEndpoint() {
            local.requestEnded(in: request.cluster, to: request.endpoint)
            let microseconds = Self.microseconds(from: request.exchange.current.startedAt, to: now)
            request.cluster.stats.tryDuration.record(microseconds: microseconds, loop: local.loopIndex)
        }
    }

    private func countRetry(_ request: ProxiedRequest, reason: String) {
        request.cluster.stats.retries.increment()
        request.cluster.stats.retriesByReason[reason]?.increment()
        if request.accessLogHead != nil { request.decisions.append("retry:" + reason) }
        request.trace?.retrying(for: reason)
        if request.exchange.retryCounted() { request.cluster.stats.activeRetries.increment() }
    }

    func startRetry(_ request: ProxiedRequest) {
        guard case .leasing(let current) = state, current === request else { return }
        let now = NIODeadline.now()
        let avoiding = request.exchange.tries.endpointsToAvoid(current: request.endpoint.id)
        guard var endpoint = local.pickRetryEndpoint(in: request.cluster, now: now, avoiding: avoiding) else {
            return nextTryUnplaceable(request, reason: .noHealthyUpstream)
        }
        if request.cluster.breakers != nil {
            guard let admitted = local.admitThroughBreaker(endpoint, in: request.cluster, now: now, tried: avoiding) else {
                return nextTryUnplaceable(request, reason: .breakerOpen)
            }
            endpoint = admitted
        }
        // Admitted by its breaker (when the cluster has breakers), the try owes it a verdict. The whole request goes
        // again: its head (unless still held for framing) and every part sent so far.
        request.exchange.nextTryPlaced(at: endpoint, now: now.uptimeNanoseconds, owesBreakerVerdict: request.cluster.breakers != nil)
        local.requestStarted(in: request.cluster, to: endpoint, now: now)
        request.upstreamHead.headers.replaceOrAdd(name: "x-outrigger-attempt", value: String(request.exchange.tries.count))
        startAttempt(request)
    }

    /// A retry has no endpoint to go to: the hedged try carries on if there is one, else `reason` is the answer.
    private func nextTryUnplaceable(_ request: ProxiedRequest, reason: LocalReplyReason) {
        follow(decide(request) { exchange, _, _ in exchange.nextTryUnplaceable(reason) }, of: request)
    }

    // MARK: Hedging

    private func beginHedge(_ request: ProxiedRequest, leaving upstream: UpstreamExchangeHandler) {
        // Its endpoint's load, breaker debt and span go with it.
        request.exchange.hedgeBegins()
        let hedge = HedgedAttempt(upstream: upstream, owner: self)
        upstream.retarget(to: hedge)
        request.hedge = hedge
        request.trace?.hedgeBegan()
        countRetry(request, reason: ClusterStats.hedge)
        state = .leasing(request)
        startRetry(request)
    }

    /// The current try is over (it failed, or the hedged one answered first): the hedged try becomes the
    /// request's try again. False when there is none.
    func resumeHedge(_ request: ProxiedRequest) -> Bool {
        guard let hedge = request.hedge else { return false }
        request.hedge = nil
        endCurrentTry(request)
        request.exchange.hedgeResumes()
        request.trace?.hedgeResumed()
        hedge.upstream.retarget(to: self)
        state = .proxying(request, hedge.upstream)
        return true
    }

    /// Lets go of the hedged try: it lost the race (`result` nil), or it ended with `result`.
    func dropHedge(_ request: ProxiedRequest, result: AttemptResult?, failure: String? = nil) {
        guard let hedge = request.hedge, let held = request.exchange.hedgeDropped() else { return }
        request.hedge = nil
        let now = Self.uptime()
        if let ended = request.trace?.endHedge(at: now, failure: failure) { recordSpan(of: ended, request) }
        hedge.upstream.abort()
        local.requestEnded(in: request.cluster, to: held.endpoint)
        request.cluster.stats.tryDuration.record(microseconds: Self.microseconds(from: held.startedAt, to: now), loop: local.loopIndex)
        if let result {
            request.cluster.recordTry(result, at: held.endpoint, owesBreakerVerdict: held.owesBreakerVerdict, countsForOutliers: true,
                                      random: &local.random, clock: Self.uptime)
        } else if held.owesBreakerVerdict {
            request.cluster.abandonBreakerProbe(at: held.endpoint)
        }
    }

    /// The request in flight, whatever stage it is in.
    var requestInFlight: ProxiedRequest? {
        switch state {
        case .leasing(let request), .proxying(let request, _): request
        default: nil
        }
    }

    /// The hedged try answered. An answer the route would retry ends it (the current try carries on); any
    /// other wins: the current try is cancelled and the answer goes on as the request's.
    func hedgeAnswered(_ hedge: HedgedAttempt, head: HTTPResponseHead, facts: ResponseHeadFacts) {
        guard let request = requestInFlight, request.hedge === hedge else { return hedge.upstream.abort() }
        if head.status.code < 200 { return }  // informational: the final answer is still to come
        let status = Int(head.status.code)
        request.trace?.tryAnswered(status: status, hedge: true)
        if !request.exchange.tries.hedgeAnswerWins(AttemptOutcome(responseHead: head, isGRPC: request.isGRPC)) {
            dropHedge(request, result: status >= 500 ? .serverError(status: status) : .success)
            return
        }
        if request.accessLogHead != nil { request.decisions.append("hedge_answered_first") }
        _ = resumeHedge(request)
        upstreamResponseHead(head, facts: facts)
    }

    func hedgeFailed(_ hedge: HedgedAttempt, failure: UpstreamFailure) {
        guard let request = requestInFlight, request.hedge === hedge else { return }
        // A refused stream (REFUSED_STREAM, past a GOAWAY) was not processed: no mark against the endpoint.
        dropHedge(request, result: failure == .refusedStream ? nil : .localFailure, failure: failure.traceName)
    }
}
