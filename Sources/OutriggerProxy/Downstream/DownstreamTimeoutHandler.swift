import NIOCore
import NIOHTTP1
import OutriggerCore

/// Told down the pipeline when a client took longer than `requestHeadersTimeout` to send a request's head:
/// `ProxyRequestHandler` answers 408 through the response encoder, like every other local reply.
struct RequestHeadersTimedOut {}

/// Enforces a downstream HTTP/1.1 connection's request-headers and idle timeouts (`DownstreamTimeouts`
/// decides; this keeps one timer per connection, re-armed only when it fires, never per request). Sits
/// before the request decoder, where it sees a request's first bytes arrive; `ProxyRequestHandler` tells it
/// when a head was parsed and when a response ended (direct calls, no extra pipeline hop per part).
final class DownstreamTimeoutWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var timeouts: DownstreamTimeouts
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private let stats: ListenerStats?

    init(requestHeadersTimeout: Duration, idleTimeout: Duration, stats: ListenerStats?) {
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
        if timeouts.awaitsHead { timeouts.bytesArrived(now: NIODeadline.now().uptimeNanoseconds) }
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
            stats?.recordClose(.idleTimeout)
            context.close(promise: nil)
        case .requestTimeout:
            stats?.recordClose(.requestHeadersTimeout)
            // The client is still sending its head: the request handler answers 408 and closes.
            context.fireUserInboundEventTriggered(RequestHeadersTimedOut())
        }
    }
}
