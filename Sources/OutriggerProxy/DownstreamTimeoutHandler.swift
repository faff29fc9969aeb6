import NIOCore
import NIOHTTP1
import OutriggerCore

/// Enforces a downstream HTTP/1.1 connection's request-headers and idle timeouts (`DownstreamTimeouts`
/// decides; this keeps one timer per connection, re-armed only when it fires, never per request). Sits
/// before the request decoder, where it sees a request's first bytes arrive; `ProxyRequestHandler` tells it
/// when a head was parsed and when a response ended (direct calls, no extra pipeline hop per part).
final class DownstreamTimeoutWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

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
        timer = nil
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timeouts.bytesArrived(now: NIODeadline.now().uptimeNanoseconds)
        context.fireChannelRead(data)
    }

    func headReceived() {
        timeouts.headReceived()
    }

    func responseEnded() {
        timeouts.responseEnded(now: NIODeadline.now().uptimeNanoseconds)
    }

    private func check() {
        guard let context else { return }
        switch timeouts.check(now: NIODeadline.now().uptimeNanoseconds) {
        case .checkAgain(let at):
            timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(at)) { [weak self] in self?.check() }
        case .closeIdle:
            context.close(promise: nil)
        case .requestTimeout:
            // The client is still sending its head: answer 408 (as encoded bytes: this sits before the
            // HTTP codec) and close.
            stats.recordLocalReply(.requestTimeout)
            let body = LocalReply.body(for: .requestTimeout, isGRPC: false, allocator: context.channel.allocator)
            let head = LocalReply.head(for: .requestTimeout, version: .http1_1, isGRPC: false, closeConnection: true,
                                       bodyLength: body?.readableBytes ?? 0)
            var bytes = context.channel.allocator.buffer(capacity: 256)
            bytes.writeString("HTTP/1.1 \(head.status.code) \(head.status.reasonPhrase)\r\n")
            for (name, value) in head.headers { bytes.writeString("\(name): \(value)\r\n") }
            bytes.writeString("\r\n")
            if var body { bytes.writeBuffer(&body) }
            context.writeAndFlush(wrapOutboundOut(bytes)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
