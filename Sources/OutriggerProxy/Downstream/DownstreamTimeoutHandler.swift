import NIOCore
import NIOHTTP1
import OutriggerCore

/// Told down the pipeline when a client took longer than `requestHeadersTimeout` to send a request's head: the
/// admin server's handler answers 408.
struct RequestHeadersTimedOut {}

/// A downstream HTTP/1.1 connection's request-headers and idle timeouts on the clock: `DownstreamTimeouts` decides;
/// this keeps its one timer per connection, re-armed only when it fires, never per request. Held by the handler that
/// sees a request's first bytes arrive (`HTTP1DownstreamConnection`, the admin's `DownstreamTimeoutWatcher`).
struct DownstreamTimeoutTimer {
    /// What is due when the timer fires.
    enum Due { case closeIdle, requestTimeout }

    private var timeouts: DownstreamTimeouts
    private var timer: Scheduled<Void>?

    init(requestHeadersTimeout: Duration, idleTimeout: Duration) {
        timeouts = DownstreamTimeouts(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout,
                                      now: NIODeadline.now().uptimeNanoseconds)
    }

    /// Bytes came from the client (the clock is read only when they may start a head's).
    mutating func bytesArrived() {
        if timeouts.awaitsHead { timeouts.bytesArrived(now: NIODeadline.now().uptimeNanoseconds) }
    }

    mutating func headReceived() {
        timeouts.headReceived()
    }

    mutating func responseEnded() {
        timeouts.responseEnded(now: NIODeadline.now().uptimeNanoseconds)
    }

    /// Asks the timeouts now: what is due, or nothing, with the timer armed to run `checkAgain` when it may be.
    mutating func check(on eventLoop: any EventLoop, checkAgain: @escaping () -> Void) -> Due? {
        switch timeouts.check(now: NIODeadline.now().uptimeNanoseconds) {
        case .checkAgain(let at):
            timer = eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(at), checkAgain)
            return nil
        case .closeIdle: return .closeIdle
        case .requestTimeout: return .requestTimeout
        }
    }

    mutating func cancel() {
        timer?.cancel()
        timer = nil
    }
}

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
        switch clock.check(on: context.eventLoop, checkAgain: { [weak self] in self?.check() }) {
        case nil: break
        case .closeIdle: context.close(promise: nil)
        // The client is still sending its head: the admin's handler answers 408 and closes.
        case .requestTimeout: context.fireUserInboundEventTriggered(RequestHeadersTimedOut())
        }
    }
}
