import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// The upstream side: leases, the response relayed (or held), and tunnels.
extension ProxyRequestHandler {
    // MARK: Upstream lease

    func upstreamLeased(_ upstream: UpstreamExchangeHandler, for leased: ProxiedRequest) {
        guard case .leasing(let request) = state, request === leased else {
            // The request ended while we waited; the connection goes back unused.
            upstream.releaseUnused()
            return
        }
        request.ticket = nil
        let (sendsHead, waiting) = request.exchange.leased()
        state = .proxying(request, upstream)
        upstream.begin(self)
        if sendsHead { sendHead(of: request, to: upstream) }
        for part in waiting { upstream.send(part) }
        upstream.flush()
        deliverPendingRead()
    }

    /// The request's head as its try sends it: with the proxy's own fields that go after the head's.
    func sendHead(of request: ProxiedRequest, to upstream: UpstreamExchangeHandler) {
        upstream.sendHead(request.upstreamHead, appending: request.appendedFields, mayHaveConnectionField: request.mayCarryConnectionField)
    }

    func upstreamLeaseFailed(_ reason: LocalReplyReason, for leased: ProxiedRequest) {
        guard case .leasing(let request) = state, request === leased else { return }
        request.ticket = nil
        request.trace?.tryFailed(reason.rawValue)
        follow(decide(request) { exchange, random, refusal in exchange.tryFailed(.leaseFailed(reason), random: &random, budgetRefusal: refusal) }, of: request)
    }

    // MARK: Upstream exchange

    var downstreamIsWritable: Bool { downstream.isWritable }

    func upstreamResponseHead(_ head: consuming HTTPResponseHead, facts: ResponseHeadFacts) {
        guard case .proxying(let request, _) = state else { return }
        let status = Int(head.status.code)
        let upgradeRequested = request.upgrade != nil
        let reading = request.withExchange { $0.readResponseHead(status: status, upgradeRequested: upgradeRequested) }
        if reading == .informational { return }
        let now = NIODeadline.now()
        request.trace?.tryAnswered(status: status)
        local.responseStarted(in: request.cluster, from: request.endpoint, sentAt: request.start, now: now)
        if reading == .unaskedUpgrade {
            request.cluster.stats.requestFailures.increment()
            abandonUpstream()
            localReply(.upstreamProtocolError, request: request)
            return
        }
        request.cluster.stats.recordResponse(status: status)
        recordOutcome(AttemptResult(status: status), of: request)
        // Only a request that may be tried again (or whose hedged try races) asks whether this answer is the one.
        if reading == .answer(asksTries: true) {
            let outcome = AttemptOutcome(responseHead: copy head, isGRPC: request.isGRPC)
            let verdict = decide(request) { exchange, random, refusal in exchange.responseHead(outcome, random: &random, budgetRefusal: refusal) }
            if verdict.next == .holdResponse {
                // Held until its trailers say whether to retry (up to the replay buffer).
                if verdict.dropsHedge { dropHedge(request, result: nil) }
                request.exchange.holdResponse(head)
                return
            }
            if verdict.next != .commitResponse { return follow(verdict, of: request) }
        }
        commitResponseHead(consume head, facts: facts, of: request, now: now)
    }

    /// From here the response goes to the client: timers switch to watching the body, and the head is written.
    /// - Parameter facts: what the head's parse knows of its fields: one it says is absent is not looked for.
    private func commitResponseHead(_ head: consuming HTTPResponseHead, facts: ResponseHeadFacts, of request: ProxiedRequest, now: NIODeadline) {
        dropHedge(request, result: nil)
        // The status read once: the head's getter maps its code to an enum each time.
        let status = Int(head.status.code)
        let switchingProtocols = status == 101
        // The timer watches the body's progress now (stream idle); a tunnel's bytes are the application's.
        apply(request.exchange.responseCommitted(status: status, now: now.uptimeNanoseconds, tunnel: switchingProtocols), to: request)
        // The upstream's `upgrade`, before the hop-by-hop headers go.
        let upgradeOffered = switchingProtocols ? head.headers.first(name: "upgrade") : nil
        // Taken, not copied: the headers are changed in place (a copy would cost an array and a retain per field).
        var response = consume head
        if response.version != request.downstreamVersion { response.version = request.downstreamVersion }
        if facts.mayHaveOwnFields, let drain = response.headers.first(name: EndpointDrain.header) {
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
        request.upstreamServiceMicroseconds = elapsedMicroseconds
        var own = AppendedResponseFields()
        ProxyHeaders.prepareDownstreamResponse(&response, facts: facts, route: request.route, upstreamServiceMilliseconds: elapsedMicroseconds / 1000,
                                               addVia: request.listener.config.addVia, appending: &own)
        if switchingProtocols {
            request.switchingProtocols = true
            response.headers.replaceOrAdd(name: "connection", value: "upgrade")
            response.headers.replaceOrAdd(name: "upgrade", value: upgradeOffered ?? request.upgrade ?? "")
        }
        if downstreamProtocol == .http1 {
            request.closesConnection = HTTP1Rules.frame(&response, answersHEAD: request.isHEAD, clientVersion: request.downstreamVersion,
                                                        keepAlive: request.keepAlive, closing: closeWhenIdle,
                                                        hasContentLength: facts.contentLengthAfterPreparing(by: request.route))
        }
        if request.isGRPC && downstreamProtocol == .http2 { request.grpcStatusFromHead = response.headers.takeGRPCStatus() }
        downstream.writeHead(response, appending: own)
        needsFlush = true
    }

    func upstreamResponseBody(_ body: ByteBuffer) {
        guard case .proxying(let request, _) = state else { return }
        if request.exchange.heldResponse.isHolding {
            // Too much to hold: it goes out as it comes, and can no longer be retried.
            if !request.exchange.heldPartArrived(body) { releaseHeldResponse(of: request) }
            return
        }
        request.exchange.responseBodyRelayed(bytes: body.readableBytes)
        downstream.write(.body(.byteBuffer(body)))
        needsFlush = true
    }

    /// Writes a held response's head and body parts.
    private func releaseHeldResponse(of request: ProxiedRequest) {
        guard let (head, parts) = request.exchange.releaseHeldResponse() else { return }
        commitResponseHead(head, facts: .unknown, of: request, now: .now())
        for part in parts {
            request.exchange.heldBodyRelayed(bytes: part.readableBytes)
            downstream.write(.body(.byteBuffer(part)))
        }
        needsFlush = true
    }

    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {
        guard case .proxying(let request, let upstream) = state else { return }
        if request.exchange.heldResponse.isHolding {
            let grpcStatus = trailers?.first(name: "grpc-status").flatMap(Int.init)
            let verdict = decide(request) { exchange, random, refusal in
                exchange.heldResponseEnded(grpcStatus: grpcStatus, random: &random, budgetRefusal: refusal)
            }
            if verdict.next != .commitResponse { return follow(verdict, of: request) }  // the retry lets the held answer go
            releaseHeldResponse(of: request)
        }
        if request.switchingProtocols {
            startTunnel(request, upstream: upstream)
            return
        }
        recordFinished(request)
        switch request.exchange.progress.afterResponse {
        case .nextRequest:
            finishRequest(request)
        case .discardRestOfRequest:
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
            let promise = local.eventLoop.makePromise(of: Void.self)
            downstream.writeAndFlush(.end(trailers), promise: promise)
            written = promise.futureResult
        } else {
            downstream.writeAndFlush(.end(trailers), promise: nil)
        }
        // While the rest of its body is still coming (to be dropped), the request is not over for the
        // timeouts: those bytes are no new head.
        if request.exchange.progress.requestComplete { http1Connection?.responseEnded() }
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
        request.trace?.tryFailed(failure.traceName)
        let failure = TryFailure.upstream(failure, connectionReused: upstream.exchanges > 1)
        follow(decide(request) { exchange, random, refusal in exchange.tryFailed(failure, random: &random, budgetRefusal: refusal) }, of: request)
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable { deliverPendingRead() }
    }

    // MARK: Tunnels

    /// Both HTTP/1.1 connections stop being HTTP: their codecs leave and a relay pair carries the bytes.
    private func startTunnel(_ request: ProxiedRequest, upstream: UpstreamExchangeHandler) {
        recordFinished(request)
        state = .closing
        guard case .http1(let writer) = downstream, let connection = http1Connection else {  // a tunnel is HTTP/1.1 on both sides
            upstream.abort()
            return
        }
        let context = writer.context
        let (downstreamRelay, upstreamRelay) = TunnelRelay.pair()
        do {
            // What the upstream sent after its `101` in the same read goes first.
            let early = try upstream.switchToTunnel(upstreamRelay)
            if early.readableBytes > 0 { context.write(NIOAny(IOData.byteBuffer(early)), promise: nil) }
            context.flush()
            try connection.becomeTunnel(downstreamRelay, context: context)
        } catch {
            upstream.channel?.close(promise: nil)
            context.close(promise: nil)
        }
    }

    /// Whether the connection can carry another request after this one (HTTP/1.1; under overload, none does).
    func keepsConnection(_ facts: RequestHeadFacts) -> Bool {
        guard downstreamProtocol == .http1 else { return true }
        if let listener = foundListener, listener.stats.overloadLevel >= .keepAliveDisabled { return false }
        return facts.keepsConnection
    }
}
