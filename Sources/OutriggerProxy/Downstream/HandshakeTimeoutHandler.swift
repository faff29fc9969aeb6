#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP2
import OutriggerCore

/// Closes a downstream connection whose protocol is not known within the listener's `handshakeTimeout` of
/// its accept: a client that sends nothing, half a TLS ClientHello, or part of the HTTP/2 preface. First in
/// every downstream pipeline; `protocolChosen` (the pipeline knows HTTP/1.1 or HTTP/2) takes it out, and the
/// protocol's own timeouts govern from there.
final class HandshakeTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: Duration
    private let stats: ListenerStats
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    init(timeout: Duration, stats: ListenerStats) {
        self.timeout = timeout
        self.stats = stats
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanoseconds)) { [stats] in
            stats.recordClose(.handshakeTimeout)
            context.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        self.context = nil
    }

    /// The protocol is known: the timer is no longer needed.
    func protocolChosen() {
        guard let context else { return }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
