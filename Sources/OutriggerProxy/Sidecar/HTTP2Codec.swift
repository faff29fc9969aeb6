import NIOCore
import NIOHTTP2
import OutriggerCore

/// An HTTP/2 connection at the byte level, in place of NIO's `NIOHTTP2Handler`, as a server (downstream, before
/// `HTTP2DownstreamConnection`) or a client (upstream, before `HTTP2UpstreamConnection`): frames are cut from the bytes
/// read (`HTTP2FrameDecoder`), checked against the connection's state (`HTTP2Streams`), header blocks decoded
/// (`HPACKBlockDecoder`) and checked (`HTTP2FieldCheck`) field by field, and handed to its `peer` — the connection
/// handler after it — in typed calls (`HTTP2CodecPeer`: header blocks, DATA, a stream's close, error or window), no
/// frame or event boxed for the pipeline. What the peer's streams send (`writeHeaders`, `writeData`, …, called
/// directly; a frame written down the pipeline, the watcher's GOAWAY, goes the same way) is framed into one output
/// buffer, DATA held while a send window is shut, and leaves in one write per event-loop tick: the flushes asked for in
/// a tick (a downstream connection's streams answered by different upstream connections; an upstream connection's
/// requests started by different downstream reads) become one, run in the tick's task phase, after every ready socket
/// has been read. A client's stream opens as its request's HEADERS go out.
///
/// Violations are answered as RFC 9113 §5.4 scopes them: a stream error with RST_STREAM (the stream closes; a client's
/// exchange hears of the error first), a connection error with GOAWAY naming the last stream the peer opened, then a
/// close. The peer's GOAWAY closes this side's streams after its last one as refused (a client's requests there go
/// again elsewhere).
final class HTTP2Codec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = Never
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = IOData

    /// Frames written for the peer while its socket takes nothing (PING and SETTINGS answers, resets): past this,
    /// the peer is flooding a connection it does not read (ENHANCE_YOUR_CALM).
    static let maxAnswersWhileBlocked = 10_000

    /// How long the GOAWAY of a connection error may take to leave before the connection closes without it (Envoy's
    /// `delayed_close_timeout` has the same default).
    static let goAwayFlushLimit: TimeAmount = .seconds(1)

    // The state the outbound side (`HTTP2Codec+Outbound.swift`) shares is internal; the rest stays private.
    private var decoder: HTTP2FrameDecoder
    var streams: HTTP2Streams
    private var headerDecoder: HPACKBlockDecoder
    var headerEncoder = HPACKBlockEncoder()
    var output: ByteBuffer
    var outputPromises: [EventLoopPromise<Void>] = []
    /// Streams whose DATA (and trailers behind it) wait for a send window, in the order they began to wait.
    var waiting: [UInt32: [Held]] = [:]
    var waitingOrder: [UInt32] = []
    /// A client's requests past the peer's SETTINGS_MAX_CONCURRENT_STREAMS, their HEADERS and all behind them, waiting
    /// in order (stream ids rise) for a stream to close.
    var queued: [UInt32: [Held]] = [:]
    var queuedOrder: [UInt32] = []
    var startingQueued = false
    /// A flush is due in this tick's task phase.
    var flushScheduled = false
    var context: ChannelHandlerContext?
    /// The connection handler after the codec (it sets itself when added); let go when either leaves the pipeline.
    var peer: (any HTTP2CodecPeer)?
    private var prefaceSent = false
    /// A connection error was answered: nothing more is read.
    var failed = false
    private var answersWhileBlocked = 0
    private var flood = HTTP2FloodGuard()

    enum Held {
        case data(ByteBuffer, endStream: Bool, EventLoopPromise<Void>?)
        case headers(HTTP2HeaderFields, endStream: Bool, EventLoopPromise<Void>?)

        var promise: EventLoopPromise<Void>? {
            switch self {
            case .data(_, _, let promise), .headers(_, _, let promise): promise
            }
        }
    }

    init(_ role: HTTP2Streams.Role, limits: HTTP2Streams.Limits, allocator: ByteBufferAllocator) {
        decoder = HTTP2FrameDecoder(expectingPreface: role == .server)
        streams = HTTP2Streams(role, limits: limits)
        headerDecoder = HPACKBlockDecoder(maxHeaderListSize: limits.maxHeaderBlock)
        output = allocator.buffer(capacity: 1024)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { sendPreface(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failWaiting()
        self.context = nil
        peer = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        sendPreface(context)
        context.fireChannelActive()
    }

    private func sendPreface(_ context: ChannelHandlerContext) {
        guard !prefaceSent else { return }
        prefaceSent = true
        if streams.role == .client { output.writeBytes(HTTP2FrameKind.clientPreface) }
        HTTP2FrameEncoder.writeSettings(streams.initialSettings, into: &output)
        flushOutput(context)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        decoder.append(unwrapInboundIn(data))
        while !failed {
            let frame: HTTP2FrameDecoder.Frame?
            do {
                frame = try decoder.next()
            } catch {
                connectionError(error, context)
                return
            }
            guard let frame else { return }
            do {
                try receive(frame, context)
            } catch {
                guard let stream = error.stream else { return connectionError(error, context) }
                resetStream(stream, error.code, why: error)
                // Each reset is answered work: counted against the flood budget, and while the peer reads nothing.
                do {
                    try costly()
                    try answered()
                } catch {
                    return connectionError(error, context)
                }
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if output.readableBytes > 0 {
            scheduleFlush(context)
        }
        context.fireChannelReadComplete()
    }

    private func receive(_ frame: HTTP2FrameDecoder.Frame, _ context: ChannelHandlerContext) throws(HTTP2Violation) {
        try streams.arriving(frame)
        switch frame {
        case let .data(id, payload, endStream, flowControlled):
            if flowControlled == 0, !endStream { try costly() }
            let verdict: HTTP2Streams.DataVerdict
            do {
                verdict = try streams.data(stream: id, payloadBytes: payload.readableBytes, flowControlled: flowControlled, endStream: endStream)
            } catch {
                reportConnectionWindow()
                throw error
            }
            if case .deliver(let closesStream) = verdict {
                peer?.received(payload, on: HTTP2StreamID(Int32(id)), endStream: endStream)
                if let window = streams.receiveWindow(of: id) {
                    peer?.inboundWindow(of: HTTP2StreamID(Int32(id)), is: window)
                }
                if closesStream { streamClosed(id, reason: nil) }
            }
            reportConnectionWindow()
        case let .headers(id, fragment, endStream, endHeaders, dependsOn):
            try receive(try streams.headers(stream: id, fragment: fragment, endStream: endStream, endHeaders: endHeaders, dependsOn: dependsOn), context)
        case let .continuation(_, fragment, endHeaders):
            try receive(try streams.continuation(fragment: fragment, endHeaders: endHeaders), context)
        case let .priority(id, dependsOn):
            try streams.priority(stream: id, dependsOn: dependsOn)
        case let .rstStream(id, code):
            if try streams.rstStream(stream: id) {
                dropWaiting(id)
                streamClosed(id, reason: code)
            }
        case .settings(let settings):
            try costly()
            let change = try streams.settings(settings)
            if let size = change.headerTableSize {
                headerEncoder.peerAllows(tableSize: size)
            }
            HTTP2FrameEncoder.writeSettingsAck(into: &output)
            try answered()
            if change.windowsGrew { sendWaiting(only: nil) }
            if let limit = change.maxConcurrentStreams {
                peer?.maxConcurrentStreamsChanged(to: limit)
                startQueued()
            }
        case .goAway(let lastStream, _):
            // The peer opens no more streams (a client's: those open finish) and takes no more of ours; ours after
            // its last stream were not processed. The peer hears of the GOAWAY first, then of those streams.
            peer?.goAwayReceived()
            for id in streams.goAwayReceived(lastStream: lastStream) {
                dropWaiting(id)
                streamClosed(id, reason: .refusedStream)
            }
            startQueued()  // refused, every one
        case .settingsAck, .unknown:
            break
        case .pushPromise:
            try streams.pushPromise()
        case let .ping(opaque, ack):
            guard !ack else { return }
            HTTP2FrameEncoder.writePing(opaque, ack: true, into: &output)
            try answered()
        case let .windowUpdate(id, increment):
            // The connection's window: every stream waiting may go; a stream's: that one, if it waits.
            if try streams.windowUpdate(stream: id, increment: increment) { sendWaiting(only: id == 0 ? nil : id) }
        }
    }

    private func receive(_ block: HTTP2Streams.HeaderBlock, _ context: ChannelHandlerContext) throws(HTTP2Violation) {
        switch block {
        case .incomplete:
            return
        case let .request(id, block, endStream):
            let (headers, check) = try decodeChecked(block, .request, stream: id, endStream: endStream)
            streams.requestAccepted(stream: id, endStream: endStream, contentLength: check.contentLength)
            peer?.received(headers, on: HTTP2StreamID(Int32(id)), endStream: endStream)
        case let .response(id, block, endStream):
            let (headers, check) = try decodeChecked(block, .response, stream: id, endStream: endStream)
            let closesStream = try streams.responseAccepted(stream: id, status: check.status ?? 0, endStream: endStream, contentLength: check.contentLength)
            peer?.received(headers, on: HTTP2StreamID(Int32(id)), endStream: endStream)
            if closesStream { streamClosed(id, reason: nil) }
        case let .trailers(id, block):
            let (trailers, _) = try decodeChecked(block, .trailers, stream: id, endStream: true)
            let closesStream = try streams.trailersReceived(stream: id)
            peer?.received(trailers, on: HTTP2StreamID(Int32(id)), endStream: true)
            if closesStream { streamClosed(id, reason: nil) }
        case let .discard(block, reset):
            _ = try decode(block)
            if let reset { throw .stream(reset.stream, reset.code, "refused") }
        }
    }

    /// A header block's fields, each held to RFC 9113 §8 as it is decoded; malformed, the stream is reset
    /// (PROTOCOL_ERROR) — once the whole block is decoded: the table must stay in step either way.
    private func decodeChecked(_ block: ByteBuffer, _ kind: HTTP2FieldCheck.Block, stream id: UInt32,
                               endStream: Bool) throws(HTTP2Violation) -> (HTTP2ReceivedFields, HTTP2FieldCheck) {
        var check = HTTP2FieldCheck(kind)
        var fields = try decode(block) { name, value in check.add(name: name, value: value) }
        if let why = check.finish(endStream: endStream) { throw .stream(id, .protocolError, "malformed \(kind): \(why)") }
        fields.everyValueFitsHTTP1 = check.everyRegularValueFitsHTTP1
        return (fields, check)
    }

    /// A header block's fields: a block HPACK cannot read leaves the two sides' tables apart for good (RFC 9113 §4.3).
    /// - Parameter each: sees each field as it is decoded.
    private func decode(_ block: ByteBuffer, each: (String, String) -> Void = { _, _ in }) throws(HTTP2Violation) -> HTTP2ReceivedFields {
        // How a field may be indexed is not kept: a request's or response's fields become an HTTP/1-shaped head, and
        // where one goes on over HTTP/2 the encoder keeps credentials out of its table itself (`HPACKBlockEncoder`).
        var fields = HTTP2ReceivedFields()
        do {
            try headerDecoder.decode(block) { name, value, _ in
                each(name, value)
                fields.append(name: name, value: value)
            }
        } catch {
            throw .connection(.compressionError, "a header block HPACK cannot decode (\(error))")
        }
        return fields
    }

    /// A frame that costs work without serving a request (`HTTP2FloodGuard`).
    private func costly() throws(HTTP2Violation) {
        if flood.counted(now: NIODeadline.now().uptimeNanoseconds) {
            throw .connection(.enhanceYourCalm, "more than \(flood.budget) frames that serve no request in \(flood.periodNanoseconds / 1_000_000_000) s")
        }
    }

    /// A PING or SETTINGS answered, or a stream reset for the peer's error: counted while its socket takes nothing.
    private func answered() throws(HTTP2Violation) {
        guard let context, !context.channel.isWritable else { return }
        answersWhileBlocked += 1
        if answersWhileBlocked > Self.maxAnswersWhileBlocked {
            throw .connection(.enhanceYourCalm, "\(answersWhileBlocked) frames answered while the peer reads nothing")
        }
    }

    private func reportConnectionWindow() {
        peer?.inboundWindow(of: .rootStream, is: streams.connectionReceiveWindow)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { answersWhileBlocked = 0 }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failWaiting()
        context.fireChannelInactive()
    }

    // MARK: Errors

    /// A stream error: RST_STREAM, and the peer hears that the stream closed and of the error. A server's hears of
    /// the close first, as NIO's handler told it (the stream is gone by the error: its exchange ends as on the
    /// client's reset); a client's hears of the error first, so that its exchange knows the upstream's response was
    /// malformed, not merely reset.
    private func resetStream(_ id: UInt32, _ code: HTTP2Code, why: HTTP2Violation) {
        let wasOpen = streams.resetSent(stream: id)
        dropWaiting(id)
        HTTP2FrameEncoder.writeRstStream(id, code, into: &output)
        guard wasOpen else { return }
        let error = NIOHTTP2Errors.streamError(streamID: HTTP2StreamID(Int32(id)), baseError: why)
        switch streams.role {
        case .server:
            streamClosed(id, reason: code)
            peer?.streamError(error)
        case .client:
            peer?.streamError(error)
            streamClosed(id, reason: code)
        }
    }

    /// A connection error: GOAWAY naming the last stream the peer opened, then the connection closes
    /// (RFC 9113 §5.4.1). Nothing after it is read.
    private func connectionError(_ violation: HTTP2Violation, _ context: ChannelHandlerContext) {
        failed = true
        let last = streams.goAwaySent(lastStream: streams.lastPeerStream)
        HTTP2FrameEncoder.writeGoAway(lastStream: last, violation.code, into: &output)
        let written = context.eventLoop.makePromise(of: Void.self)
        outputPromises.append(written)
        // No new stream opens from here (requests waiting are refused); once the GOAWAY is out, the peer hears, then the
        // connection closes. A peer that reads nothing keeps the GOAWAY in the socket: the connection closes
        // anyway after `goAwayFlushLimit`, or it would stay open (and an upstream one in its pool) for as long as the
        // peer holds it.
        startQueued()
        flushOutput(context)
        var ended = false
        let end = {
            guard !ended else { return }
            ended = true
            self.peer?.wentAway()
            context.close(promise: nil)
        }
        let deadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.goAwayFlushLimit, end)
        written.futureResult.assumeIsolated().whenComplete { _ in
            deadline.cancel()
            end()
        }
    }

    func streamClosed(_ id: UInt32, reason: HTTP2Code?) {
        peer?.streamClosed(HTTP2StreamID(Int32(id)), reason: reason.map { HTTP2ErrorCode(networkCode: Int($0.rawValue)) })
        startQueued()  // a client's stream closed: a request waiting may start
    }
}
