import NIOCore
import OutriggerCore

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

    /// Asks the timeouts now: what is due (counted in `stats` as the connection's close reason), or nothing, with the
    /// timer armed to run `checkAgain` when it may be.
    mutating func check(on eventLoop: any EventLoop, stats: ListenerStats?, checkAgain: @escaping () -> Void) -> Due? {
        switch timeouts.check(now: NIODeadline.now().uptimeNanoseconds) {
        case .checkAgain(let at):
            timer = eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(at), checkAgain)
            return nil
        case .closeIdle:
            stats?.recordClose(.idleTimeout)
            return .closeIdle
        case .requestTimeout:
            stats?.recordClose(.requestHeadersTimeout)
            return .requestTimeout
        }
    }

    mutating func cancel() {
        timer?.cancel()
        timer = nil
    }
}
