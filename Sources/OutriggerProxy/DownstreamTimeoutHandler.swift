import NIOCore
import NIOHTTP1
import OutriggerCore

/// Enforces a downstream HTTP/1.1 connection's request-headers and idle timeouts (`DownstreamTimeouts`
/// decides; this keeps one timer per connection, re-armed only when it fires, never per request).
/// Sits after the request decoder, seeing heads come in and responses go out; `ClientBytesWatcher`, before
/// the decoder, tells it when the first byte of a request arrives.
final class DownstreamTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var timeouts: DownstreamTimeouts
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private let stats: ProxyStats

    init(requestHeadersTimeout: Duration, idleTimeout: Duration, stats: ProxyStats) {
        self.timeouts = DownstreamTimeouts(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout,
                                           now: NIODeadline.now().uptimeNanoseconds)
        self.stats = stats
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        check()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func bytesArrived() {
        timeouts.bytesArrived(now: NIODeadline.now().uptimeNanoseconds)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { timeouts.headReceived() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { timeouts.responseEnded(now: NIODeadline.now().uptimeNanoseconds) }
        context.write(data, promise: promise)
    }

    private func check() {
        guard let context else { return }
        switch timeouts.check(now: NIODeadline.now().uptimeNanoseconds) {
        case .checkAgain(let at):
            timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(at)) { [weak self] in self?.check() }
        case .closeIdle:
            context.close(promise: nil)
        case .requestTimeout:
            // The client is still sending its head: answer 408 and close.
            stats.recordLocalReply(.requestTimeout)
            let written = LocalReply.write(.requestTimeout, version: .http1_1, isGRPC: false, isHEAD: false, closeConnection: true,
                                           context: context, wrap: wrapOutboundOut)
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}

/// Sees a downstream connection's raw bytes before the decoder, to tell the timeout handler when a
/// request starts arriving.
final class ClientBytesWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let timeouts: DownstreamTimeoutHandler

    init(_ timeouts: DownstreamTimeoutHandler) {
        self.timeouts = timeouts
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timeouts.bytesArrived()
        context.fireChannelRead(data)
    }
}
