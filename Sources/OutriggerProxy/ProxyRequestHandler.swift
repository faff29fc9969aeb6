import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// Which wire protocol a downstream request arrived on.
enum DownstreamProtocol {
    case http1
    case http2
}

/// One request being proxied: what was decided for it and how far it got.
final class ProxiedRequest {
    let listener: ListenerRuntime
    let route: Route
    let cluster: ClusterRuntime
    /// The endpoint of the current attempt; its load counts this request while `atEndpoint`.
    var endpoint: Endpoint
    var atEndpoint = true
    /// Attempts so far, this one included, and the endpoints they went to (filled at the first retry).
    var tries = 1
    var triedEndpointIDs: [Int]
    /// GET, PUT… or `Idempotency-Key`: may be resent even after it reached an upstream.
    let idempotent: Bool
    /// The route's retry policy, with the request's override headers applied.
    var retryPolicy: RetryPolicy
    /// Every part sent upstream so far, kept to replay on a retry while within the route's replay buffer
    /// (nil: not kept — the route does not retry, or the body outgrew the buffer).
    var replay: [HTTPClientRequestPart]?
    var replayBytes = 0
    /// The current try was admitted by its endpoint's circuit breaker and owes it a verdict.
    var owesBreakerVerdict = false
    /// A gRPC response held until its trailers say whether to retry: its head and body parts so far.
    var heldResponse: (head: HTTPResponseHead, body: [ByteBuffer])?
    var heldBytes = 0
    /// Already resent once without a policy: a reused pooled connection turned out closed, or HTTP/2 refused
    /// the stream (REFUSED_STREAM, or past a GOAWAY's last stream id).
    var usedTransparentRetry = false
    /// Counted in the cluster's active retries (from its first retry until it leaves the cluster).
    var countsAsRetry = false
    /// An earlier try still racing the current one (`hedgeOnPerTryTimeout`).
    var hedge: HedgedAttempt?
    var upstreamHead: HTTPRequestHead
    let downstreamVersion: HTTPVersion
    let isHEAD: Bool
    let isGRPC: Bool
    let keepAlive: Bool
    let start: NIODeadline
    /// The head is ready to go and waits for an upstream.
    var headPending: Bool
    /// Body parts kept until an upstream is leased (one read burst at most: reading pauses meanwhile).
    var buffered: [HTTPClientRequestPart] = []
    /// HTTP/2 requests without content-length: the head waits for the next part, which tells whether a
    /// body follows, so an HTTP/1.1 upstream gets the right framing.
    var headHeldForFraming: Bool
    var requestComplete = false
    var responseStarted = false
    var responseComplete = false
    var bodyBytes = 0
    /// Response body parts relayed (the stream-idle look compares them).
    var responseParts = 0
    /// The route timeout, the upload's and the response's progress, the per-try timeout and a retry's backoff
    /// (the pure `ExchangeTimer`), behind one timer: `ProxiedRequest` is its own callback handler, so arming
    /// it allocates no closure.
    var timer: ExchangeTimer
    var scheduledTimer: NIOScheduledCallback?
    weak var owner: ProxyRequestHandler?
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
    /// A session cookie the proxy chose for this client (cookie hash policy with a ttl), sent back with the response.
    var setCookie: String?
    /// For the access log (kept only when the listener has one): the request as it arrived, and what was
    /// decided on its way — retries and why, why one was not made, fallback, drain — in order.
    var accessLogHead: HTTPRequestHead?
    var decisions: [String] = []
    var responseStatus = 0
    var responseBodyBytes = 0
    var upstreamServiceMicroseconds: Int64?

    init(listener: ListenerRuntime, route: Route, retryPolicy: RetryPolicy, routeTimeout: Duration, cluster: ClusterRuntime, endpoint: Endpoint,
         upstreamHead: HTTPRequestHead, downstreamHead: HTTPRequestHead, headHeldForFraming: Bool, keepAlive: Bool, start: NIODeadline,
         upgrade: String?) {
        self.upgrade = upgrade
        self.listener = listener
        self.route = route
        self.cluster = cluster
        self.endpoint = endpoint
        self.triedEndpointIDs = []
        self.idempotent = RetryDecision.isIdempotent(downstreamHead)
        self.retryPolicy = retryPolicy
        self.replay = retryPolicy.attempts > 1 ? [] : nil
        self.upstreamHead = upstreamHead
        self.downstreamVersion = downstreamHead.version
        self.isHEAD = downstreamHead.method == .HEAD
        self.isGRPC = downstreamHead.isGRPC
        self.keepAlive = keepAlive
        self.headHeldForFraming = headHeldForFraming
        self.start = start
        self.headPending = !headHeldForFraming
        timer = ExchangeTimer(start: start.uptimeNanoseconds, routeTimeout: routeTimeout, streamIdleTimeout: cluster.streamIdleTimeout,
                              perTryTimeout: retryPolicy.perTryTimeout)
    }
}

extension ProxiedRequest: NIOScheduledCallbackHandler {
    func handleScheduledCallback(eventLoop: some EventLoop) {
        scheduledTimer = nil  // fired: nothing to cancel (a cancel searches the loop's whole timer queue)
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

/// An earlier try left running when its per-try timeout started a hedge: it keeps its upstream, its endpoint's
/// load and its breaker debt, and tells the handler how it ends. If its answer wins, the request takes it back.
final class HedgedAttempt: UpstreamExchangeDelegate {
    let upstream: UpstreamExchangeHandler
    let endpoint: Endpoint
    let owesBreakerVerdict: Bool
    weak var owner: ProxyRequestHandler?

    init(upstream: UpstreamExchangeHandler, endpoint: Endpoint, owesBreakerVerdict: Bool, owner: ProxyRequestHandler) {
        self.upstream = upstream
        self.endpoint = endpoint
        self.owesBreakerVerdict = owesBreakerVerdict
        self.owner = owner
    }

    /// A head is small and decides the race: always read it.
    var downstreamIsWritable: Bool { true }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        guard let owner else { return upstream.abort() }
        owner.hedgeAnswered(self, head: head)
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        owner?.hedgeFailed(self, failure: failure)
    }

    // Body and end reach the request's handler itself once this try has won (the upstream is retargeted).
    func upstreamResponseBody(_ body: ByteBuffer) {}
    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {}
    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}
}

/// The end of a downstream pipeline (an HTTP/1.1 connection, or one HTTP/2 stream behind the HTTP/1
/// codec): routes each request, leases an upstream on this event loop and relays both ways with
/// backpressure, or answers locally with a reason.
final class ProxyRequestHandler: ChannelDuplexHandler, RemovableChannelHandler, UpstreamExchangeDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// Routed; waiting for a connection or stream.
        case leasing(ProxiedRequest)
        /// Relaying to and from an upstream.
        case proxying(ProxiedRequest, UpstreamExchangeHandler)
        /// The response is done (relayed or local); what is left of the request body is dropped.
        case discardingRequestBody
        /// A local reply ended the connection's usefulness; waiting for the close.
        case closing
    }

    private let listenerName: String
    private let configStore: ConfigStore
    private let local: LoopLocalState
    private let downstreamProtocol: DownstreamProtocol
    private let scheme: String
    private var state: State = .idle
    private var context: ChannelHandlerContext!
    private var clientAddress: String?
    private var readPending = false
    private var needsFlush = false
    /// HTTP/1.1 pipelining: parts of requests that arrived while an earlier one was in flight, replayed in
    /// order once it is answered. Reading goes on meanwhile (stopping it costs two epoll_ctl calls per
    /// request), up to `maxQueuedBytes`.
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    private var queuedBytes = 0
    private static let maxQueuedBytes = 64 * 1024
    /// Shutdown asked this connection to finish: it closes once the request in flight is answered.
    private var closeWhenIdle = false
    /// HTTP/2: the stream's `host` field named another authority than `:authority` (`HTTP2AuthorityCheck`).
    var hostDisagreesWithAuthority = false
    /// HTTP/2: the connection's frame watcher, which knows the streams its client reset in the current read.
    private let http2Connection: HTTP2ConnectionWatcher?
    /// HTTP/2: the stream's send timeout.
    private var sendStall = SendStallTimer()
    private var cachedListener: (snapshot: RuntimeSnapshot, listener: ListenerRuntime)?
    /// This loop's access log batch for the listener, if it has an access log.
    private var accessLog: (buffer: AccessLogBuffer, format: AccessLogConfig.Format)?

    /// HTTP/1.1: the connection's request-headers and idle timeouts, told of heads and response ends.
    private let timeouts: DownstreamTimeoutWatcher?
    /// The request the parser broke off was logged (its 400/431 needs no line of its own).
    private var loggedProtocolError = false

    init(listenerName: String, configStore: ConfigStore, local: LoopLocalState, downstreamProtocol: DownstreamProtocol, scheme: String,
         timeouts: DownstreamTimeoutWatcher? = nil, http2Connection: HTTP2ConnectionWatcher? = nil) {
        self.timeouts = timeouts
        self.http2Connection = http2Connection
        self.listenerName = listenerName
        self.configStore = configStore
        self.local = local
        self.downstreamProtocol = downstreamProtocol
        self.scheme = scheme
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // HTTP/2 streams are child channels: the client is the parent connection's peer.
        let remote = context.channel.remoteAddress ?? context.channel.parent?.remoteAddress
        clientAddress = remote?.ipAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sendStall.cancel()
        // The context holds this handler: keeping it past removal would leak both (one per HTTP/2 stream).
        self.context = nil
    }

    // MARK: Downstream events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if downstreamProtocol == .http1, mustQueue(part) {
            queue(part)
            return
        }
        dispatch(part)
    }

    private func dispatch(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            requestHead(head)
        case .body(let body):
            requestBody(body)
        case .end(let trailers):
            requestEnd(trailers)
        }
    }

    /// A part belongs to a later request when a head arrives before the current request is answered.
    private func mustQueue(_ part: HTTPServerRequestPart) -> Bool {
        if !queued.isEmpty { return true }
        guard case .head = part else { return false }
        switch state {
        case .idle, .closing: return false
        case .leasing, .proxying, .discardingRequestBody: return true
        }
    }

    private func queue(_ part: HTTPServerRequestPart) {
        if case .closing = state { return }
        if case .body(let body) = part { queuedBytes += body.readableBytes }
        queued.append(part)
    }

    /// The request in flight is answered: start on the queued ones (after the current call stack has
    /// written the previous response's end), or close if shutdown asked for it.
    private func becameIdle() {
        if closeWhenIdle {
            state = .closing
            context.close(promise: nil)
            return
        }
        guard !queued.isEmpty else { return }
        context.eventLoop.assumeIsolated().execute { [self] in
            guard context != nil else { return }  // removed from the pipeline meanwhile
            // One request's parts at a time: the next head waits until this handler is idle again.
            while let part = queued.first {
                if case .head = part, !isIdle { break }
                queued.removeFirst()
                if case .body(let body) = part { queuedBytes -= body.readableBytes }
                dispatch(part)
            }
            // No read burst ends after this replay, so flush here what it wrote.
            if case .proxying(_, let upstream) = state { upstream.flush() }
            flushIfNeeded()
            deliverPendingRead()
        }
    }

    private var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RequestHeadersTimedOut {
            requestHeadersTimedOut()
            return
        }
        if event is SendTimedOut {
            sendTimedOut()
            return
        }
        if let answered = event as? ProtocolErrorAnswered {
            // The request the parser broke off, if it was in flight, was logged by `errorCaught`.
            if !loggedProtocolError { logLocalReplyWithoutRequest(answered.reason) }
            return
        }
        if event is DropLastQueuedRequest {
            while let part = queued.popLast() {
                if case .body(let body) = part { queuedBytes -= body.readableBytes }
                if case .head = part { break }
            }
            return
        }
        guard event is ChannelShouldQuiesceEvent, downstreamProtocol == .http1 else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        closeWhenIdle = true
        if case .idle = state, queued.isEmpty {
            state = .closing
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A held head that saw neither body nor end in this burst has a body coming: send it chunked now,
        // so a client that waits for the response before sending (gRPC streaming) is not stalled.
        switch state {
        case .leasing(let request), .proxying(let request, _):
            if request.headHeldForFraming { releaseHeldHead(of: request, chunked: true) }
        default:
            break
        }
        if case .proxying(_, let upstream) = state { upstream.flush() }
        flushIfNeeded()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if mayRead {
            context.read()
        } else {
            readPending = true
        }
    }

    /// Reading pauses while no upstream is leased yet, while the upstream cannot take more, and while the
    /// pipelining queue is full.
    private var mayRead: Bool {
        if queuedBytes > Self.maxQueuedBytes || queued.count > 64 { return false }
        switch state {
        case .leasing: return false
        case .proxying(_, let upstream): return upstream.isWritable
        default: return true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if downstreamProtocol == .http2 {
            // A stream that takes nothing (its client gives no flow-control credit back) is reset after the
            // send timeout; a whole connection's stall is `SendTimeoutHandler`'s.
            let timeout = cachedListener?.listener.config.sendTimeout ?? ListenerConfig.defaultSendTimeout
            sendStall.writabilityChanged(to: context.channel.isWritable, timeout: .nanoseconds(timeout.nanoseconds), eventLoop: context.eventLoop) {
                [weak self] in self?.streamSendTimedOut()
            }
        }
        if context.channel.isWritable, case .proxying(_, let upstream) = state {
            upstream.downstreamBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    private func streamSendTimedOut() {
        sendStall.fired()
        guard let context, context.channel.isActive, !context.channel.isWritable else { return }
        currentListener()?.stats.recordClose(.sendTimeout)
        sendTimedOut()
        context.close(promise: nil)
    }

    /// The client took nothing for the send timeout and is cut next: the exchange ends here, logged as such.
    private func sendTimedOut() {
        if case .proxying(let request, let upstream) = state, !request.responseComplete {
            upstream.abort()
            request.responseComplete = true
            if request.accessLogHead != nil { request.decisions.append("send_timeout") }
            recordFinished(request)
        }
        state = .closing
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if downstreamProtocol == .http1, let parserError = error as? HTTPParserError {
            // `HTTP1ProtocolErrorHandler` answers it: logged with the answer's reason.
            let reason: LocalReplyReason = parserError == .headerOverflow ? .headersTooLarge : .badRequest
            loggedProtocolError = logClientGone(as: reason.rawValue, status: Int(reason.status.code))
        } else {
            logClientGone(as: "downstream_error")
        }
        abandonUpstream()
        state = .closing
        queued.removeAll()
        // HTTP/1.1: `HTTP1ProtocolErrorHandler` answers and closes. HTTP/2: closing the stream resets it.
        if downstreamProtocol == .http2 { context.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        logClientGone(as: configStore.drainDeadlinePassed.load(ordering: .relaxed) ? "drain_timeout" : "client_closed")
        abandonUpstream()
        state = .closing
        context.fireChannelInactive()
    }

    /// The client is still sending a request's head past `requestHeadersTimeout` (nothing is in flight):
    /// 408 `request_timeout`, and the connection closes.
    private func requestHeadersTimedOut() {
        switch state {
        case .idle, .discardingRequestBody: break
        case .leasing, .proxying, .closing: return
        }
        logLocalReplyWithoutRequest(.requestTimeout)
        writeLocalReply(.requestTimeout, version: .http1_1, isGRPC: false, isHEAD: false, keepAlive: false, requestComplete: false,
                        listener: nil, start: .now())
    }

    private func requestHead(_ head: HTTPRequestHead) {
        timeouts?.headReceived()
        guard case .idle = state else {
            // Heads arriving mid-request are queued (`mustQueue`), so this cannot happen; close if it does.
            context.close(promise: nil)
            return
        }
        guard let listener = currentListener() else {
            localReply(.draining, for: head, listener: nil, requestComplete: false)
            return
        }
        let start = NIODeadline.now()
        listener.stats.requestsTotal.increment()
        listener.stats.requestsActive.increment()
        if listener.stats.overloadLevel >= .refusingRequests {
            // HTTP/2: the client is told to take its next streams elsewhere.
            http2Connection?.goAwayGracefully()
            localReply(.overload, for: head, listener: listener, requestComplete: false, start: start)
            return
        }

        if HTTP1Rules.headSize(head) > listener.config.maxRequestHeadersBytes {
            localReply(.headersTooLarge, for: head, listener: listener, requestComplete: false, start: start)
            return
        }
        if let limit = listener.config.maxRequestBodyBytes,
           let length = head.headers.first(name: "content-length").flatMap(Int.init), length > limit {
            localReply(.bodyTooLarge, for: head, listener: listener, requestComplete: false, start: start)
            return
        }
        if hostDisagreesWithAuthority || !ProxyHeaders.hasValidHost(head.headers, version: head.version) {
            localReply(.invalidHost, for: head, listener: listener, requestComplete: false, start: start)
            return
        }
        let host = head.headers.first(name: "host") ?? ""
        guard let route = listener.routes.route(host: host, path: ProxyHeaders.path(of: head.uri), method: head.method, headers: head.headers) else {
            localReply(.noRoute, for: head, listener: listener, requestComplete: false, start: start)
            return
        }
        var cluster = route.destination.pick(random: local.random.next())
        let hashPolicy = cluster.hashPolicy
        var hashKey = hashPolicy?.key(headers: head.headers, clientAddress: clientAddress)
        var setCookie: String?
        if hashKey == nil, case .cookie(let name, let ttl?) = hashPolicy {
            // No session cookie yet: choose one, hash it as its later requests will be, and hand it out.
            let value = String(local.random.next(), radix: 16)
            hashKey = StableHash.of(value)
            setCookie = "\(name)=\(value); Max-Age=\(ttl.components.seconds); Path=/; HttpOnly"
        }
        if cluster.stats.requestsActive.current >= cluster.limits.maxRequests {
            cluster.stats.overflowMaxRequests.increment()
            localReply(.overflow, for: head, listener: listener, requestComplete: false, start: start)
            return
        }
        var picked = local.pickEndpoint(in: cluster, now: start, hashKey: hashKey)
        var viaFallback = false
        if picked == nil, let fallback = route.fallback {
            // Degradation: the cluster has no endpoint to offer; the route's fallback answers instead.
            switch fallback {
            case .cluster(let other):
                cluster = other
                picked = local.pickEndpoint(in: other, now: start, hashKey: nil)
                viaFallback = true
            case .response(let status, let headers, let body):
                fallbackReply(status: status, headers: headers, body: body, for: head, listener: listener, start: start)
                return
            }
        }
        guard var endpoint = picked else {
            localReply(cluster.noEndpointReason(now: start.uptimeNanoseconds), for: head, listener: listener, requestComplete: false, start: start)
            return
        }
        if cluster.breakers != nil {
            guard let admitted = admitThroughBreaker(endpoint, in: cluster, now: start, tried: []) else {
                localReply(.breakerOpen, for: head, listener: listener, requestComplete: false, start: start)
                return
            }
            endpoint = admitted
        }

        // Override headers: honoured from the local service (outbound, or a trusted inbound listener), never
        // forwarded.
        var overrides: RequestOverrides?
        let overridesPresent = RequestOverrides.anyPresent(in: head.headers)
        if overridesPresent && listener.config.honoursOverrideHeaders {
            let parsed = RequestOverrides(head.headers)
            if parsed.malformed > 0 { listener.stats.malformedOverrideHeaders.increment(by: parsed.malformed) }
            overrides = parsed
        }
        let retryPolicy = overrides.map { $0.applied(to: route.retries) } ?? route.retries
        // The sidecar answers `100-continue` itself, once it knows the request will be forwarded.
        let expectsContinue = head.headers.first(name: "expect")?.lowercased() == "100-continue"
        // HTTP/1.1 Upgrade (WebSocket…) is tunnelled to an HTTP/1.1 upstream; `h2c` never is (RFC 9113 §3.1).
        let upgrade = HTTP1Rules.tunnelableUpgrade(head, http1BothSides: downstreamProtocol == .http1 && cluster.upstreamProtocol == .http1)
        let holdHead = downstreamProtocol == .http2 && cluster.upstreamProtocol == .http1
            && !head.headers.contains(name: "content-length")
        let request = ProxiedRequest(
            listener: listener, route: route, retryPolicy: retryPolicy, routeTimeout: overrides?.timeout ?? route.timeout ?? cluster.timeout,
            cluster: cluster, endpoint: endpoint, upstreamHead: head, downstreamHead: head, headHeldForFraming: holdHead,
            keepAlive: keepsConnection(head), start: start, upgrade: upgrade
        )
        // The upstream head is built in place, in the request: its headers are copied from the downstream head
        // once (with room for what is added), and every later change (the attempt, the expected timeout) finds
        // them unshared.
        if overridesPresent { for name in RequestOverrides.names { request.upstreamHead.headers.remove(name: name) } }
        if expectsContinue { request.upstreamHead.headers.remove(name: "expect") }
        ProxyHeaders.prepareUpstreamRequest(
            &request.upstreamHead, route: route, clientAddress: clientAddress, scheme: scheme,
            addVia: listener.config.addVia, random: &local.random
        )
        if let upgrade {
            request.upstreamHead.headers.replaceOrAdd(name: "connection", value: "upgrade")
            request.upstreamHead.headers.replaceOrAdd(name: "upgrade", value: upgrade)
        }
        request.setCookie = setCookie
        request.viaFallback = viaFallback
        if accessLog != nil {
            request.accessLogHead = head
            if viaFallback { request.decisions.append("fallback:\(cluster.name)") }
        }
        request.owesBreakerVerdict = cluster.breakers != nil
        request.owner = self
        apply(request.timer.settle(), to: request)
        if expectsContinue {
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            needsFlush = true
        }
        cluster.stats.requestsActive.increment()
        local.requestStarted(in: cluster, to: endpoint, now: start)
        if retryPolicy.attempts > 1 { request.upstreamHead.headers.replaceOrAdd(name: "x-outrigger-attempt", value: "1") }
        state = .leasing(request)
        if let connection = http2Connection, connection.resetInThisRead(context.channel) {
            // The client reset the stream in the read that opened it (rapid reset): the stream closes as soon
            // as this returns, and nothing goes upstream, no request and no connection.
            return
        }
        startAttempt(request)
    }

    // MARK: Attempts and retries

    /// Leases an upstream for the request's current attempt and arms its per-try timer.
    private func startAttempt(_ request: ProxiedRequest) {
        // The callee may give up early: it hears how long this try can still take (the whole route timeout
        // until the request has ended: no clock read for a first try).
        var now = request.start.uptimeNanoseconds
        if request.tries > 1 || request.requestComplete { now = NIODeadline.now().uptimeNanoseconds }
        var expected = Int64(request.timer.timeLeftForTry(now: now))
        // A caller's sidecar may have said already how long it waits (the header arrives through a second
        // sidecar): the callee hears one value, the shorter. One scan of the headers when it is absent.
        let given = request.tries == 1 ? request.upstreamHead.headers.first(name: "x-outrigger-expected-timeout-ms") : nil
        if let given, let callerMilliseconds = Int64(given), callerMilliseconds >= 0 { expected = min(expected, callerMilliseconds * 1_000_000) }
        let milliseconds = String(max(expected / 1_000_000, 0))
        if request.tries == 1 && given == nil {
            request.upstreamHead.headers.add(name: "x-outrigger-expected-timeout-ms", value: milliseconds)
        } else {
            request.upstreamHead.headers.replaceOrAdd(name: "x-outrigger-expected-timeout-ms", value: milliseconds)
        }
        // Like the route timeout, a try's timeout counts from the request's end.
        apply(request.timer.tryStarted(now: now), to: request)
        request.ticket = local.acquire(cluster: request.cluster, endpoint: request.endpoint, for: request)
    }

    private func perTryTimeoutFired(_ request: ProxiedRequest) {
        // A hedge leaves the try running: its verdict waits for its end.
        var hedging: UpstreamExchangeHandler?
        if case .proxying(_, let upstream) = state, mayHedge(request) { hedging = upstream }
        if hedging == nil { recordOutcome(.localFailure, of: request) }
        if !retry(request, after: .perTryTimeout, hedging: hedging) {
            if hedging != nil { recordOutcome(.localFailure, of: request) }
            request.cluster.stats.requestFailures.increment()
            abandonUpstream()
            localReply(.upstreamTimeout, request: request, requestComplete: request.requestComplete)
        }
    }

    /// The endpoint's breaker admits the request, or another endpoint's does (a few picks); nil when none.
    private func admitThroughBreaker(_ first: Endpoint, in cluster: ClusterRuntime, now: NIODeadline, tried: [Int]) -> Endpoint? {
        guard let config = cluster.breakers else { return first }
        var candidate: Endpoint? = first
        var seen = tried
        for _ in 0..<4 {
            guard let endpoint = candidate else { return nil }
            if endpoint.state.withBreaker(config, { $0.admit(now: now.uptimeNanoseconds) }) { return endpoint }
            seen.append(endpoint.id)
            candidate = local.pickRetryEndpoint(in: cluster, now: now, avoiding: seen)
            if let next = candidate, seen.contains(next.id) { return nil }
        }
        return nil
    }

    /// Passive health: the try's result goes to its endpoint's breaker (once) and failure streak.
    private func recordOutcome(_ result: AttemptResult, of request: ProxiedRequest) {
        let owed = request.owesBreakerVerdict
        request.owesBreakerVerdict = false
        request.cluster.recordTry(result, at: request.endpoint, owesBreakerVerdict: owed, countsForOutliers: request.atEndpoint,
                                  random: &local.random, clock: Self.uptime)
    }

    private static func uptime() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    /// An attempt failed before anything of its response went downstream. A hedged try still running takes
    /// over; otherwise retries when the route's policy, the request's safety and the cluster's budget allow.
    /// Returns false (nothing done) when neither. With `hedging`, the retry races that upstream's try instead
    /// of replacing it.
    private func retry(_ request: ProxiedRequest, after outcome: AttemptOutcome, hedging: UpstreamExchangeHandler? = nil) -> Bool {
        if resumeHedge(request) { return true }
        guard request.replay != nil || outcome.neverReachedUpstream && request.retryPolicy.attempts > 1 else { return false }
        let now = NIODeadline.now()
        let decision = RetryDecision.decide(
            policy: request.retryPolicy, outcome: outcome, triesSoFar: request.tries, idempotent: request.idempotent,
            // A connection that never opened sent nothing: what was read is all still in `buffered`.
            replayable: request.replay != nil || outcome == .connectFailure, random: &local.random
        ) {
            // Under the cluster's limit of retries in flight, then within its budget.
            if !request.countsAsRetry && request.cluster.stats.activeRetries.current >= request.cluster.limits.maxActiveRetries {
                request.cluster.stats.overflowMaxActiveRetries.increment()
                return "maxActiveRetries"
            }
            guard local.withdrawRetry(from: request.cluster, now: now) else {
                request.cluster.stats.retryBudgetExhausted.increment()
                return "budget"
            }
            return nil
        }
        guard case .retry(let delay, let reason) = decision else {
            if request.accessLogHead != nil, case .stop(let why?) = decision { request.decisions.append("no_retry:" + why) }
            return false
        }
        if let hedging {
            beginHedge(request, leaving: hedging)
        } else {
            beginRetry(request, after: delay, reason: reason)
        }
        return true
    }

    /// Lets go of the current attempt — its connection closes (its state is unknown) and its endpoint's load
    /// drops — and starts the next after `delay` nanoseconds.
    private func beginRetry(_ request: ProxiedRequest, after delay: Int64, reason: String) {
        endCurrentTry(request)
        countRetry(request, reason: reason)
        state = .leasing(request)
        apply(request.timer.backoffStarted(now: NIODeadline.now().uptimeNanoseconds, delay: UInt64(max(delay, 0))), to: request)
    }

    /// Lets go of the current try: its connection (closed: its state is unknown) or lease, its timers, its
    /// endpoint's load and its breaker's probe slot.
    private func endCurrentTry(_ request: ProxiedRequest) {
        releaseTry(request)
        request.heldResponse = nil
        request.heldBytes = 0
        switch state {
        case .proxying(_, let upstream): upstream.abort()
        default:
            request.ticket?.cancel()
            request.ticket = nil
        }
    }

    /// What the current try holds besides its connection: its timers, its breaker's probe slot (when it ends
    /// without a verdict) and its endpoint's load.
    private func releaseTry(_ request: ProxiedRequest) {
        request.timer.tryEnded()
        if request.owesBreakerVerdict {
            request.owesBreakerVerdict = false
            request.cluster.abandonBreakerProbe(at: request.endpoint)
        }
        if request.atEndpoint {
            request.atEndpoint = false
            local.requestEnded(in: request.cluster, to: request.endpoint)
        }
    }

    private func countRetry(_ request: ProxiedRequest, reason: String) {
        request.cluster.stats.retries.increment()
        request.cluster.stats.retriesByReason[reason]?.increment()
        if request.accessLogHead != nil { request.decisions.append("retry:" + reason) }
        if !request.countsAsRetry {
            request.countsAsRetry = true
            request.cluster.stats.activeRetries.increment()
        }
    }

    private func startRetry(_ request: ProxiedRequest) {
        guard case .leasing(let current) = state, current === request else { return }
        let now = NIODeadline.now()
        if request.triedEndpointIDs.isEmpty { request.triedEndpointIDs.append(request.endpoint.id) }
        guard var endpoint = local.pickRetryEndpoint(in: request.cluster, now: now, avoiding: request.triedEndpointIDs) else {
            if resumeHedge(request) { return }
            localReply(.noHealthyUpstream, request: request, requestComplete: request.requestComplete)
            return
        }
        if request.cluster.breakers != nil {
            guard let admitted = admitThroughBreaker(endpoint, in: request.cluster, now: now, tried: request.triedEndpointIDs) else {
                if resumeHedge(request) { return }
                localReply(.breakerOpen, request: request, requestComplete: request.requestComplete)
                return
            }
            endpoint = admitted
            request.owesBreakerVerdict = true
        }
        request.tries += 1
        request.endpoint = endpoint
        request.triedEndpointIDs.append(endpoint.id)
        request.atEndpoint = true
        local.requestStarted(in: request.cluster, to: endpoint, now: now)
        request.upstreamHead.headers.replaceOrAdd(name: "x-outrigger-attempt", value: String(request.tries))
        // The whole request again: its head (unless still held for framing) and every part sent so far.
        request.headPending = !request.headHeldForFraming
        if let replay = request.replay { request.buffered = replay }
        startAttempt(request)
    }

    // MARK: Hedging

    /// Whether a try past its per-try timeout is left running while another races it (`hedgeOnPerTryTimeout`;
    /// the policy, safety and budget then decide as for a retry): one hedge at a time, for a request whose
    /// body is all sent and that is no upgrade.
    private func mayHedge(_ request: ProxiedRequest) -> Bool {
        request.retryPolicy.hedgeOnPerTryTimeout && request.hedge == nil && request.requestComplete && request.upgrade == nil
            && request.heldResponse == nil
    }

    private func beginHedge(_ request: ProxiedRequest, leaving upstream: UpstreamExchangeHandler) {
        let hedge = HedgedAttempt(upstream: upstream, endpoint: request.endpoint, owesBreakerVerdict: request.owesBreakerVerdict, owner: self)
        upstream.retarget(to: hedge)
        request.hedge = hedge
        // Its endpoint's load and breaker debt go with it.
        request.owesBreakerVerdict = false
        request.atEndpoint = false
        countRetry(request, reason: ClusterStats.hedge)
        state = .leasing(request)
        startRetry(request)
    }

    /// The current try is over (it failed, or the hedged one answered first): the hedged try becomes the
    /// request's try again. False when there is none.
    private func resumeHedge(_ request: ProxiedRequest) -> Bool {
        guard let hedge = request.hedge else { return false }
        request.hedge = nil
        endCurrentTry(request)
        request.endpoint = hedge.endpoint
        request.atEndpoint = true
        request.owesBreakerVerdict = hedge.owesBreakerVerdict
        hedge.upstream.retarget(to: self)
        state = .proxying(request, hedge.upstream)
        return true
    }

    /// Lets go of the hedged try: it lost the race (`result` nil), or it ended with `result`.
    private func dropHedge(_ request: ProxiedRequest, result: AttemptResult?) {
        guard let hedge = request.hedge else { return }
        request.hedge = nil
        hedge.upstream.abort()
        local.requestEnded(in: request.cluster, to: hedge.endpoint)
        if let result {
            request.cluster.recordTry(result, at: hedge.endpoint, owesBreakerVerdict: hedge.owesBreakerVerdict, countsForOutliers: true,
                                      random: &local.random, clock: Self.uptime)
        } else if hedge.owesBreakerVerdict {
            request.cluster.abandonBreakerProbe(at: hedge.endpoint)
        }
    }

    /// The request in flight, whatever stage it is in.
    private var requestInFlight: ProxiedRequest? {
        switch state {
        case .leasing(let request), .proxying(let request, _): request
        default: nil
        }
    }

    /// The hedged try answered. An answer the route would retry ends it (the current try carries on); any
    /// other wins: the current try is cancelled and the answer goes on as the request's.
    fileprivate func hedgeAnswered(_ hedge: HedgedAttempt, head: HTTPResponseHead) {
        guard let request = requestInFlight, request.hedge === hedge else { return hedge.upstream.abort() }
        if head.status.code < 200 { return }  // informational: the final answer is still to come
        let status = Int(head.status.code)
        if RetryDecision.matchedCondition(request.retryPolicy, AttemptOutcome(responseHead: head, isGRPC: request.isGRPC)) != nil {
            dropHedge(request, result: status >= 500 ? .serverError(status: status) : .success)
            return
        }
        if request.accessLogHead != nil { request.decisions.append("hedge_answered_first") }
        _ = resumeHedge(request)
        upstreamResponseHead(head)
    }

    fileprivate func hedgeFailed(_ hedge: HedgedAttempt, failure: UpstreamFailure) {
        guard let request = requestInFlight, request.hedge === hedge else { return }
        // A refused stream (REFUSED_STREAM, past a GOAWAY) was not processed: no mark against the endpoint.
        dropHedge(request, result: failure == .refusedStream ? nil : .localFailure)
    }

    /// This listener in the running snapshot; looked up again only when the snapshot changed.
    private func currentListener() -> ListenerRuntime? {
        let snapshot = configStore.snapshot
        if let cached = cachedListener, cached.snapshot === snapshot { return cached.listener }
        guard let listener = snapshot.listeners[listenerName] else { return nil }
        cachedListener = (snapshot, listener)
        accessLog = listener.config.accessLog.flatMap { config in local.accessLog(config).map { ($0, config.format) } }
        return listener
    }

    private func requestBody(_ body: ByteBuffer) {
        switch state {
        case .leasing(let request), .proxying(let request, _):
            request.bodyBytes += body.readableBytes
            if let limit = request.listener.config.maxRequestBodyBytes, request.bodyBytes > limit, !request.responseStarted {
                abandonUpstream()
                localReply(.bodyTooLarge, request: request, requestComplete: false)
                return
            }
            forward(.body(.byteBuffer(body)), of: request)
        case .idle, .discardingRequestBody, .closing:
            break
        }
    }

    private func requestEnd(_ trailers: HTTPHeaders?) {
        switch state {
        case .leasing(let request), .proxying(let request, _):
            request.requestComplete = true
            // The route timeout and the try's run from here.
            if !request.responseStarted { apply(request.timer.requestEnded(now: NIODeadline.now().uptimeNanoseconds), to: request) }
            forward(.end(trailers), of: request)
            if request.responseComplete { finishRequest(request) }
        case .discardingRequestBody:
            state = .idle
            timeouts?.responseEnded()
            becameIdle()
            deliverPendingRead()
        case .idle, .closing:
            break
        }
    }

    /// Sends a request part upstream, or keeps it until an upstream is leased.
    private func forward(_ part: HTTPClientRequestPart, of request: ProxiedRequest) {
        if request.headHeldForFraming {
            var chunked = false
            if case .body = part { chunked = true }
            releaseHeldHead(of: request, chunked: chunked)
        }
        if request.replay != nil {
            if case .body(.byteBuffer(let body)) = part { request.replayBytes += body.readableBytes }
            if request.replayBytes > request.retryPolicy.replayBufferBytes {
                request.replay = nil  // too big to replay: this request will not be retried
            } else {
                request.replay!.append(part)
            }
        }
        switch state {
        case .proxying(_, let upstream): upstream.send(part)
        default: request.buffered.append(part)
        }
    }

    private func releaseHeldHead(of request: ProxiedRequest, chunked: Bool) {
        request.headHeldForFraming = false
        if chunked { request.upstreamHead.headers.add(name: "transfer-encoding", value: "chunked") }
        if case .proxying(_, let upstream) = state {
            upstream.send(.head(request.upstreamHead))
        } else {
            request.headPending = true
        }
    }

    // MARK: Upstream lease

    fileprivate func upstreamLeased(_ upstream: UpstreamExchangeHandler, for leased: ProxiedRequest) {
        guard case .leasing(let request) = state, request === leased else {
            // The request ended while we waited; the connection goes back unused.
            upstream.releaseUnused()
            return
        }
        request.ticket = nil
        state = .proxying(request, upstream)
        upstream.begin(self)
        if request.headPending {
            request.headPending = false
            upstream.send(.head(request.upstreamHead))
        }
        let buffered = request.buffered
        request.buffered = []
        for part in buffered { upstream.send(part) }
        upstream.flush()
        deliverPendingRead()
    }

    fileprivate func upstreamLeaseFailed(_ reason: LocalReplyReason, for leased: ProxiedRequest) {
        guard case .leasing(let request) = state, request === leased else { return }
        request.ticket = nil
        if reason == .connectFailure {
            recordOutcome(.localFailure, of: request)
            if retry(request, after: .connectFailure) { return }
        }
        if resumeHedge(request) { return }
        localReply(reason, request: request, requestComplete: request.requestComplete)
    }

    // MARK: Upstream exchange

    var downstreamIsWritable: Bool { context?.channel.isWritable ?? false }

    func upstreamResponseHead(_ head: HTTPResponseHead) {
        guard case .proxying(let request, _) = state else { return }
        // Informational responses (an HTTP/2 upstream's 103) are dropped, as the HTTP/1.1 decoder does;
        // the sidecar answers `100-continue` itself.
        if head.status.code < 200 && head.status != .switchingProtocols { return }
        let now = NIODeadline.now()
        local.responseStarted(in: request.cluster, from: request.endpoint, sentAt: request.start, now: now)
        if head.status == .switchingProtocols && request.upgrade == nil {
            // A 101 nobody asked for: the upstream is out of step.
            request.cluster.stats.requestFailures.increment()
            abandonUpstream()
            localReply(.upstreamProtocolError, request: request, requestComplete: request.requestComplete)
            return
        }
        request.cluster.stats.recordResponse(status: Int(head.status.code))
        recordOutcome(AttemptResult(status: Int(head.status.code)), of: request)
        if head.status != .switchingProtocols, request.hedge != nil || request.replay != nil {
            let outcome = AttemptOutcome(responseHead: head, isGRPC: request.isGRPC)
            if request.hedge != nil {
                // An answer the route would retry: wait for the hedged try instead. Any other wins the race.
                if RetryDecision.matchedCondition(request.retryPolicy, outcome) != nil, resumeHedge(request) { return }
                dropHedge(request, result: nil)
            }
            if request.replay != nil {
                if retry(request, after: outcome) { return }
                // A gRPC answer whose status will come in its trailers: held (up to the replay buffer) so that a
                // status the route retries on can still be retried — what Envoy cannot do.
                if request.isGRPC, case .response(_, nil, _) = outcome, head.status == .ok,
                   request.retryPolicy.retryOn.contains(where: { $0.grpcStatus != nil }) {
                    request.heldResponse = (head, [])
                    return
                }
            }
        }
        commitResponseHead(head, of: request, now: now)
    }

    /// From here the response goes to the client: timers switch to watching the body, and the head is written.
    private func commitResponseHead(_ head: HTTPResponseHead, of request: ProxiedRequest, now: NIODeadline) {
        dropHedge(request, result: nil)
        request.responseStarted = true
        // The timer watches the body's progress now (stream idle); a tunnel's bytes are the application's.
        apply(request.timer.responseStarted(now: now.uptimeNanoseconds, tunnel: head.status == .switchingProtocols), to: request)
        var response = head
        if response.version != request.downstreamVersion { response.version = request.downstreamVersion }
        if let drain = response.headers.first(name: EndpointDrain.header) {
            // The endpoint is going away: no new requests for it; this one and others in flight finish.
            response.headers.remove(name: EndpointDrain.header)
            if drain.lowercased() == "true" {
                EndpointDrain.start(request.endpoint, in: request.cluster)
                if request.accessLogHead != nil { request.decisions.append("endpoint_drain") }
            }
        }
        if let cookie = request.setCookie { response.headers.add(name: "set-cookie", value: cookie) }
        if request.viaFallback { response.headers.replaceOrAdd(name: OutriggerHeader.reason, value: LocalReplyReason.fallback.rawValue) }
        let elapsedMicroseconds = (now - request.start).nanoseconds / 1000
        request.responseStatus = Int(head.status.code)
        request.upstreamServiceMicroseconds = elapsedMicroseconds
        ProxyHeaders.prepareDownstreamResponse(&response, route: request.route, upstreamServiceMilliseconds: elapsedMicroseconds / 1000,
                                               addVia: request.listener.config.addVia)
        if head.status == .switchingProtocols {
            request.switchingProtocols = true
            response.headers.replaceOrAdd(name: "connection", value: "upgrade")
            response.headers.replaceOrAdd(name: "upgrade", value: head.headers.first(name: "upgrade") ?? request.upgrade ?? "")
        }
        if downstreamProtocol == .http1 {
            request.closesConnection = HTTP1Rules.frame(&response, answering: request.isHEAD ? .HEAD : .GET, clientVersion: request.downstreamVersion,
                                                        keepAlive: request.keepAlive, closing: closeWhenIdle)
        }
        if request.isGRPC && downstreamProtocol == .http2 { request.grpcStatusFromHead = response.headers.takeGRPCStatus() }
        context.write(wrapOutboundOut(.head(response)), promise: nil)
        needsFlush = true
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        guard case .proxying(let request, _) = state else { return }
        request.responseParts &+= 1
        if request.heldResponse != nil {
            request.heldResponse!.body.append(body)
            request.heldBytes += body.readableBytes
            // Too much to hold: it goes out as it comes, and can no longer be retried.
            if request.heldBytes > request.retryPolicy.replayBufferBytes { releaseHeldResponse(of: request) }
            return
        }
        request.responseBodyBytes &+= body.readableBytes
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        needsFlush = true
    }

    /// Writes a held response's head and body parts.
    private func releaseHeldResponse(of request: ProxiedRequest) {
        guard let (head, parts) = request.heldResponse else { return }
        request.heldResponse = nil
        commitResponseHead(head, of: request, now: .now())
        for part in parts {
            request.responseBodyBytes &+= part.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(part))), promise: nil)
        }
        needsFlush = true
    }

    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {
        guard case .proxying(let request, let upstream) = state else { return }
        if request.heldResponse != nil {
            let grpcStatus = trailers?.first(name: "grpc-status").flatMap(Int.init)
            if let grpcStatus, grpcStatus != 0,
               retry(request, after: .response(status: 200, grpcStatus: grpcStatus, retryAfterSeconds: nil)) {
                request.heldResponse = nil
                request.heldBytes = 0
                return
            }
            releaseHeldResponse(of: request)
        }
        if request.switchingProtocols {
            startTunnel(request, upstream: upstream)
            return
        }
        request.responseComplete = true
        recordFinished(request)
        if request.requestComplete {
            finishRequest(request)
        } else {
            // The upstream answered before the whole body arrived; the rest is dropped.
            state = .discardingRequestBody
        }
        let closeAfter = request.closesConnection && downstreamProtocol == .http1
        var trailers = trailers
        if let status = request.grpcStatusFromHead {
            trailers = (trailers ?? HTTPHeaders())
            trailers!.add(contentsOf: status)
        }
        // A future only when something waits for the write (a promise is an allocation per response).
        var written: EventLoopFuture<Void>?
        if closeAfter {
            written = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
        }
        // While the rest of its body is still coming (to be dropped), the request is not over for the
        // timeouts: those bytes are no new head.
        if request.requestComplete { timeouts?.responseEnded() }
        needsFlush = false
        // Last: a write already done closes at once.
        if let written { closeAfterWrite(written) }
        deliverPendingRead()
    }

    func upstreamReadComplete() {
        flushIfNeeded()
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        guard case .proxying(let request, let upstream) = state else { return }
        // The request went nowhere: a pooled keep-alive connection the upstream had closed while it sat idle (a
        // clean close, before any byte of the response; a reset is the upstream aborting a request it had, and
        // is left to the retry policy), or an HTTP/2 stream the upstream refused (REFUSED_STREAM, or past its
        // GOAWAY's last stream id). Sent again once on another connection, even without a retry policy, when
        // the request is still at hand (no body, or a body kept for replay).
        let staleConnection = failure == .closed && upstream.exchanges > 1
        if staleConnection || failure == .refusedStream, !request.responseStarted, !request.usedTransparentRetry,
           request.replay != nil || request.bodyBytes == 0 {
            request.usedTransparentRetry = true
            if request.replay == nil { request.replay = request.requestComplete ? [.end(nil)] : [] }
            beginRetry(request, after: 0, reason: staleConnection ? ClusterStats.staleConnection : RetryPolicy.Condition.refusedStream.rawValue)
            return
        }
        request.cluster.stats.requestFailures.increment()
        if request.responseStarted {
            // Too late for a local reply: cut the response so the client sees it incomplete.
            if request.accessLogHead != nil { request.decisions.append(LocalReplyReason.upstreamReset.rawValue) }
            recordFinished(request)
            state = .closing
            context.close(promise: nil)
            return
        }
        recordOutcome(.localFailure, of: request)
        if resumeHedge(request) { return }
        if failure == .reset || failure == .closed, retry(request, after: .reset) { return }
        if failure == .refusedStream, retry(request, after: .refusedStream) { return }
        localReply(failure == .protocolError ? .upstreamProtocolError : .upstreamReset, request: request, requestComplete: request.requestComplete)
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { deliverPendingRead() }
    }

    // MARK: Tunnels

    /// Both HTTP/1.1 connections stop being HTTP: their codecs leave and a relay pair carries the bytes.
    private func startTunnel(_ request: ProxiedRequest, upstream: UpstreamExchangeHandler) {
        request.responseComplete = true
        recordFinished(request)
        state = .closing
        let context = self.context!
        let (downstreamRelay, upstreamRelay) = TunnelRelay.pair()
        do {
            context.flush()
            try upstream.switchToTunnel(upstreamRelay)
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(downstreamRelay)
            pipeline.removeHandler(try pipeline.handler(type: HTTP1ProtocolErrorHandler.self), promise: nil)
            pipeline.removeHandler(try pipeline.handler(type: HTTPResponseEncoder.self), promise: nil)
            // A tunnel has no requests to time: its bytes are the application's.
            pipeline.removeHandler(try pipeline.handler(type: DownstreamTimeoutWatcher.self), promise: nil)
            pipeline.removeHandler(context: context, promise: nil)
            // The decoder goes last: bytes the client sent after the upgrade request go on to the relay.
            pipeline.removeHandler(try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: nil)
        } catch {
            upstream.channel?.close(promise: nil)
            context.close(promise: nil)
        }
    }

    /// Whether the connection can carry another request after this one (HTTP/1.1; under overload, none does).
    private func keepsConnection(_ head: HTTPRequestHead) -> Bool {
        guard downstreamProtocol == .http1 else { return true }
        if let listener = cachedListener?.listener, listener.stats.overloadLevel >= .keepAliveDisabled { return false }
        return HTTP1Rules.keepsConnection(head)
    }

    // MARK: Timeouts and endings

    fileprivate func timerFired(_ request: ProxiedRequest) {
        let upstream: UpstreamExchangeHandler?
        switch state {
        case .leasing(let current) where current === request: upstream = nil
        case .proxying(let current, let leased) where current === request: upstream = leased
        default: return
        }
        let progress = ExchangeTimer.Progress(requestBodyBytes: request.bodyBytes, responseParts: request.responseParts,
                                              upstreamTakesBody: upstream != nil, downstreamWritable: context.channel.isWritable)
        switch request.timer.fired(now: NIODeadline.now().uptimeNanoseconds, progress: progress) {
        case .nothingDue(let action):
            apply(action, to: request)
        case .expired(let expiry):
            timedOut(expiry, request, upstream: upstream)
            if requestInFlight === request { apply(request.timer.settle(), to: request) }
        }
    }

    private func timedOut(_ expiry: ExchangeTimer.Expiry, _ request: ProxiedRequest, upstream: UpstreamExchangeHandler?) {
        switch expiry {
        case .backoffOver:
            startRetry(request)
        case .perTryTimeout:
            perTryTimeoutFired(request)
        case .routeTimeout:
            request.cluster.stats.requestFailures.increment()
            abandonUpstream()
            localReply(.upstreamTimeout, request: request, requestComplete: request.requestComplete)
        case .uploadStalled:
            // The upload made no progress for a stream-idle period: the client's stall (408), or the upstream's
            // when it stopped reading (504).
            let upstreamStalled = readPending
            if upstreamStalled { request.cluster.stats.requestFailures.increment() }
            abandonUpstream()
            localReply(upstreamStalled ? .upstreamTimeout : .requestTimeout, request: request, requestComplete: false)
        case .responseStalled:
            // Stream idle: too late for a local reply, the response is cut.
            request.cluster.stats.requestFailures.increment()
            upstream?.abort()
            request.responseComplete = true
            if request.accessLogHead != nil { request.decisions.append("stream_idle_timeout") }
            recordFinished(request)
            state = .closing
            context.close(promise: nil)
        }
    }

    private func apply(_ action: ExchangeTimer.Action, to request: ProxiedRequest) {
        switch action {
        case .none:
            break
        case .arm(let time):
            request.scheduledTimer?.cancel()
            request.scheduledTimer = try? context.eventLoop.assumeIsolated().scheduleCallback(
                at: .uptimeNanoseconds(time), handler: request)
        case .cancel:
            request.scheduledTimer?.cancel()
            request.scheduledTimer = nil
        }
    }

    private func finishRequest(_ request: ProxiedRequest) {
        state = .idle
        if !(closeWhenIdle && downstreamProtocol == .http1) { becameIdle() }
    }

    /// Stats and the access log line for a request whose response ended (relayed or cut).
    private func recordFinished(_ request: ProxiedRequest) {
        leaveCluster(request)
        let micros = (NIODeadline.now() - request.start).nanoseconds / 1000
        request.listener.stats.requestDuration.record(microseconds: UInt64(max(micros, 0)))
        logAccess(request, status: request.responseStatus)
    }

    /// Lets go of the upstream side of the current request, whatever stage it is in.
    private func abandonUpstream() {
        switch state {
        case .leasing(let request):
            request.ticket?.cancel()
            request.ticket = nil
            if !request.responseComplete { recordAbandoned(request) }
        case .proxying(let request, let upstream):
            upstream.abort()
            if !request.responseComplete { recordAbandoned(request) }
        default:
            break
        }
    }

    /// The request leaves the gauges; its duration is recorded by the local reply that usually follows.
    private func recordAbandoned(_ request: ProxiedRequest) {
        request.responseComplete = true
        leaveCluster(request)
    }

    /// The request no longer counts as active: in the listener's and cluster's gauges, and in the load the
    /// balancer sees on its endpoint. Called once per routed request.
    private func leaveCluster(_ request: ProxiedRequest) {
        // The timer ends with the request (a response that ends before its upload does not leave it armed).
        apply(request.timer.finished(), to: request)
        dropHedge(request, result: nil)
        request.cluster.stats.requestsActive.decrement()
        request.listener.stats.requestsActive.decrement()
        if request.countsAsRetry {
            request.countsAsRetry = false
            request.cluster.stats.activeRetries.decrement()
        }
        // Ended without a verdict (the client left, the route timed out): the probe slot is released too.
        releaseTry(request)
    }

    /// Answers for a request that was routed (cluster stats are already counting it).
    private func localReply(_ reason: LocalReplyReason, request: ProxiedRequest, requestComplete: Bool) {
        if !request.responseComplete {
            request.responseComplete = true
            leaveCluster(request)
        }
        // A gRPC call's local reply is a trailers-only 200 carrying the matching grpc-status.
        logAccess(request, status: request.isGRPC ? 200 : Int(reason.status.code), finalReason: reason.rawValue)
        writeLocalReply(reason, version: request.downstreamVersion, isGRPC: request.isGRPC, isHEAD: request.isHEAD,
                        keepAlive: request.keepAlive, requestComplete: requestComplete, listener: request.listener, start: request.start)
    }

    /// Answers for a request that never got as far as a cluster.
    private func localReply(_ reason: LocalReplyReason, for head: HTTPRequestHead, listener: ListenerRuntime?,
                            requestComplete: Bool, start: NIODeadline = .now()) {
        listener?.stats.requestsActive.decrement()
        logAccess(head, status: head.isGRPC ? 200 : Int(reason.status.code), reason: reason.rawValue, start: start)
        writeLocalReply(reason, version: head.version, isGRPC: head.isGRPC, isHEAD: head.method == .HEAD,
                        keepAlive: keepsConnection(head), requestComplete: requestComplete, listener: listener, start: start)
    }

    /// A route's fixed fallback response, with the bookkeeping of a local reply.
    private func fallbackReply(status: Int, headers: [HeaderValue], body: String, for head: HTTPRequestHead, listener: ListenerRuntime,
                               start: NIODeadline) {
        listener.stats.requestsActive.decrement()
        logAccess(head, status: status, reason: LocalReplyReason.fallback.rawValue, start: start)
        writeLocalReply(.fallback, version: head.version, isGRPC: false, isHEAD: head.method == .HEAD, keepAlive: keepsConnection(head),
                        requestComplete: false, listener: listener, start: start) { close in
            LocalReply.writeFallback(status: status, headers: headers, body: body, version: head.version, isHEAD: head.method == .HEAD,
                                     closeConnection: close, context: self.context, wrap: self.wrapOutboundOut)
        }
    }

    private func writeLocalReply(_ reason: LocalReplyReason, version: HTTPVersion, isGRPC: Bool, isHEAD: Bool, keepAlive: Bool,
                                 requestComplete: Bool, listener: ListenerRuntime?, start: NIODeadline,
                                 write: ((_ close: Bool) -> EventLoopFuture<Void>)? = nil) {
        configStore.stats.recordLocalReply(reason)
        let micros = (NIODeadline.now() - start).nanoseconds / 1000
        listener?.stats.requestDuration.record(microseconds: UInt64(max(micros, 0)))
        // An HTTP/1.1 connection whose request body was not read to the end cannot carry another request.
        let close = downstreamProtocol == .http1 && (!keepAlive || !requestComplete || reason == .badRequest || reason == .invalidHost || closeWhenIdle)
        state = close ? .closing : (requestComplete ? .idle : .discardingRequestBody)
        let written = write?(close) ?? LocalReply.write(reason, version: version, isGRPC: isGRPC, isHEAD: isHEAD, closeConnection: close,
                                                        context: context, wrap: wrapOutboundOut)
        timeouts?.responseEnded()
        needsFlush = false
        if close {
            queued.removeAll()
            closeAfterWrite(written)
        } else if case .idle = state {
            becameIdle()
        }
        deliverPendingRead()
    }

    // MARK: Access log

    /// The line for a routed request: its decisions, then `finalReason` (a local reply's), or `-` for none.
    private func logAccess(_ request: ProxiedRequest, status: Int, finalReason: String? = nil) {
        guard accessLog != nil, let head = request.accessLogHead else { return }
        if let finalReason { request.decisions.append(finalReason) }
        let reason = request.decisions.isEmpty ? "-" : request.decisions.joined(separator: ",")
        appendAccessLogLine(head: head, status: status, reason: reason, start: request.start, request: request)
    }

    /// The line for a request answered before it was routed to a cluster.
    private func logAccess(_ head: HTTPRequestHead, status: Int, reason: String, start: NIODeadline) {
        appendAccessLogLine(head: head, status: status, reason: reason, start: start, request: nil)
    }

    /// One access log line: what is known of the request (`head` nil: never parsed whole) and, once routed, of
    /// its tries.
    private func appendAccessLogLine(head: HTTPRequestHead?, status: Int, reason: String, start: NIODeadline?, request: ProxiedRequest?) {
        guard let accessLog else { return }
        let duration = start.map { (NIODeadline.now() - $0).nanoseconds / 1000 } ?? 0
        accessLog.buffer.append(AccessLogEntry(
            startEpochMilliseconds: WallClock.milliseconds() - duration / 1000, clientAddress: clientAddress,
            method: head?.method.rawValue ?? "-", path: head?.uri ?? "-", protocolName: head.map { HTTP1Rules.protocolName($0.version) } ?? "HTTP/1.1",
            status: status, reason: reason, route: request?.route.name, cluster: request?.cluster.name, endpoint: request?.endpoint.addressText,
            attempts: request?.tries ?? 0, durationMicroseconds: duration, upstreamServiceMicroseconds: request?.upstreamServiceMicroseconds,
            bytesReceived: request?.bodyBytes ?? 0, bytesSent: request?.responseBodyBytes ?? 0,
            requestID: (request?.upstreamHead.headers ?? head?.headers)?.first(name: "x-request-id"), userAgent: head?.headers.first(name: "user-agent")
        ), format: accessLog.format)
    }

    /// The client left (or its connection failed) while its request was in flight: logged with what it got
    /// (or `status`). Returns whether a line was written.
    @discardableResult
    private func logClientGone(as reason: String, status: Int? = nil) -> Bool {
        switch state {
        case .leasing(let request), .proxying(let request, _):
            guard !request.responseComplete, request.accessLogHead != nil else { return false }
            logAccess(request, status: status ?? request.responseStatus, finalReason: reason)
            return true
        default:
            return false
        }
    }

    /// A line for a local reply to a request never parsed whole (HTTP/1.1: a head too slow, or broken).
    private func logLocalReplyWithoutRequest(_ reason: LocalReplyReason) {
        _ = currentListener()  // its access log, if the connection's first request is the one answered
        appendAccessLogLine(head: nil, status: Int(reason.status.code), reason: reason.rawValue, start: nil, request: nil)
    }

    private func closeAfterWrite(_ written: EventLoopFuture<Void>) {
        let context = self.context!
        written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    private func flushIfNeeded() {
        guard needsFlush else { return }
        needsFlush = false
        context.flush()
    }

    private func deliverPendingRead() {
        guard readPending, mayRead else { return }
        readPending = false
        context.read()
    }
}
