import OutriggerConfig

/// How an upstream connection or stream failed an exchange.
public enum UpstreamFailure: Error, Equatable, Sendable {
    /// The connection was reset (an error such as ECONNRESET; HTTP/2: the stream reset) before the response
    /// was complete.
    case reset
    /// The connection (or stream) was closed cleanly, without an error, before the response was complete.
    case closed
    /// The upstream sent something that is not valid HTTP.
    case protocolError
    /// HTTP/2 REFUSED_STREAM, or a stream past the last id of the upstream's GOAWAY: the request was not
    /// processed and may be sent again, whatever its method.
    case refusedStream

    /// The try's `error.type` in its span.
    public var traceName: String {
        switch self {
        case .reset: "upstream_reset"
        case .closed: "connection_closed"
        case .protocolError: "upstream_protocol_error"
        case .refusedStream: "refused_stream"
        }
    }
}

/// How a request's current try failed before its response went downstream (or, for `upstream`, after).
public enum TryFailure: Equatable, Sendable {
    /// No connection or stream was leased; `reason` is what the client hears when nothing else is tried (only a
    /// connect failure may be retried).
    case leaseFailed(LocalReplyReason)
    /// The leased connection or stream failed; `connectionReused`: it had carried an earlier exchange.
    case upstream(UpstreamFailure, connectionReused: Bool)
    /// The try's own timeout passed.
    case perTryTimeout
}

/// What the exchange is doing when a try's fate is decided: the facts the shell holds (its buffers and
/// upstream), read at the moment of the decision.
public struct TryFacts: Equatable, Sendable {
    /// The request's end was received.
    public var requestComplete: Bool
    /// A response head went downstream: too late for a local reply or another try.
    public var responseStarted: Bool
    /// Every part of the request sent so far is still kept, so it can be sent again.
    public var replayKept: Bool
    /// Request body bytes received so far.
    public var bodyBytes: Int
    /// The current try has its connection or stream (not waiting for one, not backing off).
    public var leased: Bool
    /// A gRPC response is held until its trailers say whether to retry it.
    public var holdingResponse: Bool
    /// An earlier try, left running past its per-try timeout, still races the current one.
    public var hedgeRacing: Bool

    public init(requestComplete: Bool, responseStarted: Bool = false, replayKept: Bool, bodyBytes: Int = 0, leased: Bool,
                holdingResponse: Bool = false, hedgeRacing: Bool = false) {
        self.requestComplete = requestComplete
        self.responseStarted = responseStarted
        self.replayKept = replayKept
        self.bodyBytes = bodyBytes
        self.leased = leased
        self.holdingResponse = holdingResponse
        self.hedgeRacing = hedgeRacing
    }
}

/// What follows a try's failure or answer, decided by `ExchangeTries`.
public struct TryVerdict: Equatable, Sendable {
    public enum Next: Equatable, Sendable {
        /// Send the request again at once on another connection, whatever the retry policy: it provably went
        /// nowhere (a pooled connection found closed, a refused stream). Once per request.
        case resendTransparently(reason: String)
        /// Let the current try go and start the next after `after` nanoseconds; `reason` names the condition.
        case retry(after: Int64, reason: String)
        /// Leave the current try running and race it with the next (`hedgeOnPerTryTimeout`).
        case hedge
        /// The hedged try becomes the request's try again; the current one is let go.
        case resumeHedge
        /// Nothing else is tried: answer here with `reason`.
        case localReply(LocalReplyReason)
        /// Too late for a local reply: the response already started is cut.
        case cutResponse
        /// The answer goes downstream.
        case commitResponse
        /// A gRPC answer is held until its trailers, which may still ask for a retry.
        case holdResponse
    }

    public var next: Next
    /// The ended try counts against its endpoint as a local failure (passive health: breaker and outliers).
    public var recordsFailure = false
    /// The request counts as failed in its cluster's stats.
    public var countsRequestFailure = false
    /// The hedged try lost the race: it is cancelled, without a verdict.
    public var dropsHedge = false
    /// Why no retry was made although a condition asked for one (the access log's `no_retry:<why>`).
    public var noRetry: String?

    public init(_ next: Next, recordsFailure: Bool = false, countsRequestFailure: Bool = false, dropsHedge: Bool = false, noRetry: String? = nil) {
        self.next = next
        self.recordsFailure = recordsFailure
        self.countsRequestFailure = countsRequestFailure
        self.dropsHedge = dropsHedge
        self.noRetry = noRetry
    }
}

/// A request's tries, and every decision about the next one — retry, hedge, transparent resend, the hedge taking
/// over, or giving up — made here, in one place, for each way a try can end: a lease that failed, an upstream that
/// broke, a per-try timeout, an answer the route retries, a held gRPC answer's trailers. Pure: the shell hands in
/// the facts it holds (`TryFacts`), the randomness and the cluster's budget, and carries out the verdict.
public struct ExchangeTries: Sendable {
    /// The route's retry policy, with the request's override headers applied.
    public let policy: RetryPolicy
    /// GET, PUT… or `Idempotency-Key`: may be resent even after it reached an upstream.
    public let idempotent: Bool
    public let isGRPC: Bool
    /// An HTTP/1.1 upgrade (WebSocket…): never hedged.
    public let isUpgrade: Bool
    /// Tries so far, the current one included.
    public private(set) var count = 1
    /// The endpoints tried, in order (filled at the first retry: most requests never need it).
    private var triedEndpointIDs: [Int] = []
    /// The one transparent resend was used.
    public private(set) var usedTransparentResend = false
    /// Counted in the cluster's active retries, from the first retry until the request leaves the cluster.
    public private(set) var countsAsRetry = false

    public init(policy: RetryPolicy, idempotent: Bool, isGRPC: Bool, isUpgrade: Bool) {
        self.policy = policy
        self.idempotent = idempotent
        self.isGRPC = isGRPC
        self.isUpgrade = isUpgrade
    }

    /// The route may try the request more than once: its parts are kept for replay from its start, and each try says
    /// which attempt it is.
    public var mayRetry: Bool { policy.attempts > 1 }

    // MARK: The tries' ledger

    /// The endpoints a retry avoids: every one tried so far, `current` (the last) included.
    public func endpointsToAvoid(current: Int) -> [Int] {
        triedEndpointIDs.isEmpty ? [current] : triedEndpointIDs
    }

    /// The next try starts, at `endpointID`; `previous` is where the one before went.
    public mutating func nextTryStarted(at endpointID: Int, previous: Int) {
        if triedEndpointIDs.isEmpty { triedEndpointIDs.append(previous) }
        triedEndpointIDs.append(endpointID)
        count += 1
    }

    /// A retry (or hedge, or transparent resend) is counted: true the first time, when the request starts to count in
    /// the cluster's active retries.
    public mutating func retryCounted() -> Bool {
        guard !countsAsRetry else { return false }
        countsAsRetry = true
        return true
    }

    /// The request leaves its cluster: true when it counted in the cluster's active retries (and no longer does).
    public mutating func leftCluster() -> Bool {
        guard countsAsRetry else { return false }
        countsAsRetry = false
        return true
    }

    // MARK: Decisions

    /// The current try failed. `budgetRefusal` says why the cluster refuses a retry (`maxActiveRetries`, `budget`;
    /// nil: allowed), given whether the request already counts as a retry; it is asked last, only when everything
    /// else says retry, since asking may spend budget.
    public mutating func tryFailed(_ failure: TryFailure, facts: TryFacts, random: inout FastRandom,
                                   budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> TryVerdict {
        switch failure {
        case .leaseFailed(let reason):
            // Only a connection that could not be opened counts against the endpoint, and may be retried.
            guard reason == .connectFailure else { return TryVerdict(giveUp(reason, facts: facts)) }
            var verdict = verdict(policyAnswer(to: .connectFailure, facts: facts, random: &random, budgetRefusal: budgetRefusal),
                                  otherwise: giveUp(reason, facts: facts))
            verdict.recordsFailure = true
            return verdict

        case .upstream(let upstreamFailure, let connectionReused):
            // The request went nowhere: a pooled keep-alive connection the upstream had closed while it sat idle (a
            // clean close before any byte of the response; a reset is the upstream aborting a request it had, and is
            // left to the policy), or a stream the upstream refused. Sent again once, even without a retry policy,
            // when the request is still at hand (no body, or a body kept for replay).
            let staleConnection = upstreamFailure == .closed && connectionReused
            if staleConnection || upstreamFailure == .refusedStream, !facts.responseStarted, !usedTransparentResend,
               facts.replayKept || facts.bodyBytes == 0 {
                usedTransparentResend = true
                let reason = staleConnection ? ClusterStats.staleConnection : RetryPolicy.Condition.refusedStream.rawValue
                return TryVerdict(.resendTransparently(reason: reason))
            }
            if facts.responseStarted { return TryVerdict(.cutResponse, countsRequestFailure: true) }
            let answer = TryVerdict.Next.localReply(.upstreamReset)
            var verdict: TryVerdict
            switch upstreamFailure {
            case .reset, .closed:
                verdict = self.verdict(policyAnswer(to: .reset, facts: facts, random: &random, budgetRefusal: budgetRefusal), otherwise: answer)
            case .refusedStream:
                verdict = self.verdict(policyAnswer(to: .refusedStream, facts: facts, random: &random, budgetRefusal: budgetRefusal), otherwise: answer)
            case .protocolError:
                verdict = TryVerdict(giveUp(.upstreamProtocolError, facts: facts))
            }
            verdict.recordsFailure = true
            verdict.countsRequestFailure = true
            return verdict

        case .perTryTimeout:
            // A try past its timeout may be left running while another races it: one hedge at a time, for a request
            // whose body is all sent and that is no upgrade. Its verdict then waits for its end.
            let mayHedge = policy.hedgeOnPerTryTimeout && facts.leased && !facts.hedgeRacing && facts.requestComplete && !isUpgrade
                && !facts.holdingResponse
            switch policyAnswer(to: .perTryTimeout, facts: facts, random: &random, budgetRefusal: budgetRefusal) {
            case .resumeHedge:
                return TryVerdict(.resumeHedge, recordsFailure: true)
            case .retry(let delay, let reason):
                return mayHedge ? TryVerdict(.hedge) : TryVerdict(.retry(after: delay, reason: reason), recordsFailure: true)
            case .none(let why):
                return TryVerdict(.localReply(.upstreamTimeout), recordsFailure: true, countsRequestFailure: true, noRetry: why)
            }
        }
    }

    /// The current try's response head arrived (not a 101): `outcome` is how the route's retry conditions read it.
    /// Only asked when a hedge races or the request is kept for replay; otherwise the answer goes downstream.
    public mutating func responseHead(_ outcome: AttemptOutcome, facts: TryFacts, random: inout FastRandom,
                                      budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> TryVerdict {
        var dropsHedge = false
        var facts = facts
        if facts.hedgeRacing {
            // An answer the route would retry: the hedged try may still do better. Any other wins the race.
            if RetryDecision.matchedCondition(policy, outcome) != nil { return TryVerdict(.resumeHedge) }
            dropsHedge = true
            facts.hedgeRacing = false
        }
        var noRetry: String?
        if facts.replayKept {
            switch policyAnswer(to: outcome, facts: facts, random: &random, budgetRefusal: budgetRefusal) {
            case .retry(let delay, let reason):
                return TryVerdict(.retry(after: delay, reason: reason), dropsHedge: dropsHedge)
            case .none(let why):
                noRetry = why
            case .resumeHedge:
                break  // no hedge races now
            }
            // A gRPC answer whose status will come in its trailers: held (up to the replay buffer) so that a status
            // the route retries on can still be retried — what Envoy cannot do.
            if isGRPC, case .response(200, nil, _) = outcome, policy.retryOn.contains(where: { $0.grpcStatus != nil }) {
                return TryVerdict(.holdResponse, dropsHedge: dropsHedge, noRetry: noRetry)
            }
        }
        return TryVerdict(.commitResponse, dropsHedge: dropsHedge, noRetry: noRetry)
    }

    /// A held gRPC answer ended with `grpcStatus` in its trailers (nil: none): retried when the route asks, else it
    /// goes downstream.
    public mutating func heldResponseEnded(grpcStatus: Int?, facts: TryFacts, random: inout FastRandom,
                                           budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> TryVerdict {
        guard let grpcStatus, grpcStatus != 0 else { return TryVerdict(.commitResponse) }
        let outcome = AttemptOutcome.response(status: 200, grpcStatus: grpcStatus, retryAfterSeconds: nil)
        return verdict(policyAnswer(to: outcome, facts: facts, random: &random, budgetRefusal: budgetRefusal), otherwise: .commitResponse)
    }

    /// A retry found no endpoint to go to (none healthy, or every breaker open): the hedged try carries on if there
    /// is one, else `reason` is the answer.
    public func nextTryUnplaceable(_ reason: LocalReplyReason, facts: TryFacts) -> TryVerdict {
        TryVerdict(giveUp(reason, facts: facts))
    }

    /// The hedged try answered while the current one runs: true when its answer wins (the hedged try becomes the
    /// request's); false for an answer the route would retry (the hedge ends, the current try carries on).
    public func hedgeAnswerWins(_ outcome: AttemptOutcome) -> Bool {
        RetryDecision.matchedCondition(policy, outcome) == nil
    }

    // MARK: Rules

    /// What the retry policy makes of an outcome.
    private enum PolicyAnswer {
        /// A hedged try still races: it takes over, whatever the policy says.
        case resumeHedge
        case retry(after: Int64, reason: String)
        /// No retry; `noRetry` says why when a condition asked for one.
        case none(noRetry: String?)
    }

    private func giveUp(_ reason: LocalReplyReason, facts: TryFacts) -> TryVerdict.Next {
        facts.hedgeRacing ? .resumeHedge : .localReply(reason)
    }

    private func verdict(_ answer: PolicyAnswer, otherwise: TryVerdict.Next) -> TryVerdict {
        switch answer {
        case .resumeHedge: TryVerdict(.resumeHedge)
        case .retry(let delay, let reason): TryVerdict(.retry(after: delay, reason: reason))
        case .none(let why): TryVerdict(otherwise, noRetry: why)
        }
    }

    private func policyAnswer(to outcome: AttemptOutcome, facts: TryFacts, random: inout FastRandom,
                              budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> PolicyAnswer {
        if facts.hedgeRacing { return .resumeHedge }
        // Nothing kept to send again: no retry, unless the request never left and the route retries at all.
        guard facts.replayKept || outcome.neverReachedUpstream && policy.attempts > 1 else { return .none(noRetry: nil) }
        let alreadyCounted = countsAsRetry
        let decision = RetryDecision.decide(policy: policy, outcome: outcome, triesSoFar: count, idempotent: idempotent,
                                            // A connection that never opened sent nothing: what was read is all at hand.
                                            replayable: facts.replayKept || outcome == .connectFailure, random: &random) {
            budgetRefusal(alreadyCounted)
        }
        switch decision {
        case .retry(let delay, let reason): return .retry(after: delay, reason: reason)
        case .stop(let why): return .none(noRetry: why)
        }
    }
}
