#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP2
import OutriggerCore

/// Watches a downstream HTTP/2 connection's inbound frame headers (`HTTP2FrameHeaderScanner`), between the
/// socket and the HTTP/2 codec (`HTTP2Codec`):
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
    private var lastPeerStream: UInt32 = 0
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
            case HTTP2FrameKind.headers where frame.streamID % 2 == 1 && frame.streamID > lastPeerStream:
                lastPeerStream = frame.streamID
                streamsOpened += 1
            case HTTP2FrameKind.rstStream:
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
            // From the pipeline's end: through the codec, whose last frames (this stream's) go out first.
            context.channel.close(promise: nil)
        }
    }

    /// Overload: tells the client to open no more streams on this connection (GOAWAY NO_ERROR naming its last
    /// stream, RFC 9113 §6.8), once; the connection closes when its open streams are done.
    func goAwayGracefully() {
        guard !goingAway, !closing, let context else { return }
        goingAway = true
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: HTTP2StreamID(Int32(lastPeerStream)), errorCode: .noError, opaqueData: nil))
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

    /// Through the HTTP/2 codec (after this one), which encodes it; then closed.
    private func goAway(_ code: HTTP2ErrorCode, context: ChannelHandlerContext) {
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: HTTP2StreamID(Int32(lastPeerStream)), errorCode: code, opaqueData: nil))
        context.channel.writeAndFlush(goAway).assumeIsolated().whenComplete { _ in context.channel.close(promise: nil) }
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
            // From the pipeline's end, through the codec: what it framed for other streams goes out first.
            context.channel.close(promise: nil)
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
