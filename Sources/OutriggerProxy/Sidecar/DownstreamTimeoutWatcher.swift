import NIOCore
import NIOHTTP1
import OutriggerCore

/// Told down the pipeline when a client took longer than `requestHeadersTimeout` to send a request's head: the
/// admin server's handler answers 408.
struct RequestHeadersTimedOut {}

/// The admin server's request-headers and idle timeouts (`DownstreamTimeoutTimer`): before the request decoder, where
/// it sees a request's first bytes arrive; its handler tells it when a head was parsed and when a response ended.
/// A listener's HTTP/1.1 connection keeps its timer in `HTTP1DownstreamConnection` (no extra pipeline hop).
final class DownstreamTimeoutWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var clock: DownstreamTimeoutTimer
    private var context: ChannelHandlerContext?

    init(requestHeadersTimeout: Duration, idleTimeout: Duration) {
        clock = DownstreamTimeoutTimer(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        check()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        clock.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clock.bytesArrived()
        context.fireChannelRead(data)
    }

    func headReceived() {
        clock.headReceived()
    }

    func responseEnded() {
        clock.responseEnded()
    }

    private func check() {
        guard let context else { return }
        switch clock.check(on: context.eventLoop, stats: nil, checkAgain: { [weak self] in self?.check() }) {
        case nil: break
        case .closeIdle: context.close(promise: nil)
        // The client is still sending its head: the admin's handler answers 408 and closes.
        case .requestTimeout: context.fireUserInboundEventTriggered(RequestHeadersTimedOut())
        }
    }
}
