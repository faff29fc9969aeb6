import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// Which wire protocol a downstream request arrived on.
enum DownstreamProtocol {
    case http1
    case http2
}

/// The exchanges of an HTTP/1.1 connection (driven by `HTTP1DownstreamConnection`) or of one HTTP/2 stream (driven
/// by `HTTP2DownstreamConnection`): routes each request, leases an upstream on this event loop and relays both
/// ways with backpressure, or answers locally with a reason.
final class ProxyRequestHandler: UpstreamExchangeDelegate {

    enum State {
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

    /// The listener, looked up in the running snapshot (shared with the connection's other exchanges).
    let listenerLookup: ListenerLookup
    /// The listener and its access log as this exchange last found them: an HTTP/2 stream keeps what it was routed
    /// with through a reload, whatever the connection's later streams find.
    private(set) var foundListener: ListenerRuntime?
    private(set) var accessLog: (buffer: AccessLogBuffer, format: AccessLogConfig.Format)?
    let configStore: ConfigStore
    let local: LoopLocalState
    let downstreamProtocol: DownstreamProtocol
    let scheme: String
    var state: State = .idle {
        didSet { assert(stateAgreesWithExchange, "the handler's state and its request's exchange disagree") }
    }
    /// Where responses go: set when the handler joins its pipeline or its stream opens.
    var downstream: DownstreamSide = .detached
    var clientAddress: String?
    var readPending = false
    var needsFlush = false
    /// HTTP/1.1: the connection that drives this exchange and queues its pipelined requests (set while attached).
    private(set) var http1Connection: HTTP1DownstreamConnection?
    /// Shutdown asked this connection to finish: it closes once the request in flight is answered.
    var closeWhenIdle = false
    /// HTTP/2: why the stream's head is malformed for a proxy (a `host` naming another authority than
    /// `:authority`, a field value HTTP/1.1 cannot carry), answered with that reason.
    var malformedHTTP2Head: LocalReplyReason?
    /// HTTP/2: the connection's frame watcher (graceful GOAWAY under overload).
    private let http2Connection: HTTP2ConnectionWatcher?
    /// HTTP/2: the stream's send timeout.
    private var sendStall = SendStallTimer()

    /// The request the parser broke off was logged (its 400/431 needs no line of its own).
    private var loggedProtocolError = false

    init(listener: ListenerLookup, configStore: ConfigStore, local: LoopLocalState, downstreamProtocol: DownstreamProtocol, scheme: String,
         http2Connection: HTTP2ConnectionWatcher? = nil) {
        self.http2Connection = http2Connection
        self.listenerLookup = listener
        self.configStore = configStore
        self.local = local
        self.downstreamProtocol = downstreamProtocol
        self.scheme = scheme
    }

    func attach(_ downstream: DownstreamSide, clientAddress: String?, http1Connection: HTTP1DownstreamConnection? = nil) {
        self.downstream = downstream
        self.clientAddress = clientAddress
        self.http1Connection = http1Connection
    }

    /// The connection handler (or stream) holds this handler: keeping it past removal would leak both.
    func detach() {
        sendStall.cancel()
        // A request still in the state would keep this handler alive through its owner.
        requestInFlight?.owner = nil
        downstream = .detached
        http1Connection = nil  // the connection holds this exchange: the cycle ends here
    }

    // MARK: Downstream events

    /// A part of the request in flight, or a head that starts the next (HTTP/1.1 pipelining is the connection's:
    /// it hands on a head only while `isIdle`). Handed on, not copied, down to the head's upstream copy
    /// (`consuming`): its headers stay uniquely owned.
    func received(_ part: consuming HTTPServerRequestPart) {
        switch consume part {
        case .head(let head):
            requestHead(head)
        case .body(let body):
            requestBody(body)
        case .end(let trailers):
            requestEnd(trailers)
        }
    }

    /// The request in flight is answered: the connection starts on the requests it queued, or it closes if
    /// shutdown asked for it.
    func becameIdle() {
        if closeWhenIdle {
            state = .closing
            downstream.close()
            return
        }
        http1Connection?.exchangeBecameIdle()
    }

    /// Debug builds check it at every change of state: the shell holds an upstream exactly when the exchange is relaying,
    /// and a hedged connection exactly when the exchange holds a hedged try.
    private var stateAgreesWithExchange: Bool {
        switch state {
        case .leasing(let request):
            request.exchange.stage != .relaying && (request.hedge == nil) == (request.exchange.hedged == nil)
        case .proxying(let request, _):
            request.exchange.stage == .relaying && (request.hedge == nil) == (request.exchange.hedged == nil)
        case .idle, .discardingRequestBody, .closing:
            true
        }
    }

    /// Between requests: the next head may come.
    var isIdle: Bool {
        if case .idle = state { return true }
        return false
    }

    /// A request is being answered (or its unread body dropped): a head arriving now is a pipelined one.
    var isBusy: Bool {
        switch state {
        case .idle, .closing: return false
        case .leasing, .proxying, .discardingRequestBody: return true
        }
    }

    var isClosing: Bool {
        if case .closing = state { return true }
        return false
    }

    /// HTTP/1.1: the connection handed on queued parts outside a read burst: what they wrote goes out now.
    func replayEnded() {
        if case .proxying(_, let upstream) = state { upstream.flush() }
        flushIfNeeded()
        deliverPendingRead()
    }

    /// HTTP/1.1: the parser rejected a request and the connection answered it (400 or 431), for the access log.
    func protocolErrorAnswered(_ reason: LocalReplyReason) {
        // The request the parser broke off, if it was in flight, was logged by `failed`.
        if !loggedProtocolError { endUnparsed(.answeredByCodec(reason), status: Int(reason.status.code)) }
    }

    /// HTTP/1.1: shutdown asks the connection to finish: between requests it closes at once (unless a queued one is
    /// about to start), else its response says `connection: close` and the connection closes after it.
    func quiesce(requestsQueued: Bool) {
        closeWhenIdle = true
        if case .idle = state, !requestsQueued {
            state = .closing
            downstream.close()
        }
    }

    /// The end of a burst of request parts.
    func readComplete() {
        // A held head that saw neither body nor end in this burst has a body coming: send it chunked now,
        // so a client that waits for the response before sending (gRPC streaming) is not stalled.
        switch state {
        case .leasing(let request):
            if let released = request.exchange.readBurstEnded() { headReleased(released, of: request, to: nil) }
        case .proxying(let request, let upstream):
            if let released = request.exchange.readBurstEnded() { headReleased(released, of: request, to: upstream) }
        default:
            break
        }
        if case .proxying(_, let upstream) = state { upstream.flush() }
        flushIfNeeded()
    }

    /// HTTP/2: the stream holds request parts until this handler takes more.
    func holdingReads() {
        readPending = true
    }

    /// Reading pauses while no upstream is leased yet, while the upstream cannot take more, and while the
    /// connection's pipelining queue is full.
    var mayRead: Bool {
        if let http1Connection, !http1Connection.queueHasRoom { return false }
        switch state {
        case .leasing: return false
        case .proxying(_, let upstream): return upstream.isWritable
        default: return true
        }
    }

    func writabilityChanged() {
        let isWritable = downstream.isWritable
        if downstreamProtocol == .http2 {
            // A stream that takes nothing (its client gives no flow-control credit back) is reset after the
            // send timeout; a whole connection's stall is `SendTimeoutHandler`'s.
            let timeout = foundListener?.config.sendTimeout ?? ListenerConfig.defaultSendTimeout
            sendStall.writabilityChanged(to: isWritable, timeout: .nanoseconds(timeout.nanoseconds), eventLoop: local.eventLoop) {
                [self] in self.streamSendTimedOut()  // strong: cancelled by `detach`; weak would cost a side table (see `ProxiedRequest.owner`)
            }
        }
        if isWritable, case .proxying(_, let upstream) = state {
            upstream.downstreamBecameWritable()
        }
    }

    private func streamSendTimedOut() {
        guard sendStall.firedStalled(isActive: downstream.isActive, isWritable: downstream.isWritable, stats: currentListener()?.stats)
        else { return }
        sendTimedOut()
        downstream.close()
    }

    /// The client took nothing for the send timeout and is cut next: the exchange ends here, logged as such.
    func sendTimedOut() {
        if case .proxying(let request, let upstream) = state, !request.exchange.progress.ended {
            upstream.abort()
            if request.accessLogHead != nil { request.decisions.append("send_timeout") }
            recordFinished(request)
        }
        state = .closing
    }

    /// The parser (HTTP/1.1) or the stream (HTTP/2) failed.
    func failed(_ error: Error) {
        if downstreamProtocol == .http1, let parserError = error as? HTTP1ParseError {
            // `HTTP1DownstreamConnection` answers it: logged with the answer's reason.
            let reason: LocalReplyReason = parserError == .headTooLarge ? .headersTooLarge : .badRequest
            loggedProtocolError = endInFlight(.answeredByCodec(reason), status: Int(reason.status.code))
        } else {
            endInFlight(.clientGone(reason: "downstream_error"))
        }
        abandonUpstream()
        state = .closing
        // HTTP/1.1: `HTTP1DownstreamConnection` drops what it queued, answers and closes. HTTP/2: closing the stream resets it.
        if downstreamProtocol == .http2 { downstream.close() }
    }

    /// The connection (HTTP/1.1) or the stream (HTTP/2) closed.
    func inactive() {
        endInFlight(.clientGone(reason: configStore.drainDeadlinePassed.load(ordering: .relaxed) ? "drain_timeout" : "client_closed"))
        abandonUpstream()
        state = .closing
    }

    /// The client is still sending a request's head past `requestHeadersTimeout` (nothing is in flight):
    /// 408 `request_timeout`, and the connection closes.
    func requestHeadersTimedOut() {
        switch state {
        case .idle, .discardingRequestBody: break
        case .leasing, .proxying, .closing: return
        }
        endUnparsed(.localReply(.requestTimeout), status: Int(LocalReplyReason.requestTimeout.status.code))
        writeLocalReply(.requestTimeout, version: .http1_1, isGRPC: false, isHEAD: false, keepAlive: false, requestComplete: false)
    }

    private func requestHead(_ head: consuming HTTPRequestHead) {
        http1Connection?.headReceived()
        guard case .idle = state else {
            // Heads arriving mid-request are queued by the connection, so this cannot happen; close if it does.
            downstream.close()
            return
        }
        let facts = RequestHeadFacts(head)
        guard let listener = currentListener() else {
            localReply(.draining, for: head, facts: facts, listener: nil, requestComplete: false)
            return
        }
        let start = NIODeadline.now()
        listener.stats.requestsTotal.increment()
        listener.stats.requestsActive.increment()
        let routing = RequestRouting.route(
            head, facts: facts, on: listener, malformedHTTP2: malformedHTTP2Head, clientAddress: clientAddress, now: start.uptimeNanoseconds,
            random: { self.local.random.next() },
            pick: { cluster, hashKey in self.local.pickEndpoint(in: cluster, now: start, hashKey: hashKey) },
            admit: { endpoint, cluster in self.local.admitThroughBreaker(endpoint, in: cluster, now: start, tried: []) }
        )
        // Read from the routed request where used: bound out of it in one tuple, its optional `set-cookie` was copied
        // and destroyed through the generic witness (~0.3k instructions a request).
        let routed: RoutedRequest
        switch consume routing {
        case .routed(let found):
            routed = found
        case .localReply(let reason):
            // HTTP/2 under overload: the client is told to take its next streams elsewhere.
            if reason == .overload { http2Connection?.goAwayGracefully() }
            localReply(reason, for: head, facts: facts, listener: listener, requestComplete: false, start: start)
            return
        case .routedLocalReply(let reason, let route, let cluster):
            localReply(reason, for: head, facts: facts, listener: listener, requestComplete: false, start: start, routed: (route, cluster))
            return
        case .fallbackResponse(let status, let headers, let body):
            fallbackReply(status: status, headers: headers, body: body, for: head, facts: facts, listener: listener, start: start)
            return
        }
        let route = routed.route, cluster = routed.cluster, endpoint = routed.endpoint, viaFallback = routed.viaFallback

        // Override headers: honoured from the local service (outbound, or a trusted inbound listener), never
        // forwarded.
        var overrides: RequestOverrides?
        let overridesPresent = facts.hasOverrideFields
        if overridesPresent && listener.config.honoursOverrideHeaders {
            let parsed = RequestOverrides(head.headers)
            if parsed.malformed > 0 { listener.stats.malformedOverrideHeaders.increment(by: parsed.malformed) }
            overrides = parsed
        }
        let retryPolicy = overrides.map { $0.applied(to: route.retries) } ?? route.retries
        // The sidecar answers `100-continue` itself, once it knows the request will be forwarded.
        let expectsContinue = facts.expectsContinue
        // HTTP/1.1 Upgrade (WebSocket…) is tunnelled to an HTTP/1.1 upstream; `h2c` never is (RFC 9113 §3.1).
        let upgrade = facts.tunnelableUpgrade(http1BothSides: downstreamProtocol == .http1 && cluster.upstreamProtocol == .http1)
        let holdHead = downstreamProtocol == .http2 && cluster.upstreamProtocol == .http1 && !facts.hasContentLength
        // The access log keeps the head as it came (its headers are then copied once, when the upstream head changes).
        let headForLog = accessLog != nil ? copy head : nil
        let request = ProxiedRequest(
            listener: listener, route: route, retryPolicy: retryPolicy, routeTimeout: overrides?.timeout ?? route.timeout ?? cluster.timeout,
            cluster: cluster, endpoint: endpoint, keepAlive: keepsConnection(facts), isGRPC: facts.isGRPC, head: head, headHeldForFraming: holdHead,
            start: start, upgrade: upgrade
        )
        // The upstream head is built in place, in the request, from the downstream head it took: its headers (read
        // with room for what is added) are changed without a copy, unless the access log keeps the original.
        if overridesPresent { for name in RequestOverrides.names { request.upstreamHead.headers.remove(name: name) } }
        if expectsContinue { request.upstreamHead.headers.remove(name: "expect") }
        // The route's own header rules may put anything on the upstream head: what it may carry is looked for then.
        let routeChangesHeaders = !route.requestHeaders.isEmpty
        request.mayCarryExpectedTimeout = facts.hasOverrideFields || routeChangesHeaders
        request.mayCarryConnectionField = upgrade != nil || routeChangesHeaders
        // Unless the head may carry a caller's (or the route's rules), the first try's expected timeout goes after the
        // head's fields with the proxy's other own fields. The request has not ended: no clock read.
        if !request.mayCarryExpectedTimeout {
            request.appendedFields.expectedTimeout = expectedTimeout(of: request, now: start.uptimeNanoseconds, callerSaid: nil)
        }
        // A trace is joined from the upstream head as prepared (a route's own header changes may add a trace header
        // the downstream head did not have). Without any field to read, it starts here.
        let participates = listener.config.tracing.mode == .participate
        let mayHaveTraceFields = facts.hasTraceFields || routeChangesHeaders
        if participates && !mayHaveTraceFields {
            // No field to read, the force header among them: a root, sampled at the listener's ratio.
            request.trace = ExchangeTrace(rootSampleRatio: listener.config.tracing.sampleRatio, random: &local.random)
        }
        request.upstreamRequestID = ProxyHeaders.prepareUpstreamRequest(
            &request.upstreamHead, facts: facts, route: route, clientAddress: clientAddress, scheme: scheme,
            addVia: listener.config.addVia, appending: &request.appendedFields, random: &local.random
        )
        if participates && mayHaveTraceFields { joinTrace(request, listener: listener) }
        if let upgrade {
            request.upstreamHead.headers.replaceOrAdd(name: "connection", value: "upgrade")
            request.upstreamHead.headers.replaceOrAdd(name: "upgrade", value: upgrade)
        }
        request.setCookie = routed.setCookie
        request.viaFallback = viaFallback
        if let headForLog {
            request.accessLogHead = headForLog
            if viaFallback { request.decisions.append("fallback:\(cluster.name)") }
        }
        request.owner = self
        apply(request.exchange.settleTimer(), to: request)
        if expectsContinue {
            downstream.write(.head(HTTPResponseHead(version: request.downstreamVersion, status: .continue)))
            needsFlush = true
        }
        cluster.stats.requestsActive.increment()
        local.requestStarted(in: cluster, to: endpoint, now: start)
        if request.exchange.tries.mayRetry {
            request.upstreamHead.headers.remove(name: "x-outrigger-attempt")
            request.upstreamHead.headers.addOwn(name: "x-outrigger-attempt", value: "1")
        }
        state = .leasing(request)
        if case .http2(let stream) = downstream, stream.resetBeforeItsHead {
            // The client reset the stream in the read that opened it (rapid reset): the stream closes as soon
            // as this returns, and nothing goes upstream, no request and no connection.
            return
        }
        startAttempt(request)
    }

    /// The request joins its caller's trace (or starts one) with a server span of ours; `baggage` is kept within
    /// its limits, and the force header, honoured from a trusted side only, never goes on.
    private func joinTrace(_ request: ProxiedRequest, listener: ListenerRuntime) {
        let scan = TracePropagation.scan(request.upstreamHead.headers)
        request.trace = trace(joining: scan, listener: listener)
        if scan.force != nil { request.upstreamHead.headers.remove(name: OutriggerHeader.forceTrace) }
        guard scan.hasBaggage else { return }
        // Every `baggage` header's members, split at commas.
        let members = request.upstreamHead.headers[canonicalForm: TracePropagation.baggage]
        guard members.count > TracePropagation.maxBaggageMembers || TracePropagation.joinedLength(members) > TracePropagation.maxBaggageBytes
        else { return }
        request.upstreamHead.headers.remove(name: TracePropagation.baggage)
        if let kept = TracePropagation.trimmedBaggage(members.joined(separator: ",")) {
            request.upstreamHead.headers.add(name: TracePropagation.baggage, value: kept)
        }
    }

    /// The trace a request on `listener` joins (or starts): its caller's sampling decision, else the listener's
    /// ratio, or the force header from a trusted side.
    func trace(joining scan: TracePropagation.Scan, listener: ListenerRuntime) -> ExchangeTrace {
        // Read from the listener in place: its config bound to a name would be copied whole.
        ExchangeTrace(incoming: scan.trace, sampleRatio: listener.config.tracing.sampleRatio,
                      forced: scan.force == "1" && listener.config.honoursOverrideHeaders, random: &local.random)
    }

    /// This listener in the running snapshot.
    func currentListener() -> ListenerRuntime? {
        guard let listener = listenerLookup.current() else { return nil }
        if listener !== foundListener {
            foundListener = listener
            accessLog = listenerLookup.accessLog
        }
        return listener
    }

    private func requestBody(_ body: ByteBuffer) {
        switch state {
        case .leasing(let request), .proxying(let request, _):
            if !request.exchange.requestBodyArrived(bytes: body.readableBytes, limit: request.listener.config.maxRequestBodyBytes) {
                abandonUpstream()
                localReply(.bodyTooLarge, request: request)
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
            // The route timeout and the try's run from here.
            apply(request.exchange.requestEnded(now: NIODeadline.now().uptimeNanoseconds), to: request)
            forward(.end(trailers), of: request)
            if request.exchange.progress.ended { finishRequest(request) }
        case .discardingRequestBody:
            state = .idle
            http1Connection?.responseEnded()
            becameIdle()
            deliverPendingRead()
        case .idle, .closing:
            break
        }
    }

    /// Sends a request part upstream, or keeps it until an upstream is leased.
    private func forward(_ part: HTTPClientRequestPart, of request: ProxiedRequest) {
        var upstream: UpstreamExchangeHandler?
        if case .proxying(_, let leased) = state { upstream = leased }
        if let released = request.exchange.forward(part) { headReleased(released, of: request, to: upstream) }
        upstream?.send(part)
    }

    /// A head held for framing is let go, chunked when a body follows: sent now to a leased upstream, else with the lease.
    private func headReleased(_ released: RequestRelay.ReleasedHead, of request: ProxiedRequest, to upstream: UpstreamExchangeHandler?) {
        if released.chunked { request.upstreamHead.headers.add(name: "transfer-encoding", value: "chunked") }
        if released.sendNow, let upstream { sendHead(of: request, to: upstream) }
    }

}
