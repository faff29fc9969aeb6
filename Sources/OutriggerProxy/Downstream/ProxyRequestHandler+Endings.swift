import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// How a request ends: its timer's expiries, local replies, the gauges it leaves and its access log line.
extension ProxyRequestHandler {
    // MARK: Timeouts and endings

    func timerFired(_ request: ProxiedRequest) {
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

    func apply(_ action: ExchangeTimer.Action, to request: ProxiedRequest) {
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

    func finishRequest(_ request: ProxiedRequest) {
        state = .idle
        if !(closeWhenIdle && downstreamProtocol == .http1) { becameIdle() }
    }

    /// Stats and the access log line for a request whose response ended (relayed or cut).
    func recordFinished(_ request: ProxiedRequest) {
        leaveCluster(request)
        let micros = (NIODeadline.now() - request.start).nanoseconds / 1000
        request.listener.stats.requestDuration.record(microseconds: UInt64(max(micros, 0)))
        logAccess(request, status: request.responseStatus)
    }

    /// Lets go of the upstream side of the current request, whatever stage it is in.
    func abandonUpstream() {
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
    func localReply(_ reason: LocalReplyReason, request: ProxiedRequest, requestComplete: Bool) {
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
    func localReply(_ reason: LocalReplyReason, for head: HTTPRequestHead, listener: ListenerRuntime?,
                            requestComplete: Bool, start: NIODeadline = .now()) {
        listener?.stats.requestsActive.decrement()
        logAccess(head, status: head.isGRPC ? 200 : Int(reason.status.code), reason: reason.rawValue, start: start)
        writeLocalReply(reason, version: head.version, isGRPC: head.isGRPC, isHEAD: head.method == .HEAD,
                        keepAlive: keepsConnection(head), requestComplete: requestComplete, listener: listener, start: start)
    }

    /// A route's fixed fallback response, with the bookkeeping of a local reply.
    func fallbackReply(status: Int, headers: [HeaderValue], body: String, for head: HTTPRequestHead, listener: ListenerRuntime,
                               start: NIODeadline) {
        listener.stats.requestsActive.decrement()
        logAccess(head, status: status, reason: LocalReplyReason.fallback.rawValue, start: start)
        writeLocalReply(.fallback, version: head.version, isGRPC: false, isHEAD: head.method == .HEAD, keepAlive: keepsConnection(head),
                        requestComplete: false, listener: listener, start: start) { close in
            LocalReply.writeFallback(status: status, headers: headers, body: body, version: head.version, isHEAD: head.method == .HEAD,
                                     closeConnection: close, context: self.context, wrap: self.wrapOutboundOut)
        }
    }

    func writeLocalReply(_ reason: LocalReplyReason, version: HTTPVersion, isGRPC: Bool, isHEAD: Bool, keepAlive: Bool,
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
    func logClientGone(as reason: String, status: Int? = nil) -> Bool {
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
    func logLocalReplyWithoutRequest(_ reason: LocalReplyReason) {
        _ = currentListener()  // its access log, if the connection's first request is the one answered
        appendAccessLogLine(head: nil, status: Int(reason.status.code), reason: reason.rawValue, start: nil, request: nil)
    }

    func closeAfterWrite(_ written: EventLoopFuture<Void>) {
        let context = self.context!
        written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func flushIfNeeded() {
        guard needsFlush else { return }
        needsFlush = false
        context.flush()
    }

    func deliverPendingRead() {
        guard readPending, mayRead else { return }
        readPending = false
        context.read()
    }
}
