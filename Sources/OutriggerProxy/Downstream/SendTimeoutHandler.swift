#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP2
import OutriggerCore

/// The clock of the send timeout, for a handler that sees its channel's writability change: armed when the
/// channel turns unwritable (more than the high water mark waiting, the kernel's buffer full), cancelled when
/// it is writable again; `fire` runs if it stayed unwritable for the whole timeout.
struct SendStallTimer {
    private var timer: Scheduled<Void>?

    mutating func writabilityChanged(to isWritable: Bool, timeout: TimeAmount, eventLoop: any EventLoop, fire: @escaping () -> Void) {
        if isWritable {
            cancel()
        } else if timer == nil {
            timer = eventLoop.assumeIsolated().scheduleTask(in: timeout, fire)
        }
    }

    /// The timer fired: it may be armed again.
    mutating func fired() {
        timer = nil
    }

    mutating func cancel() {
        timer?.cancel()
        timer = nil
    }
}

/// Cuts a downstream connection that takes no bytes for the listener's `sendTimeout` (`SendStallTimer`),
/// whatever request is or is not on it — a response's tail may still be queued after its exchange ended: an
/// HTTP/2 connection, or an HTTP/1.1 one turned tunnel, is reset (`resetAndClose`). An HTTP/2 stream's own stall
/// is its `ProxyRequestHandler`'s (one handler less per stream); an HTTP/1.1 connection's is
/// `HTTP1DownstreamConnection`'s (no extra pipeline hop). The request handlers hear `SendTimedOut` first, for their
/// access log. Like nginx's `send_timeout`.
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
        stall.fired()
        guard context.channel.isActive, !context.channel.isWritable else { return }
        stats.recordClose(.sendTimeout)
        context.fireUserInboundEventTriggered(SendTimedOut())
        resetAndClose(context.channel)
    }
}

/// Closes a connection whose client took nothing for the send timeout with a reset (SO_LINGER 0): the kernel drops
/// what it still queues for a reader that may never come.
func resetAndClose(_ channel: any Channel) {
    guard let socket = channel as? SocketOptionProvider else {
        channel.close(promise: nil)
        return
    }
    socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
}

/// Told to the request handler when `SendTimeoutHandler` is about to cut its client.
struct SendTimedOut {}
