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

/// Watches a downstream HTTP/2 connection's inbound frame headers (`HTTP2FrameHeaderScanner`), between the
/// socket and NIO's HTTP/2 handler:
/// - its idle and header-block timeouts (`HTTP2ConnectionTimeouts` decides; one timer per connection). Idle:
///   a GOAWAY (NO_ERROR, naming the last stream the client opened: RFC 9113 §6.8) and a close. A header block
///   left unfinished: the connection is closed. The stream initializer tells it of streams opening and closing;
/// - the streams its client opens and resets, reported to the process's `ClientResetGuard` every 50 resets
///   and at close (with or without resets). When a report finds the client's address refused: a GOAWAY
///   ENHANCE_YOUR_CALM and a close.
final class HTTP2ConnectionWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    /// Adds (streams opened, streams reset) to the client's count; true when the client is now refused.
    typealias ResetReporter = (_ streams: Int, _ resets: Int) -> Bool

    private var timeouts: HTTP2ConnectionTimeouts
    private var scanner = HTTP2FrameHeaderScanner(skippingPreface: 24)
    private let stats: ListenerStats
    private var timer: Scheduled<Void>?
    private var timerDeadline: UInt64 = .max
    private var context: ChannelHandlerContext?
    private var closing = false
    /// The highest stream id the client opened (HEADERS seen), for the GOAWAY.
    private var lastClientStream: UInt32 = 0
    private let reportResets: ResetReporter?
    /// Streams the client opened and reset since the last report.
    private var streamsOpened = 0
    private var streamsReset = 0
    private static let resetsPerReport = 50
    /// Streams open now, and whether a graceful GOAWAY was sent (the connection closes when none is left).
    private var openStreams = 0
    private var goingAway = false

    init(requestHeadersTimeout: Duration, idleTimeout: Duration, stats: ListenerStats, reportResets: ResetReporter? = nil) {
        self.timeouts = HTTP2ConnectionTimeouts(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout,
                                                now: NIODeadline.now().uptimeNanoseconds)
        self.stats = stats
        self.reportResets = reportResets
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
        guard !closing else { return }
        var earliest = UInt64.max
        scanner.scan(unwrapInboundIn(data)) { frame, _ in
            switch frame.type {
            case HTTP2FrameHeaderScanner.FrameHeader.headers where frame.streamID % 2 == 1 && frame.streamID > lastClientStream:
                lastClientStream = frame.streamID
                streamsOpened += 1
            case HTTP2FrameHeaderScanner.FrameHeader.rstStream:
                streamsReset += 1
            default:
                break
            }
            if frame.startsUnfinishedHeaderBlock {
                earliest = min(earliest, timeouts.headerBlockStarted(now: NIODeadline.now().uptimeNanoseconds))
            } else if frame.endsHeaderBlock {
                timeouts.headerBlockEnded()
            }
        }
        if streamsReset >= Self.resetsPerReport, report() {
            refuse(context: context)
            return
        }
        if earliest < timerDeadline { arm(at: earliest) }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Its streams count even without a reset: they are what a busy client's few resets are weighed against.
        if streamsReset > 0 || streamsOpened > 0 { _ = report() }
        context.fireChannelInactive()
    }

    func streamOpened() {
        openStreams += 1
        timeouts.streamOpened()
    }

    func streamClosed() {
        openStreams -= 1
        timeouts.streamClosed(now: NIODeadline.now().uptimeNanoseconds)
        if goingAway, openStreams == 0, let context {
            closing = true
            context.close(promise: nil)
        }
    }

    /// Overload: tells the client to open no more streams on this connection (GOAWAY NO_ERROR naming its last
    /// stream, RFC 9113 §6.8), once; the connection closes when its open streams are done.
    func goAwayGracefully() {
        guard !goingAway, !closing, let context else { return }
        goingAway = true
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: HTTP2StreamID(Int32(lastClientStream)), errorCode: .noError, opaqueData: nil))
        context.channel.writeAndFlush(goAway, promise: nil)
    }

    /// Hands the counts since the last report to the guard; true when the client is now refused.
    private func report() -> Bool {
        guard let reportResets else { return false }
        defer {
            streamsOpened = 0
            streamsReset = 0
        }
        return reportResets(streamsOpened, streamsReset)
    }

    /// The client's address resets too many streams: what it sent with this read is not read, and the
    /// connection ends with a GOAWAY ENHANCE_YOUR_CALM (streams in flight are reset by the close).
    private func refuse(context: ChannelHandlerContext) {
        closing = true
        stats.recordClose(.rapidReset)
        goAway(.enhanceYourCalm, context: context)
    }

    /// Through NIO's HTTP/2 handler (after this one), which encodes it; then closed.
    private func goAway(_ code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: HTTP2StreamID(Int32(lastClientStream)), errorCode: code, opaqueData: nil))
        context.channel.writeAndFlush(goAway).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        // A client that reads nothing never lets the GOAWAY out: closed anyway.
        let channel = context.channel
        context.eventLoop.scheduleTask(in: Self.goAwayGrace) { channel.close(promise: nil) }
    }

    static let goAwayGrace: TimeAmount = .seconds(2)

    private func check() {
        guard let context, !closing else { return }
        switch timeouts.check(now: NIODeadline.now().uptimeNanoseconds) {
        case .checkAgain(let at):
            arm(at: at)
        case .closeIdle:
            closing = true
            stats.recordClose(.idleTimeout)
            goAway(.noError, context: context)
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
/// HTTP/1.1 or HTTP/2 connection is reset (SO_LINGER 0: the kernel drops what it still queues for a reader that
/// may never come). An HTTP/2 stream's own stall is its `ProxyRequestHandler`'s (one handler less per stream).
/// The request handler hears `SendTimedOut` first, for its access log. Like nginx's `send_timeout`.
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

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        stall.writabilityChanged(to: context.channel.isWritable, timeout: timeout, eventLoop: context.eventLoop) { [weak self] in
            self?.timedOut(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stall.cancel()
    }

    private func timedOut(context: ChannelHandlerContext) {
        stall.fired()
        guard context.channel.isActive, !context.channel.isWritable else { return }
        stats.recordClose(.sendTimeout)
        context.fireUserInboundEventTriggered(SendTimedOut())
        guard let socket = context.channel as? SocketOptionProvider else {
            context.close(promise: nil)
            return
        }
        let channel = context.channel
        socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Told to the request handler when `SendTimeoutHandler` is about to cut its client.
struct SendTimedOut {}

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
