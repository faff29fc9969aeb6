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

/// Enforces a downstream HTTP/2 connection's idle and header-block timeouts (`HTTP2ConnectionTimeouts`
/// decides; one timer per connection). Sits between the socket and NIO's HTTP/2 handler, where it sees the
/// frame headers go by (`HTTP2FrameHeaderScanner`); the stream initializer tells it of streams opening and
/// closing. Idle: a GOAWAY (NO_ERROR, naming the last stream the client opened: RFC 9113 §6.8) and a close. A
/// header block left unfinished: the connection is closed.
final class HTTP2ConnectionTimeoutWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var timeouts: HTTP2ConnectionTimeouts
    private var scanner = HTTP2FrameHeaderScanner(skippingPreface: 24)
    private let stats: ListenerStats
    private var timer: Scheduled<Void>?
    private var timerDeadline: UInt64 = .max
    private var context: ChannelHandlerContext?
    private var closing = false
    /// The highest stream id the client opened (HEADERS seen), for the GOAWAY.
    private var lastClientStream: UInt32 = 0

    init(requestHeadersTimeout: Duration, idleTimeout: Duration, stats: ListenerStats) {
        self.timeouts = HTTP2ConnectionTimeouts(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout,
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
        var earliest = UInt64.max
        scanner.scan(unwrapInboundIn(data)) { frame, _ in
            if frame.type == HTTP2FrameHeaderScanner.FrameHeader.headers, frame.streamID % 2 == 1 {
                lastClientStream = max(lastClientStream, frame.streamID)
            }
            if frame.startsUnfinishedHeaderBlock {
                earliest = min(earliest, timeouts.headerBlockStarted(now: NIODeadline.now().uptimeNanoseconds))
            } else if frame.endsHeaderBlock {
                timeouts.headerBlockEnded()
            }
        }
        if earliest < timerDeadline { arm(at: earliest) }
        context.fireChannelRead(data)
    }

    func streamOpened() {
        timeouts.streamOpened()
    }

    func streamClosed() {
        timeouts.streamClosed(now: NIODeadline.now().uptimeNanoseconds)
    }

    private func check() {
        guard let context, !closing else { return }
        switch timeouts.check(now: NIODeadline.now().uptimeNanoseconds) {
        case .checkAgain(let at):
            arm(at: at)
        case .closeIdle:
            closing = true
            stats.recordClose(.idleTimeout)
            // Through NIO's HTTP/2 handler (after this one), which encodes it; then closed.
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: HTTP2StreamID(Int32(lastClientStream)), errorCode: .noError, opaqueData: nil))
            context.channel.writeAndFlush(goAway).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        case .headerBlockTimedOut:
            closing = true
            stats.recordClose(.requestHeadersTimeout)
            context.close(promise: nil)
        }
    }

    private func arm(at deadline: UInt64) {
        guard let context else { return }
        timer?.cancel()
        timerDeadline = deadline
        timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(deadline)) { [weak self] in
            self?.timerDeadline = .max
            self?.check()
        }
    }
}

/// On a listening socket: when accept fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM), stops
/// accepting for `pause`, then accepts again. NIO's `AcceptBackoffHandler` cannot do it when no accept of the
/// read succeeded: the channel keeps its read pending and stays registered, so the event loop wakes and fails
/// to accept again at once, about 14,000 times a second. Turning `autoRead` off takes the socket out of the
/// poll set; turning it on again puts it back.
final class AcceptPause: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let pause: TimeAmount
    private var resume: Scheduled<Void>?

    init(pause: TimeAmount = .milliseconds(250)) {
        self.pause = pause
    }

    /// A listening socket's initializer (`ServerBootstrap.serverChannelInitializer`) that adds one.
    @Sendable static func install(_ channel: Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AcceptPause()) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode), resume == nil,
           let options = context.channel.syncOptions, (try? options.setOption(.autoRead, value: false)) != nil {
            resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) { [weak self] in
                self?.resume = nil
                try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            }
            return
        }
        context.fireErrorCaught(error)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
    }
}
