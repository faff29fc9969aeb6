import NIOCore
import NIOHTTP2
import OutriggerCore

/// Cuts a downstream connection that takes no bytes for the listener's `sendTimeout` (`SendStallTimer`),
/// whatever request is or is not on it — a response's tail may still be queued after its exchange ended: an
/// HTTP/2 connection, or an HTTP/1.1 one turned tunnel, is reset (`SendStallTimer.resetAndClose`). An HTTP/2 stream's own stall
/// is its `ProxyRequestHandler`'s (one handler less per stream); an HTTP/1.1 connection's is
/// `HTTP1DownstreamConnection`'s (no extra pipeline hop). `SendTimedOut` goes down the pipeline first: on HTTP/2,
/// `HTTP2DownstreamConnection` ends every stream's exchange with it, for their access log. Like nginx's `send_timeout`.
final class SendTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private let timeout: TimeAmount
    private let stats: ListenerStats
    private var stall = SendStallTimer()

    init(timeout: Duration, stats: ListenerStats) {
        self.timeout = .nanoseconds(timeout.nanoseconds)
        self.stats = stats
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Added to a connection already stalled (a tunnel's start): timed from now.
        if context.channel.isActive, !context.channel.isWritable { writabilityChanged(context: context) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writabilityChanged(context: context)
        context.fireChannelWritabilityChanged()
    }

    private func writabilityChanged(context: ChannelHandlerContext) {
        stall.writabilityChanged(to: context.channel.isWritable, timeout: timeout, eventLoop: context.eventLoop) { [weak self] in
            self?.timedOut(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stall.cancel()
    }

    private func timedOut(context: ChannelHandlerContext) {
        guard stall.firedStalled(context.channel, stats: stats) else { return }
        context.fireUserInboundEventTriggered(SendTimedOut())
        SendStallTimer.resetAndClose(context.channel)
    }
}

/// Told down the pipeline when `SendTimeoutHandler` is about to cut its client.
struct SendTimedOut {}
