import NIOCore
import NIOHTTP1
import OutriggerConfig

/// One proxied request's exchange with its upstreams, as one pure state machine: where it stands (waiting for an
/// upstream, backing off before a retry, relaying), and the parts that decide its course — its tries and every decision
/// about the next (`ExchangeTries`), what of the request goes upstream when (`RequestRelay`), a held gRPC answer
/// (`ResponseHold`), its timers (`ExchangeTimer`), each way's progress and its one end (`ExchangeProgress`), and the
/// current try's and the hedged try's holds on their endpoints (`TryAtEndpoint`).
///
/// The shell keeps the I/O handles (the lease ticket, the upstream, the hedged try's connection), hands every event
/// in with the clock's reading, and carries out what comes back. Decisions about a try read the facts from here, not
/// from the shell.
public struct ProxyExchange {
    public enum Stage: Equatable, Sendable {
        /// The current try waits for its connection or stream.
        case awaitingUpstream
        /// A retry waits out its backoff: no try is under way.
        case backingOff
        /// The current try has its upstream: the request's parts go as they come.
        case relaying
    }

    /// What the timer found when it fired, as the exchange reads it.
    public enum TimerOutcome: Equatable, Sendable {
        /// Nothing ran out: the timer is set for what comes next.
        case rearm(ExchangeTimer.Action)
        /// A retry's backoff is over: the next try is placed.
        case placeNextTry
        /// The current try ran past its per-try timeout: the shell asks `tryFailed(.perTryTimeout)`.
        case perTryTimedOut
        /// Answered here with `reason`. `countsRequestFailure`: the cluster counts a failed request (the upstream's
        /// fault, not the client's). `tryFailure`: the running try failed with it (its span's error), if one ran.
        case localReply(LocalReplyReason, countsRequestFailure: Bool, tryFailure: String?)
        /// The response's body stalled for a stream-idle period: too late for a local reply, the response is cut.
        case cutResponse(tryFailure: String)
    }

    public private(set) var stage: Stage = .awaitingUpstream
    /// How far the exchange got each way, and its one end.
    public private(set) var progress = ExchangeProgress()
    /// Its tries so far, and where every decision about the next one is made.
    public private(set) var tries: ExchangeTries
    /// What of the request goes upstream when: the head and the parts waiting for a lease, the parts kept for replay.
    public private(set) var relay: RequestRelay
    /// A gRPC answer held until its trailers say whether to retry it.
    public private(set) var heldResponse: ResponseHold
    /// The route timeout, the upload's and the response's progress, the per-try timeout and a retry's backoff.
    public private(set) var timer: ExchangeTimer
    /// The current try's hold on its endpoint (the request's start until a try starts).
    public var current: TryAtEndpoint
    /// An earlier try left running past its per-try timeout, racing the current one: its hold on its endpoint.
    public private(set) var hedged: TryAtEndpoint?
    public private(set) var requestBodyBytes = 0
    /// Response body parts arrived (the stream-idle look compares them).
    public private(set) var responseParts = 0
    public private(set) var responseBodyBytes = 0
    /// The status of the response that went downstream (0: none yet).
    public private(set) var responseStatus = 0

    public init(policy: RetryPolicy, idempotent: Bool, isGRPC: Bool, isUpgrade: Bool, holdsHeadForFraming: Bool,
                start: UInt64, routeTimeout: Duration, streamIdleTimeout: Duration, endpoint: Endpoint, owesBreakerVerdict: Bool) {
        tries = ExchangeTries(policy: policy, idempotent: idempotent, isGRPC: isGRPC, isUpgrade: isUpgrade)
        relay = RequestRelay(holdsHeadForFraming: holdsHeadForFraming, keepsReplay: tries.mayRetry, replayLimit: policy.replayBufferBytes)
        heldResponse = ResponseHold(limit: policy.replayBufferBytes)
        timer = ExchangeTimer(start: start, routeTimeout: routeTimeout, streamIdleTimeout: streamIdleTimeout, perTryTimeout: policy.perTryTimeout)
        current = TryAtEndpoint(endpoint: endpoint, startedAt: start, owesBreakerVerdict: owesBreakerVerdict)
    }

    /// What a decision about the current try reads: the exchange's own state.
    public var facts: TryFacts {
        TryFacts(requestComplete: progress.requestComplete, responseStarted: progress.responseStarted, replayKept: relay.replayKept,
                 bodyBytes: requestBodyBytes, leased: stage == .relaying, holdingResponse: heldResponse.isHolding, hedgeRacing: hedged != nil)
    }

    // MARK: The request

    /// A body part of `bytes` arrived: false when it takes the body past `limit` before a response started (413 here).
    public mutating func requestBodyArrived(bytes: Int, limit: Int?) -> Bool {
        requestBodyBytes += bytes
        guard let limit else { return true }
        return requestBodyBytes <= limit || progress.responseStarted
    }

    /// A part goes upstream now (an upstream is relaying) or waits for the lease; the head, if held for framing, goes first.
    public mutating func forward(_ part: HTTPClientRequestPart) -> RequestRelay.ReleasedHead? {
        relay.forward(part, leased: stage == .relaying)
    }

    /// A read burst ended: a head still held for framing goes, chunked.
    public mutating func readBurstEnded() -> RequestRelay.ReleasedHead? {
        relay.readBurstEnded(leased: stage == .relaying)
    }

    /// The request's end arrived: the route timeout and the try's run from here (unless the response started).
    public mutating func requestEnded(now: UInt64) -> ExchangeTimer.Action {
        progress.requestEnded()
        return progress.responseStarted ? .none : timer.requestEnded(now: now)
    }

    // MARK: Tries

    /// A try starts: it asks for a lease, timed from `now`.
    public mutating func tryStarting(now: UInt64) -> ExchangeTimer.Action {
        stage = .awaitingUpstream
        current.startedAt = now
        return timer.tryStarted(now: now)
    }

    /// The try's upstream is leased: whether the head goes now, and the parts that waited for it.
    public mutating func leased() -> (sendsHead: Bool, parts: [HTTPClientRequestPart]) {
        stage = .relaying
        return relay.leased()
    }

    /// The current try ends (let go, or the request ended): its per-try timeout and any backoff stop.
    public mutating func tryEnded() {
        timer.tryEnded()
    }

    /// A held answer is thrown away: the try that gave it is let go for another.
    public mutating func dropHeldResponse() {
        heldResponse.drop()
    }

    /// A retry waits `delay` nanoseconds before its try is placed.
    public mutating func backingOff(now: UInt64, delay: UInt64) -> ExchangeTimer.Action {
        stage = .backingOff
        return timer.backoffStarted(now: now, delay: delay)
    }

    /// The next try is placed at `endpoint`: the whole request goes again (its head, unless still held, and the parts
    /// kept), and the try owes the endpoint's breaker a verdict when the breaker admitted it.
    public mutating func nextTryPlaced(at endpoint: Endpoint, now: UInt64, owesBreakerVerdict: Bool) {
        tries.nextTryStarted(at: endpoint.id, previous: current.endpoint.id)
        current = TryAtEndpoint(endpoint: endpoint, startedAt: now, owesBreakerVerdict: owesBreakerVerdict)
        relay.nextTryStarts()
    }

    /// The request's parts are kept again for a transparent resend, the first retry of a request whose replay was not.
    public mutating func keepForResend() {
        relay.keepForResend(requestComplete: progress.requestComplete)
    }

    /// A retry (or hedge, or resend) is counted: true the first time, when the request joins the cluster's active retries.
    public mutating func retryCounted() -> Bool {
        tries.retryCounted()
    }

    // MARK: Hedging

    /// The current try runs on as a hedge, its hold taken whole; the next try is placed to race it.
    public mutating func hedgeBegins() {
        hedged = current.handOver()
        stage = .awaitingUpstream
    }

    /// The hedged try becomes the request's try again (the current one was let go first): relaying its answer.
    public mutating func hedgeResumes() {
        guard let hedged else { return }
        current = hedged
        self.hedged = nil
        stage = .relaying
    }

    /// The hedged try is let go (it lost, or ended): its hold, for the shell to release.
    public mutating func hedgeDropped() -> TryAtEndpoint? {
        defer { hedged = nil }
        return hedged
    }

    // MARK: Decisions

    /// The current try failed: what follows (see `ExchangeTries.tryFailed`).
    public mutating func tryFailed(_ failure: TryFailure, random: inout FastRandom, budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> TryVerdict {
        let facts = self.facts
        return tries.tryFailed(failure, facts: facts, random: &random, budgetRefusal: budgetRefusal)
    }

    /// The current try's response head arrived: go on, hold it, or retry.
    public mutating func responseHead(_ outcome: AttemptOutcome, random: inout FastRandom, budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> TryVerdict {
        let facts = self.facts
        return tries.responseHead(outcome, facts: facts, random: &random, budgetRefusal: budgetRefusal)
    }

    /// A held gRPC answer ended with `grpcStatus`: retried, or let go downstream.
    public mutating func heldResponseEnded(grpcStatus: Int?, random: inout FastRandom, budgetRefusal: (_ countsAsRetry: Bool) -> String?) -> TryVerdict {
        let facts = self.facts
        return tries.heldResponseEnded(grpcStatus: grpcStatus, facts: facts, random: &random, budgetRefusal: budgetRefusal)
    }

    /// No endpoint takes the next try: the hedged try carries on, or `reason` is the answer.
    public func nextTryUnplaceable(_ reason: LocalReplyReason) -> TryVerdict {
        tries.nextTryUnplaceable(reason, facts: facts)
    }

    /// What a response head from the current try is, before anything of it is relayed.
    public enum HeadReading: Equatable, Sendable {
        /// Informational (1xx but 101, such as an HTTP/2 upstream's 103): dropped, as the HTTP/1.1 decoder does; the
        /// sidecar answers `100-continue` itself.
        case informational
        /// A `101 Switching Protocols` the request did not ask for: the upstream is out of step (502 here).
        case unaskedUpgrade
        /// A final answer, or the upgrade asked for. `asksTries`: a retry or a racing hedge could still replace it, so
        /// `responseHead` is asked before it goes on; otherwise it goes downstream as it is.
        case answer(asksTries: Bool)
    }

    /// Reads a response head's `status`; `upgradeRequested`: the request asked for an HTTP/1.1 upgrade.
    public func readResponseHead(status: Int, upgradeRequested: Bool) -> HeadReading {
        if status == 101 { return upgradeRequested ? .answer(asksTries: false) : .unaskedUpgrade }
        if status < 200 { return .informational }
        return .answer(asksTries: hedged != nil || relay.replayKept)
    }

    // MARK: The response

    /// A gRPC answer is held from its head on.
    public mutating func holdResponse(_ head: consuming HTTPResponseHead) {
        heldResponse.hold(head)
    }

    /// A body part of the held answer: false when it outgrew the hold and is to be let go now.
    public mutating func heldPartArrived(_ part: ByteBuffer) -> Bool {
        responseParts &+= 1
        return heldResponse.append(part)
    }

    /// The held answer, let go to be written.
    public mutating func releaseHeldResponse() -> (head: HTTPResponseHead, body: [ByteBuffer])? {
        heldResponse.release()
    }

    /// The response's head (`status`) goes downstream at `now`: the timer watches the body from here (a tunnel's
    /// bytes are the application's).
    public mutating func responseCommitted(status: Int, now: UInt64, tunnel: Bool) -> ExchangeTimer.Action {
        progress.responseCommitted()
        responseStatus = status
        return timer.responseStarted(now: now, tunnel: tunnel)
    }

    /// A response body part goes downstream.
    public mutating func responseBodyRelayed(bytes: Int) {
        responseParts &+= 1
        responseBodyBytes &+= bytes
    }

    /// A held answer's parts went downstream (counted as parts when they arrived).
    public mutating func heldBodyRelayed(bytes: Int) {
        responseBodyBytes &+= bytes
    }

    // MARK: Timer and end

    /// Arms the timer for the earliest deadline left (after an expiry, if the exchange goes on).
    public mutating func settleTimer() -> ExchangeTimer.Action {
        timer.settle()
    }

    /// The timer fired at `now`. `upstreamStoppedReading`: the upstream takes no more of the upload (its stall, not the
    /// client's); `downstreamWritable`: the client takes the response.
    public mutating func timerFired(now: UInt64, upstreamStoppedReading: Bool, downstreamWritable: Bool) -> TimerOutcome {
        let seen = ExchangeTimer.Progress(requestBodyBytes: requestBodyBytes, responseParts: responseParts,
                                          upstreamTakesBody: stage == .relaying, downstreamWritable: downstreamWritable)
        switch timer.fired(now: now, progress: seen) {
        case .nothingDue(let action):
            return .rearm(action)
        case .expired(.backoffOver):
            return .placeNextTry
        case .expired(.perTryTimeout):
            return .perTryTimedOut
        case .expired(.routeTimeout):
            return .localReply(.upstreamTimeout, countsRequestFailure: true, tryFailure: ExchangeTimer.Expiry.routeTimeout.traceName)
        case .expired(.uploadStalled):
            // The upload made no progress for a stream-idle period: the upstream's stall (504, its try failed), or the
            // client's (408, the try is cancelled with it).
            return upstreamStoppedReading
                ? .localReply(.upstreamTimeout, countsRequestFailure: true, tryFailure: ExchangeTimer.Expiry.uploadStalled.traceName)
                : .localReply(.requestTimeout, countsRequestFailure: false, tryFailure: nil)
        case .expired(.responseStalled):
            return .cutResponse(tryFailure: ExchangeTimer.Expiry.responseStalled.traceName)
        }
    }

    /// The exchange ends (relayed, cut, answered here, or the client gone): true the first time only, with the timer
    /// cancelled, when the shell lets go of the gauges, the endpoint's load and the hedge.
    public mutating func end() -> (first: Bool, timer: ExchangeTimer.Action) {
        guard progress.end() else { return (false, .none) }
        return (true, timer.finished())
    }

    /// The request leaves its cluster: true when it counted in the cluster's active retries.
    public mutating func leftCluster() -> Bool {
        tries.leftCluster()
    }
}
