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
        // The upstream that stopped reading the upload (reads held back) is the side that stalls it, not the client.
        let outcome = request.exchange.timerFired(now: NIODeadline.now().uptimeNanoseconds, upstreamStoppedReading: readPending,
                                                  downstreamWritable: downstream.isWritable)
        if case .rearm(let action) = outcome { return apply(action, to: request) }
        timedOut(outcome, request, upstream: upstream)
        if requestInFlight === request { apply(request.exchange.settleTimer(), to: request) }
    }

    private func timedOut(_ outcome: ProxyExchange.TimerOutcome, _ request: ProxiedRequest, upstream: UpstreamExchangeHandler?) {
        switch outcome {
        case .rearm:
            break
        case .placeNextTry:
            startRetry(request)
        case .perTryTimedOut:
            perTryTimeoutFired(request)
        case .localReply(let reason, let countsRequestFailure, let tryFailure):
            if let tryFailure { request.trace?.tryFailed(tryFailure) }
            if countsRequestFailure { request.cluster.stats.requestFailures.increment() }
            abandonUpstream()
            localReply(reason, request: request)
        case .cutResponse(let tryFailure):
            request.trace?.tryFailed(tryFailure)
            request.cluster.stats.requestFailures.increment()
            upstream?.abort()
            if request.accessLogHead != nil { request.decisions.append("stream_idle_timeout") }
            recordFinished(request)
            state = .closing
            downstream.close()
        }
    }

    func apply(_ action: ExchangeTimer.Action, to request: ProxiedRequest) {
        switch action {
        case .none:
            break
        case .arm(let time):
            local.timers.arm(&request.timerHandle, at: time, for: request)
        case .cancel:
            local.timers.cancel(&request.timerHandle)
        }
    }

    func finishRequest(_ request: ProxiedRequest) {
        state = .idle
        if !(closeWhenIdle && downstreamProtocol == .http1) { becameIdle() }
    }

    /// The response ended (relayed whole, or cut): the request leaves the gauges, and ends.
    func recordFinished(_ request: ProxiedRequest) {
        endForCluster(request)
        finished(.relayed, status: request.exchange.responseStatus, of: request)
    }

    /// The one end of a routed request.
    private func finished(_ ending: RequestSummary.Ending, status: Int, of request: ProxiedRequest) {
        finished(RequestSummary(ending, status: status, startedAt: request.start.uptimeNanoseconds, endedAt: Self.uptime()),
                 head: request.accessLogHead, listener: request.listener, request: request)
    }

    /// The one end of every request, however it ended (relayed, answered here, broken off, left): what records
    /// requests reads the summary here, once — the listener's and the cluster's duration histograms, the upstream
    /// response time, the local-reply counters and the access log line.
    /// `routed`: the route and cluster of a request answered before it had a `ProxiedRequest`.
    private func finished(_ summary: RequestSummary, head: HTTPRequestHead?, listener: ListenerRuntime?, request: ProxiedRequest? = nil,
                          routed: (route: Route, cluster: ClusterRuntime)? = nil) {
        let loop = local.loopIndex
        if summary.timesAResponse {
            let microseconds = UInt64(summary.durationMicroseconds)
            listener?.stats.requestDuration.record(microseconds: microseconds, loop: loop)
            let (route, cluster) = request.map { ($0.route, $0.cluster) } ?? (routed?.route, routed?.cluster)
            cluster?.stats.requestDuration.record(microseconds: microseconds, loop: loop)
            route?.stats.requestDuration.record(microseconds: microseconds, loop: loop)
            if summary.status >= 500 { route?.stats.serverErrors.increment() }
        }
        if let request, let upstream = request.upstreamServiceMicroseconds {
            let upstreamMicroseconds = UInt64(max(upstream, 0))
            request.cluster.stats.upstreamResponseTime.record(microseconds: upstreamMicroseconds, loop: loop)
            request.route.stats.upstreamResponseTime.record(microseconds: upstreamMicroseconds, loop: loop)
        }
        if let reason = summary.localReplyToCount { configStore.stats.recordLocalReply(reason) }
        if let request {
            if request.trace?.sampled == true { recordServerSpan(summary, of: request) }
        } else if let head, let listener, listener.config.tracing.mode == .participate {
            recordUnroutedSpan(summary, head: head, listener: listener)
        }
        appendAccessLogLine(summary, head: head, request: request)
    }

    // MARK: Spans

    /// A sampled request's server span, at its end (a try still running then, the client having left, ends too).
    private func recordServerSpan(_ summary: RequestSummary, of request: ProxiedRequest) {
        if let ended = request.trace?.endTry(at: summary.endedAt) { recordSpan(of: ended, request) }
        // Made whole at once (filled in afterwards, the facts were copied and destroyed on the loop), and the trace
        // read in place (bound to a name, it is copied: every string of its tries retained and released).
        let facts = serverSpanFacts(summary, head: request.upstreamHead, version: request.downstreamVersion, listener: request.listener,
                                    requestID: request.requestID, route: request.route.name, cluster: request.cluster.name,
                                    tries: request.exchange.tries.count, requestBodyBytes: request.exchange.requestBodyBytes,
                                    responseBodyBytes: request.exchange.responseBodyBytes)
        if let span = request.trace?.serverSpan(facts, epochOffset: WallClock.uptimeToUnixNanoseconds) { local.spans.append(span) }
    }

    /// A request answered before it was routed (no route, an invalid host, a fallback response…) is a server span
    /// without tries, when its trace is sampled.
    private func recordUnroutedSpan(_ summary: RequestSummary, head: HTTPRequestHead, listener: ListenerRuntime) {
        let trace = trace(joining: TracePropagation.scan(head.headers), listener: listener)
        guard trace.sampled else { return }
        let facts = serverSpanFacts(summary, head: head, version: head.version, listener: listener,
                                    requestID: head.headers.first(name: OutriggerHeader.requestID))
        local.spans.append(trace.serverSpan(facts, epochOffset: WallClock.uptimeToUnixNanoseconds))
    }

    /// What every server span says, from the head and the summary, and for a routed request its route, cluster,
    /// tries and bodies (a request not routed has none of them).
    private func serverSpanFacts(_ summary: RequestSummary, head: HTTPRequestHead, version: HTTPVersion, listener: ListenerRuntime,
                                 requestID: String?, route: String = "", cluster: String = "", tries: Int = 0,
                                 requestBodyBytes: Int = 0, responseBodyBytes: Int = 0) -> ServerSpanFacts {
        ServerSpanFacts(
            method: head.method.rawValue, target: head.uri, host: head.headers.first(name: "host") ?? "", scheme: scheme,
            protocolVersion: version.major == 2 ? "2" : "1.1", status: summary.status, listener: listener.config.name, route: route,
            cluster: cluster, reason: summary.finalReason, tries: tries, requestBodyBytes: requestBodyBytes,
            responseBodyBytes: responseBodyBytes, clientAddress: clientAddress, requestID: requestID,
            startedAt: summary.startedAt ?? summary.endedAt, endedAt: summary.endedAt)
    }

    /// An ended try's client span.
    func recordSpan(of ended: consuming TrySpan, _ request: ProxiedRequest) {
        let span = request.trace?.clientSpan(consume ended, method: request.upstreamHead.method.rawValue, cluster: request.cluster.name,
                                             epochOffset: WallClock.uptimeToUnixNanoseconds)
        if let span { local.spans.append(span) }
    }

    /// The request in flight, unless its response ended, ends here (the client left, or its connection failed),
    /// with what it got (or `status`). Returns whether there was one.
    @discardableResult
    func endInFlight(_ ending: RequestSummary.Ending, status: Int? = nil) -> Bool {
        switch state {
        case .leasing(let request), .proxying(let request, _):
            guard !request.exchange.progress.ended else { return false }
            finished(ending, status: status ?? request.exchange.responseStatus, of: request)
            return true
        default:
            return false
        }
    }

    /// A request never parsed whole (HTTP/1.1: a head too slow, or broken) ends.
    func endUnparsed(_ ending: RequestSummary.Ending, status: Int) {
        _ = currentListener()  // its access log, if the connection's first request is the one answered
        finished(RequestSummary(ending, status: status, startedAt: nil, endedAt: 0), head: nil, listener: nil)
    }

    /// Lets go of the upstream side of the current request, whatever stage it is in.
    func abandonUpstream() {
        switch state {
        case .leasing(let request):
            request.ticket?.cancel()
            request.ticket = nil
            endForCluster(request)
        case .proxying(let request, let upstream):
            upstream.abort()
            endForCluster(request)
        default:
            break
        }
    }

    /// The exchange ends for its cluster, once (relayed, cut, answered here, or abandoned): its timer stops and it
    /// leaves the gauges. Its duration is recorded by the summary of how it ended.
    private func endForCluster(_ request: ProxiedRequest) {
        let (first, timer) = request.exchange.end()
        guard first else { return }
        apply(timer, to: request)
        leaveCluster(request)
    }

    /// The request no longer counts as active: in the listener's and cluster's gauges, and in the load the
    /// balancer sees on its endpoint. Called once per routed request.
    private func leaveCluster(_ request: ProxiedRequest) {
        dropHedge(request, result: nil)
        request.cluster.stats.requestsActive.decrement()
        request.listener.stats.requestsActive.decrement()
        if request.exchange.leftCluster() { request.cluster.stats.activeRetries.decrement() }
        // Ended without a verdict (the client left, the route timed out): the probe slot is released too.
        releaseTry(request)
    }

    /// Answers for a request that was routed (cluster stats are already counting it); an answer before the request's
    /// end drops the rest of it, or closes the connection (`HTTP1Rules.closesAfterLocalReply`).
    func localReply(_ reason: LocalReplyReason, request: ProxiedRequest) {
        endForCluster(request)
        // A gRPC call's local reply is a trailers-only 200 carrying the matching grpc-status.
        finished(.localReply(reason), status: request.isGRPC ? 200 : Int(reason.status.code), of: request)
        writeLocalReply(reason, version: request.downstreamVersion, isGRPC: request.isGRPC, isHEAD: request.isHEAD,
                        keepAlive: request.keepAlive, requestComplete: request.exchange.progress.requestComplete)
    }

    /// Answers for a request that never got as far as an endpoint (`routed`: the route and cluster it got to).
    func localReply(_ reason: LocalReplyReason, for head: HTTPRequestHead, facts: RequestHeadFacts, listener: ListenerRuntime?,
                    requestComplete: Bool, start: NIODeadline = .now(), routed: (Route, ClusterRuntime)? = nil) {
        listener?.stats.requestsActive.decrement()
        finished(RequestSummary(.localReply(reason), status: facts.isGRPC ? 200 : Int(reason.status.code), startedAt: start.uptimeNanoseconds,
                                endedAt: Self.uptime()), head: head, listener: listener, routed: routed)
        writeLocalReply(reason, version: head.version, isGRPC: facts.isGRPC, isHEAD: head.method.isHEAD,
                        keepAlive: keepsConnection(facts), requestComplete: requestComplete)
    }

    /// A route's fixed fallback response, with the bookkeeping of a local reply.
    func fallbackReply(status: Int, headers: [HeaderValue], body: String, for head: HTTPRequestHead, facts: RequestHeadFacts,
                       listener: ListenerRuntime,
                               start: NIODeadline) {
        listener.stats.requestsActive.decrement()
        finished(RequestSummary(.localReply(.fallback), status: status, startedAt: start.uptimeNanoseconds, endedAt: Self.uptime()),
                 head: head, listener: listener)
        writeLocalReply(.fallback, version: head.version, isGRPC: false, isHEAD: head.method.isHEAD, keepAlive: keepsConnection(facts),
                        requestComplete: false) { close in
            LocalReply.writeFallback(status: status, headers: headers, body: body, version: head.version, isHEAD: head.method.isHEAD,
                                     closeConnection: close, to: self.downstream, eventLoop: self.local.eventLoop)
        }
    }

    func writeLocalReply(_ reason: LocalReplyReason, version: HTTPVersion, isGRPC: Bool, isHEAD: Bool, keepAlive: Bool,
                         requestComplete: Bool, write: ((_ close: Bool) -> EventLoopFuture<Void>)? = nil) {
        let close = downstreamProtocol == .http1
            && HTTP1Rules.closesAfterLocalReply(reason, keepAlive: keepAlive, requestComplete: requestComplete, quiescing: closeWhenIdle)
        state = close ? .closing : (requestComplete ? .idle : .discardingRequestBody)
        let written = write?(close) ?? LocalReply.write(reason, version: version, isGRPC: isGRPC, isHEAD: isHEAD, closeConnection: close,
                                                        to: downstream, eventLoop: local.eventLoop)
        http1Connection?.responseEnded()
        needsFlush = false
        if close {
            http1Connection?.dropQueuedRequests()
            closeAfterWrite(written)
        } else if case .idle = state {
            becameIdle()
        }
        deliverPendingRead()
    }

    // MARK: Access log

    /// The line of an ended request, if its listener has an access log: what is known of it (`head` nil: never
    /// parsed whole) and, once routed, of its tries — its decisions, then the summary's final reason.
    private func appendAccessLogLine(_ summary: RequestSummary, head: HTTPRequestHead?, request: ProxiedRequest?) {
        guard let accessLog else { return }
        var reason = summary.finalReason ?? "-"
        if let request {
            // Routed: logged when its listener had an access log then (the head was kept for it).
            guard request.accessLogHead != nil else { return }
            if let final = summary.finalReason { request.decisions.append(final) }
            reason = request.decisions.isEmpty ? "-" : request.decisions.joined(separator: ",")
        }
        let duration = summary.durationMicroseconds
        accessLog.buffer.append(AccessLogEntry(
            startEpochMilliseconds: WallClock.milliseconds() - duration / 1000, clientAddress: clientAddress,
            method: head?.method.rawValue ?? "-", path: head?.uri ?? "-", protocolName: head.map { HTTP1Rules.protocolName($0.version) } ?? "HTTP/1.1",
            status: summary.status, reason: reason, route: request?.route.name, cluster: request?.cluster.name, endpoint: request?.endpoint.addressText,
            attempts: request?.exchange.tries.count ?? 0, durationMicroseconds: duration, upstreamServiceMicroseconds: request?.upstreamServiceMicroseconds,
            bytesReceived: request?.exchange.requestBodyBytes ?? 0, bytesSent: request?.exchange.responseBodyBytes ?? 0,
            requestID: request.map(\.requestID) ?? head?.headers.first(name: OutriggerHeader.requestID), userAgent: head?.headers.first(name: "user-agent")
        ), format: accessLog.format)
    }

    func closeAfterWrite(_ written: EventLoopFuture<Void>) {
        let downstream = self.downstream
        written.assumeIsolated().whenComplete { _ in downstream.close() }
    }

    func flushIfNeeded() {
        guard needsFlush else { return }
        needsFlush = false
        downstream.flush()
    }

    func deliverPendingRead() {
        guard readPending, mayRead else { return }
        readPending = false
        downstream.read()
    }
}
