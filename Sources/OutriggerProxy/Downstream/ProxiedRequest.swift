import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// One request being proxied: what was decided for it and how far it got.
final class ProxiedRequest {
    let listener: ListenerRuntime
    let route: Route
    let cluster: ClusterRuntime
    /// Where the exchange stands and everything that decides its course: its tries, the request's relay, a held
    /// answer, its timers, its progress and its tries' holds on their endpoints (pure, in Core).
    var exchange: ProxyExchange
    /// The endpoint of the current try (or of the last one).
    var endpoint: Endpoint { exchange.current.endpoint }
    /// The hedged try's connection, racing the current one (its hold on its endpoint is `exchange.hedged`).
    var hedge: HedgedAttempt?
    var upstreamHead: HTTPRequestHead
    /// The `x-request-id` the request carries upstream (`ProxyHeaders.prepareUpstreamRequest`): for its span and its
    /// access log line, without looking through its headers again.
    var upstreamRequestID = UpstreamRequestID.inHead("")
    /// The request id as text; nil when the route's header rules removed it or set it empty.
    var requestID: String? {
        let text = upstreamRequestID.text
        return text.isEmpty ? nil : text
    }
    /// Its place in its trace (a listener in `participate` mode): each try writes its own span into `upstreamHead`,
    /// or, for a trace started here, into `appendedFields`.
    var trace: ExchangeTrace?
    /// The proxy's own fields sent after `upstreamHead`'s (`AppendedOwnFields`): the forwarding fields, a request id
    /// generated here, the try's expected timeout and `traceparent`.
    var appendedFields = AppendedOwnFields()
    let downstreamVersion: HTTPVersion
    let isHEAD: Bool
    /// A gRPC call (its tries' rules know it too: held answers, trailers-only replies).
    var isGRPC: Bool { exchange.tries.isGRPC }
    let keepAlive: Bool
    let start: NIODeadline
    /// The exchange's timer (`ProxyExchange.timer`) in its loop's `LoopTimers`.
    var timerHandle: LoopTimers.Handle?
    /// Strong, not weak: a weak reference gives the handler a side table, and then every retain and release of
    /// it takes the runtime's slow path (~3 % of the CPU per request). The cycle handler → request → handler is
    /// cut when the request leaves the handler's state, or by `ProxyRequestHandler.detach`; a late callback finds
    /// the handler's state moved on and does nothing (a late lease goes back unused).
    var owner: ProxyRequestHandler?
    var ticket: LeaseTicket?
    /// The `Upgrade` value of an HTTP/1.1 upgrade request (WebSocket…) that may be tunnelled; nil otherwise.
    let upgrade: String?
    /// The upstream answered `101 Switching Protocols`: at the response's end both sides become a tunnel.
    var switchingProtocols = false
    /// The downstream HTTP/1.1 connection closes after this response.
    var closesConnection = false
    /// The status of a gRPC "trailers-only" upstream response, sent downstream as trailers (the HTTP/2
    /// codec cannot end a stream on its first HEADERS frame, and a status-less end reads as UNKNOWN).
    var grpcStatusFromHead: HTTPHeaders?
    /// The route's fallback cluster took the request (its cluster had no endpoint).
    var viaFallback = false
    /// The upstream head may carry an `x-outrigger-expected-timeout-ms` from the caller's sidecar: an `x-outrigger-`
    /// field came with the request, or the route's header rules change the head. Otherwise the first try's goes in
    /// with the proxy's other fields, and no one is looked for.
    var mayCarryExpectedTimeout = true
    /// The upstream head may have a `connection` field: the proxy removed the client's (hop-by-hop), so only an
    /// upgrade or the route's header rules put one back. Otherwise the exchange does not look for one.
    var mayCarryConnectionField = true
    /// A session cookie the proxy chose for this client (cookie hash policy with a ttl), sent back with the response.
    var setCookie: String?
    /// For the access log (kept only when the listener has one): the request as it arrived, and what was
    /// decided on its way — retries and why, why one was not made, fallback, drain — in order.
    var accessLogHead: HTTPRequestHead?
    var decisions: [String] = []
    var upstreamServiceMicroseconds: Int64?

    init(listener: ListenerRuntime, route: Route, retryPolicy: RetryPolicy, routeTimeout: Duration, cluster: ClusterRuntime, endpoint: Endpoint,
         keepAlive: Bool, isGRPC: Bool, head: consuming HTTPRequestHead, headHeldForFraming: Bool, start: NIODeadline, upgrade: String?) {
        self.upgrade = upgrade
        self.listener = listener
        self.route = route
        self.cluster = cluster
        exchange = ProxyExchange(
            policy: retryPolicy, idempotent: RetryDecision.isIdempotent(head), isGRPC: isGRPC, isUpgrade: upgrade != nil,
            holdsHeadForFraming: headHeldForFraming, start: start.uptimeNanoseconds, routeTimeout: routeTimeout,
            streamIdleTimeout: cluster.streamIdleTimeout, endpoint: endpoint, owesBreakerVerdict: cluster.breakers != nil)
        self.downstreamVersion = head.version
        self.isHEAD = head.method.isHEAD
        // The downstream head becomes the upstream one, taken rather than copied: its headers are changed in place.
        self.upstreamHead = head
        self.keepAlive = keepAlive
        self.start = start
    }

    /// The exchange, in place, for a call on the hot path. A non-mutating method called on `exchange` itself runs on a
    /// copy of the whole struct (a class's stored property is copied out for the call): ~500 instructions with its
    /// destruction.
    @inline(__always)
    func withExchange<Value>(_ body: (inout ProxyExchange) -> Value) -> Value {
        body(&exchange)
    }
}

extension ProxiedRequest: LoopTimerTarget {
    func loopTimerFired() {
        timerHandle = nil  // fired: nothing to cancel
        owner?.timerFired(self)
    }
}

/// The lease is for this request, not for whatever the connection is doing when it arrives: a late
/// lease for a request that already ended is handed back, never given to the next request.
extension ProxiedRequest: UpstreamLeaseRequester {
    func upstreamLeased(_ upstream: UpstreamExchangeHandler) {
        guard let owner else {
            upstream.releaseUnused()
            return
        }
        owner.upstreamLeased(upstream, for: self)
    }

    func upstreamLeaseFailed(_ reason: LocalReplyReason) {
        owner?.upstreamLeaseFailed(reason, for: self)
    }
}
