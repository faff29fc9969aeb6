import NIOCore
import NIOHTTP1
import OutriggerCore

/// An HTTP/1.1 client connection, at the end of its pipeline: it reads the requests from the bytes with the pure
/// `HTTP1RequestParser` and hands each part to the connection's exchange (`ProxyRequestHandler`) by a direct call —
/// no pipeline hop and no boxed part between them, as `HTTP2DownstreamConnection` drives a stream's. Pipelined
/// requests wait in its `HTTP1PipelineQueue` until the exchange is free: the exchange answers one request at a time.
/// It answers what the parser rejects (400, or 431 past the head limit) after the responses owed before it, holds
/// reads the exchange cannot take yet, and tells the exchange of the connection's events: read bursts, writability,
/// shutdown's quiesce, the close. It keeps the connection's timers: request headers and idle
/// (`DownstreamTimeoutTimer`; the exchange tells it of heads taken and responses ended: 408 through the exchange, or
/// the close), and the send timeout (`SendStallTimer`: the connection is reset, like `SendTimeoutHandler` does an
/// HTTP/2 one's). When the connection becomes a tunnel it leaves the pipeline, timers and all, for a `TunnelRelay` and
/// a `SendTimeoutHandler`, and hands on the bytes it holds.
final class HTTP1DownstreamConnection: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let exchange: ProxyRequestHandler
    private let stats: ProxyStats
    private let listenerStats: ListenerStats
    private var timeouts: DownstreamTimeoutTimer
    private let sendTimeout: TimeAmount
    private var sendStall = SendStallTimer()
    private var parser = HTTP1RequestParser()
    /// Bytes received and not yet parsed: a head cut by the read, or what follows an upgrade request.
    private var unparsed = ByteBuffer.noBytes
    /// A parse error was met, the connection closed, or the handler left: nothing more is parsed.
    private var parsingStopped = false
    /// The connection's responses, while this handler is in the pipeline.
    private var responses: HTTP1ResponseWriter?
    /// Request heads read.
    private var requestsRead = 0
    /// A request head was read and its end not yet.
    private var requestOpen = false
    private var pipeline = HTTP1PipelineQueue()
    private var eventLoop: (any EventLoop)?

    init(exchange: ProxyRequestHandler, stats: ProxyStats, listenerStats: ListenerStats, requestHeadersTimeout: Duration,
         idleTimeout: Duration, sendTimeout: Duration) {
        self.exchange = exchange
        self.stats = stats
        self.listenerStats = listenerStats
        self.sendTimeout = .nanoseconds(sendTimeout.nanoseconds)
        timeouts = DownstreamTimeoutTimer(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let writer = HTTP1ResponseWriter(context: context)
        responses = writer
        eventLoop = context.eventLoop
        exchange.attach(.http1(writer), clientAddress: context.channel.remoteAddress?.ipAddress, http1Connection: self)
        checkTimeouts()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        parsingStopped = true
        timeouts.cancel()
        sendStall.cancel()
        // A reply still waiting would keep this handler (and the writer) alive.
        responses?.cancelWaiting()
        responses = nil
        exchange.detach()
        // The bytes after an upgrade request are the tunnel's: on to the relay, which is in place by now. (Not when
        // the pipeline is torn down at the close: no tunnel takes them then.)
        guard unparsed.readableBytes > 0, context.channel.isActive else { return }
        context.fireChannelRead(NIOAny(unparsed.takeUnparsed()))
    }

    // MARK: Requests in

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !parsingStopped else { return }
        timeouts.bytesArrived()
        unparsed.appendReceived(unwrapInboundIn(data))
        do {
            // A part handed on may close the connection.
            while !parsingStopped, let part = try parser.next(&unparsed) {
                hand(consume part)
            }
        } catch {
            parsingStopped = true
            rejected(error, context: context)
        }
        unparsed.releaseIfParsed()
    }

    private func hand(_ part: consuming HTTPServerRequestPart) {
        switch part {
        case .head:
            requestsRead += 1
            requestOpen = true
        case .body: break
        case .end: requestOpen = false
        }
        if pipeline.mustQueue(part, exchangeBusy: exchange.isBusy) {
            if !exchange.isClosing { pipeline.append(part) }
            return
        }
        exchange.received(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        exchange.readComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !parsingStopped {
            parsingStopped = true
            // A request cut short by the close is broken (the answer goes nowhere, but the request is logged so).
            do {
                if let part = try parser.connectionClosed(leaving: unparsed) { hand(part) }
            } catch {
                rejected(error, context: context)
            }
        }
        exchange.inactive()
    }

    /// The parser refused the bytes: the request they belong to is answered 400 (431 for a head too large) once
    /// the responses owed before it are written, and the connection closes.
    private func rejected(_ error: Error, context: ChannelHandlerContext) {
        guard let parseError = error as? HTTP1ParseError, let responses else {
            context.close(promise: nil)
            return
        }
        let reason: LocalReplyReason = parseError == .headTooLarge ? .headersTooLarge : .badRequest
        let outstanding = requestsRead - responses.messagesEnded
        if outstanding > 1 || (!requestOpen && outstanding > 0) {
            // A later pipelined request is broken: answer the earlier ones first, then this one.
            var owed = requestsRead
            if requestOpen {
                // Its head and some body wait in the queue: they are never forwarded.
                owed -= 1
                pipeline.dropLastRequest()
            }
            responses.whenMessagesEnded(owed) { [self] in answer(reason, context: context) }
            return
        }
        // The broken bytes belong to the request being read: the exchange lets go of it.
        pipeline.removeAll()
        exchange.failed(error)
        if responses.messageStarted {
            context.close(promise: nil)
        } else {
            answer(reason, context: context)
        }
    }

    private func answer(_ reason: LocalReplyReason, context: ChannelHandlerContext) {
        guard let responses else { return }
        stats.recordLocalReply(reason)
        exchange.protocolErrorAnswered(reason)
        LocalReply.write(reason, version: .http1_1, isGRPC: false, isHEAD: false, closeConnection: true, to: .http1(responses), eventLoop: context.eventLoop)
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    // MARK: Pipelining

    /// Below the pipelining queue's limits: reading may go on.
    var queueHasRoom: Bool { pipeline.hasRoom }

    /// The exchange answered its request: the queued requests go on, one at a time, once the current call stack has
    /// written the previous response's end.
    func exchangeBecameIdle() {
        guard !pipeline.isEmpty, let eventLoop else { return }
        eventLoop.assumeIsolated().execute { [self] in
            guard responses != nil else { return }  // left the pipeline meanwhile
            while let part = pipeline.next(exchangeIdle: exchange.isIdle) {
                exchange.received(part)
            }
            // No read burst ends after this replay: what it wrote goes out now.
            exchange.replayEnded()
        }
    }

    /// The connection closes after the response being written: what waits behind it is never answered.
    func dropQueuedRequests() {
        pipeline.removeAll()
    }

    // MARK: Timeouts

    /// The exchange took a request's head: the headers timeout stops, the connection is busy.
    func headReceived() {
        timeouts.headReceived()
    }

    /// The exchange ended a response: idle from now, unless another request is in flight.
    func responseEnded() {
        timeouts.responseEnded()
    }

    private func checkTimeouts() {
        guard let context = responses?.context else { return }  // left the pipeline
        switch timeouts.check(on: context.eventLoop, stats: listenerStats, checkAgain: { [weak self] in self?.checkTimeouts() }) {
        case nil: break
        case .closeIdle: context.close(promise: nil)
        // The client is still sending its head: the exchange answers 408 and closes.
        case .requestTimeout: exchange.requestHeadersTimedOut()
        }
    }

    // MARK: Connection events

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // The socket failed (a reset, TLS): nothing more can be read or written.
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        sendStall.writabilityChanged(to: context.channel.isWritable, timeout: sendTimeout, eventLoop: context.eventLoop) { [weak self] in
            self?.sendTimedOut()
        }
        exchange.writabilityChanged()
    }

    /// The client took no bytes for the send timeout: the exchange ends (logged so), and the connection is reset.
    private func sendTimedOut() {
        guard let context = responses?.context else { return }  // left the pipeline
        guard sendStall.firedStalled(context.channel, stats: listenerStats) else { return }
        exchange.sendTimedOut()
        SendStallTimer.resetAndClose(context.channel)
    }

    /// The connection becomes a tunnel (the upstream answered an upgrade): the relay takes its bytes, a
    /// `SendTimeoutHandler` its send timeout (timed again from now if it is stalled already), and this handler leaves,
    /// with its request timeouts: a tunnel's bytes are the application's. Bytes it holds go on to the relay.
    func becomeTunnel(_ relay: TunnelRelay, context: ChannelHandlerContext) throws {
        let pipeline = context.pipeline.syncOperations
        try pipeline.addHandler(relay)
        try pipeline.addHandler(SendTimeoutHandler(timeout: .nanoseconds(sendTimeout.nanoseconds), stats: listenerStats), position: .before(relay))
        pipeline.removeHandler(context: context, promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent: exchange.quiesce(requestsQueued: !pipeline.isEmpty)
        default: context.fireUserInboundEventTriggered(event)
        }
    }

    func read(context: ChannelHandlerContext) {
        if exchange.mayRead {  // which asks `queueHasRoom` too
            context.read()
        } else {
            exchange.readPending = true
        }
    }
}
