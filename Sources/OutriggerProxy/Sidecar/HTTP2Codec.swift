import NIOCore
import NIOHPACK
import NIOHTTP2
import OutriggerCore

/// An HTTP/2 connection at the byte level, in place of NIO's `NIOHTTP2Handler`, as a server (downstream, before
/// `HTTP2DownstreamConnection`) or a client (upstream, before `HTTP2UpstreamConnection`): frames are cut from the
/// bytes read (`HTTP2FrameDecoder`), checked against the connection's state (`HTTP2Streams`), header blocks
/// decoded with NIOHPACK and checked (`HTTP2FieldCheck`), and handed to its `peer` — the connection handler after it
/// — in typed calls (`HTTP2CodecPeer`: header blocks, DATA, a stream's close, error or window), no frame or event
/// boxed for the pipeline. What the peer's streams send (`writeHeaders`, `writeData`, …, called directly; a frame
/// written down the pipeline, the watcher's GOAWAY, goes the same way) is framed into one output buffer, DATA held
/// while a send window is shut, and leaves in one write per event-loop tick: the flushes asked for in a tick (a
/// downstream connection's streams answered by different upstream connections; an upstream connection's requests
/// started by different downstream reads) become one, run in the tick's task phase, after every ready socket has
/// been read. A client's stream opens as its request's HEADERS go out.
///
/// Violations are answered as RFC 9113 §5.4 scopes them: a stream error with RST_STREAM (the stream closes; a
/// client's exchange hears of the error first), a connection error with GOAWAY naming the last stream the peer
/// opened, then a close. The peer's GOAWAY closes this side's streams after its last one as refused (a client's
/// requests there go again elsewhere).
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

    /// The most output storage a connection keeps from one write to the next (more only while more waits to go).
    static let maxKeptOutput = 64 * 1024

    private var decoder: HTTP2FrameDecoder
    private var streams: HTTP2Streams
    private var headerDecoder: HPACKDecoder
    private var headerEncoder = HPACKBlockEncoder()
    private var output: ByteBuffer
    private var outputPromises: [EventLoopPromise<Void>] = []
    /// Streams whose DATA (and trailers behind it) wait for a send window, in the order they began to wait.
    private var waiting: [UInt32: [Held]] = [:]
    private var waitingOrder: [UInt32] = []
    /// A client's requests past the peer's SETTINGS_MAX_CONCURRENT_STREAMS, their HEADERS and all behind them, waiting
    /// in order (stream ids rise) for a stream to close.
    private var queued: [UInt32: [Held]] = [:]
    private var queuedOrder: [UInt32] = []
    private var startingQueued = false
    /// A flush is due in this tick's task phase.
    private var flushScheduled = false
    private var context: ChannelHandlerContext?
    /// The connection handler after the codec (it sets itself when added); let go when either leaves the pipeline.
    var peer: (any HTTP2CodecPeer)?
    private var prefaceSent = false
    /// A connection error was answered: nothing more is read.
    private var failed = false
    private var answersWhileBlocked = 0
    private var flood = HTTP2FloodGuard()

    private enum Held {
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
        headerDecoder = HPACKDecoder(allocator: allocator, maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize,
                                     maxHeaderListSize: limits.maxHeaderBlock)
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
            let headers = try decode(block)
            let check = try checked(headers, .request, stream: id, endStream: endStream)
            streams.requestAccepted(stream: id, endStream: endStream, contentLength: check.contentLength)
            peer?.received(headers, on: HTTP2StreamID(Int32(id)), endStream: endStream)
        case let .response(id, block, endStream):
            let headers = try decode(block)
            let check = try checked(headers, .response, stream: id, endStream: endStream)
            let closesStream = try streams.responseAccepted(stream: id, status: check.status ?? 0, endStream: endStream, contentLength: check.contentLength)
            peer?.received(headers, on: HTTP2StreamID(Int32(id)), endStream: endStream)
            if closesStream { streamClosed(id, reason: nil) }
        case let .trailers(id, block):
            let trailers = try decode(block)
            _ = try checked(trailers, .trailers, stream: id, endStream: true)
            let closesStream = try streams.trailersReceived(stream: id)
            peer?.received(trailers, on: HTTP2StreamID(Int32(id)), endStream: true)
            if closesStream { streamClosed(id, reason: nil) }
        case let .discard(block, reset):
            _ = try decode(block)
            if let reset { throw .stream(reset.stream, reset.code, "refused") }
        }
    }

    /// A header block's fields held to RFC 9113 §8; malformed, the stream is reset (PROTOCOL_ERROR).
    private func checked(_ fields: HPACKHeaders, _ block: HTTP2FieldCheck.Block, stream id: UInt32, endStream: Bool) throws(HTTP2Violation) -> HTTP2FieldCheck {
        var check = HTTP2FieldCheck(block)
        for (name, value, _) in fields { check.add(name: name, value: value) }
        if let why = check.finish(endStream: endStream) { throw .stream(id, .protocolError, "malformed \(block): \(why)") }
        return check
    }

    /// A header block's fields: a block HPACK cannot read leaves the two sides' tables apart for good (RFC 9113 §4.3).
    private func decode(_ block: ByteBuffer) throws(HTTP2Violation) -> HPACKHeaders {
        var block = block
        do {
            return try headerDecoder.decodeHeaders(from: &block)
        } catch {
            throw .connection(.compressionError, "a header block HPACK cannot decode (\(error))")
        }
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

    private func streamClosed(_ id: UInt32, reason: HTTP2Code?) {
        peer?.streamClosed(HTTP2StreamID(Int32(id)), reason: reason.map { HTTP2ErrorCode(networkCode: Int($0.rawValue)) })
        startQueued()  // a client's stream closed: a request waiting may start
    }

    // MARK: Outbound

    /// A frame written down the pipeline (the watcher's GOAWAY; tests): sent as the peer's calls are.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = unwrapOutboundIn(data)
        let id = frame.streamID
        switch frame.payload {
        case .headers(let headers):
            writeHeaders(.block(headers.headers), on: id, endStream: headers.endStream, promise: promise)
        case .data(let data):
            guard case .byteBuffer(let body) = data.data else {
                promise?.fail(NIOHTTP2Errors.unsupported(info: "file regions over HTTP/2"))
                return
            }
            writeData(body, on: id, endStream: data.endStream, promise: promise)
        case .rstStream(let code):
            writeReset(id, code, promise: promise)
        case .windowUpdate(let increment):
            writeWindowUpdate(id, increment: increment, promise: promise)
        case .goAway(let lastStreamID, let code, _):
            let last = streams.goAwaySent(lastStream: UInt32(Int32(lastStreamID)))
            HTTP2FrameEncoder.writeGoAway(lastStream: last, HTTP2Code(rawValue: UInt32(code.networkCode)), into: &output)
            add(promise)
        case .ping(let ping, let ack):
            HTTP2FrameEncoder.writePing(ping.integer, ack: ack, into: &output)
            add(promise)
        default:
            promise?.fail(NIOHTTP2Errors.unsupported(info: "a \(frame.payload) frame from the server side"))
        }
    }

    /// A header block on a stream: a request's head opens its stream (a client's), a response's head, or trailers.
    func writeHeaders(_ fields: HTTP2HeaderFields, on id: HTTP2StreamID, endStream: Bool, promise: EventLoopPromise<Void>?) {
        guard !removed(failing: promise) else { return }
        send(.headers(fields, endStream: endStream, promise), on: UInt32(Int32(id)))
    }

    func writeData(_ body: ByteBuffer, on id: HTTP2StreamID, endStream: Bool, promise: EventLoopPromise<Void>?) {
        guard !removed(failing: promise) else { return }
        send(.data(body, endStream: endStream, promise), on: UInt32(Int32(id)))
    }

    /// Out of the pipeline (the connection closed): nothing written now would go, so its promise fails.
    private func removed(failing promise: EventLoopPromise<Void>?) -> Bool {
        guard context == nil else { return false }
        promise?.fail(ChannelError.ioOnClosedChannel)
        return true
    }

    /// RST_STREAM, unless the stream closed either way (RFC 9113 §5.4.2: no RST_STREAM for an RST_STREAM); the peer
    /// hears the stream closed.
    func writeReset(_ streamID: HTTP2StreamID, _ code: HTTP2ErrorCode, promise: EventLoopPromise<Void>?) {
        guard !removed(failing: promise) else { return }
        let id = UInt32(Int32(streamID))
        if !queued.isEmpty, let held = queued.removeValue(forKey: id) {
            // A request that never started: nothing goes out, and its stream closes itself.
            queuedOrder.removeAll { $0 == id }
            fail(held, NIOHTTP2Errors.streamClosed(streamID: streamID, errorCode: code))
            promise?.succeed(())
            return
        }
        guard streams.resetSent(stream: id) else {
            promise?.succeed(())
            return
        }
        dropWaiting(id)
        let wireCode = HTTP2Code(rawValue: UInt32(code.networkCode))
        HTTP2FrameEncoder.writeRstStream(id, wireCode, into: &output)
        add(promise)
        streamClosed(id, reason: wireCode)
    }

    /// Credit back to the peer (stream 0: the connection's); the peer hears the window's new size.
    func writeWindowUpdate(_ streamID: HTTP2StreamID, increment: Int, promise: EventLoopPromise<Void>?) {
        guard !removed(failing: promise) else { return }
        let id = UInt32(Int32(streamID))
        guard let window = streams.windowUpdateSent(stream: id, increment: increment) else {
            promise?.succeed(())
            return
        }
        HTTP2FrameEncoder.writeWindowUpdate(id, increment: increment, into: &output)
        add(promise)
        peer?.inboundWindow(of: streamID, is: window)
    }

    /// What was written goes out in this tick (`flush(context:)` for the peer, which calls the codec directly).
    func flush() {
        if let context { scheduleFlush(context) }
    }

    func flush(context: ChannelHandlerContext) {
        scheduleFlush(context)
    }

    /// What was framed goes out before the close, flush asked for or not yet (a stream's last frame can close the
    /// connection: a graceful GOAWAY's).
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        flushOutput(context)
        context.close(mode: mode, promise: promise)
    }

    /// What was framed goes out in this tick's task phase, with whatever else is framed before then.
    private func scheduleFlush(_ context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            guard self.flushScheduled, let context = self.context else { return }
            self.flushOutput(context)
        }
    }

    private func add(_ promise: EventLoopPromise<Void>?) {
        if let promise { outputPromises.append(promise) }
    }

    /// What was framed goes to the socket now.
    private func flushOutput(_ context: ChannelHandlerContext) {
        flushScheduled = false
        let written = writeOutput(context)
        context.flush()
        if written > 0 { reuseOutput(afterWriting: written) }
    }

    /// What was framed since the last write, as one buffer; its writers' promises complete with it.
    /// - Returns: how many bytes were handed to the channel (`output` shares their storage, read past them).
    private func writeOutput(_ context: ChannelHandlerContext) -> Int {
        guard output.readableBytes > 0 else {
            for promise in outputPromises { promise.succeed(()) }
            outputPromises.removeAll(keepingCapacity: true)
            return 0
        }
        // Read off, not copied: what a promise's callback frames meanwhile goes after them, never with them.
        let bytes = output.readSlice(length: output.readableBytes)!
        switch outputPromises.count {
        case 0:
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: nil)
        case 1:
            // Taken off first: a failed write completes it at once, and its callback may write again.
            let promise = outputPromises.removeFirst()
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        default:
            let promises = outputPromises
            outputPromises.removeAll(keepingCapacity: true)
            let written = context.eventLoop.makePromise(of: Void.self)
            written.futureResult.assumeIsolated().whenComplete { result in
                for promise in promises { promise.completeWith(result) }
            }
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: written)
        }
        return bytes.readableBytes
    }

    /// After a flush, framing starts again at the front of the same storage: the socket nearly always took the bytes
    /// in the flush, so the storage is the codec's alone again and no buffer is allocated per write (two allocations
    /// each). What a write's completion framed during the flush moves to the front and goes with the next flush. The
    /// storage follows the writes: past 4 times the one just written (at least 1 KiB) or `maxKeptOutput`, it shrinks to
    /// fit, so a connection keeps about what it last needed, as when each write had a new buffer sized by the one before.
    private func reuseOutput(afterWriting written: Int) {
        let fitting = max(1024, min(written, Self.maxKeptOutput))
        if output.readableBytes == 0 {
            // Kept when the codec's alone; a new one of `fitting` while the socket still holds the bytes.
            output.clear(minimumCapacity: fitting)
        } else {
            output.discardReadBytes()
        }
        if output.capacity > min(4 * fitting, Self.maxKeptOutput) {
            output.shrinkBufferCapacity(to: max(fitting, output.readableBytes))
        }
    }

    /// The output storage's size now (tests).
    var outputCapacity: Int { output.capacity }

    /// A stream's next frame: behind what waits on the stream (a window, or its request's start), or out now.
    private func send(_ item: Held, on id: UInt32) {
        // Nearly always nothing waits: the empty checks spare two hashed lookups per frame.
        if !waiting.isEmpty, waiting[id] != nil {
            waiting[id]!.append(item)
        } else if !queued.isEmpty, queued[id] != nil {
            queued[id]!.append(item)
        } else {
            switch item {
            case let .headers(headers, endStream, promise):
                sendHeaders(id, headers, endStream: endStream, promise: promise)
            case let .data(body, endStream, promise):
                if let rest = sendData(id, body, endStream: endStream, promise: promise) {
                    waiting[id] = [rest]
                    waitingOrder.append(id)
                }
            }
        }
    }

    private func sendHeaders(_ id: UInt32, _ headers: HTTP2HeaderFields, endStream: Bool, promise: EventLoopPromise<Void>?) {
        // A client's request opens its stream.
        if streams.role == .client {
            // A new request behind one waiting waits too: stream ids rise on the wire.
            let behindWaiting = queuedOrder.first.map { $0 < id } ?? false
            switch behindWaiting ? .wait : streams.requestStarting(stream: id, headRequest: headers.isHeadRequest) {
            case .opened, .notNew:
                break
            case .wait:
                queued[id] = [.headers(headers, endStream: endStream, promise)]
                queuedOrder.append(id)
                return
            case .refused:
                promise?.fail(NIOHTTP2Errors.streamClosed(streamID: HTTP2StreamID(Int32(id)), errorCode: .refusedStream))
                streamClosed(id, reason: .refusedStream)
                return
            }
        }
        guard streams.canSend(on: id) else {
            promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: HTTP2StreamID(Int32(id))))
            // A client's request that can no longer open (its id passed by a later one's) is refused: it goes elsewhere.
            if streams.role == .client { streamClosed(id, reason: .refusedStream) }
            return
        }
        let start = HTTP2FrameEncoder.startHeaders(into: &output)
        headerEncoder.startBlock(into: &output)
        headers.encode(with: &headerEncoder, into: &output)
        HTTP2FrameEncoder.finishHeaders(startingAt: start, stream: id, endStream: endStream, maxFrameSize: streams.peerMaxFrameSize, in: &output)
        add(promise)
        if streams.headersSent(stream: id, endStream: endStream) { streamClosed(id, reason: nil) }
    }

    /// Frames as much of `body` as the stream's and the connection's windows let go now.
    /// - Returns: what must wait for a window, or nil when all of it went.
    private func sendData(_ id: UInt32, _ body: ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>?) -> Held? {
        guard streams.canSend(on: id) else {
            promise?.fail(NIOHTTP2Errors.noSuchStream(streamID: HTTP2StreamID(Int32(id))))
            return nil
        }
        var body = body
        repeat {
            let room = streams.sendable(on: id)
            // An empty frame needs no window; a body waits for room.
            if room == 0, body.readableBytes > 0 { return .data(body, endStream: endStream, promise) }
            let piece = body.readSlice(length: min(room, body.readableBytes))!
            let last = body.readableBytes == 0
            HTTP2FrameEncoder.writeData(piece, stream: id, endStream: endStream && last, into: &output)
            let closes = streams.dataSent(stream: id, bytes: piece.readableBytes, endStream: endStream && last)
            if last {
                add(promise)
                if closes { streamClosed(id, reason: nil) }
                return nil
            }
        } while true
    }

    /// A window grew: streams waiting send what they can, in the order they began to wait — all of them (the
    /// connection's window), or `only` the one whose window grew.
    private func sendWaiting(only: UInt32?) {
        guard !waitingOrder.isEmpty else { return }
        if let only, waiting[only] == nil { return }
        // Taken first: a stream closing as its last frame goes can make others write (and wait) meanwhile.
        let order = only.map { id in [id] } ?? waitingOrder
        if let only { waitingOrder.removeAll { $0 == only } } else { waitingOrder.removeAll(keepingCapacity: true) }
        for id in order {
            guard var held = waiting.removeValue(forKey: id) else { continue }
            sending: while !held.isEmpty {
                switch held.removeFirst() {
                case let .data(body, endStream, promise):
                    if let rest = sendData(id, body, endStream: endStream, promise: promise) {
                        held.insert(rest, at: 0)
                        break sending
                    }
                case let .headers(headers, endStream, promise):
                    sendHeaders(id, headers, endStream: endStream, promise: promise)
                }
            }
            if !held.isEmpty {
                waiting[id] = held
                waitingOrder.append(id)
            }
        }
        if let context {
            scheduleFlush(context)
        }
    }

    /// Requests waiting for a stream to close start, in order, while the peer allows (or are refused after a GOAWAY).
    /// What they frame is flushed in this tick (outside a read, a stream closed as a request's last frame went:
    /// nothing else may flush this connection soon).
    private func startQueued() {
        guard !startingQueued, !queuedOrder.isEmpty else { return }
        startingQueued = true
        defer { startingQueued = false }
        var started = false
        while let id = queuedOrder.first, streams.waitingRequestMayStart {
            queuedOrder.removeFirst()
            guard let held = queued.removeValue(forKey: id) else { continue }
            for item in held { send(item, on: id) }
            started = true
        }
        if started, let context { scheduleFlush(context) }
    }

    /// The stream is gone: what waited for its window never goes.
    private func dropWaiting(_ id: UInt32) {
        guard !waiting.isEmpty, let held = waiting.removeValue(forKey: id) else { return }
        waitingOrder.removeAll { $0 == id }
        fail(held, NIOHTTP2Errors.streamClosed(streamID: HTTP2StreamID(Int32(id)), errorCode: .cancel))
    }

    private func fail(_ held: [Held], _ error: Error) {
        for item in held { item.promise?.fail(error) }
    }

    private func failWaiting() {
        let all = Array(waiting.values) + Array(queued.values)
        waiting.removeAll()
        waitingOrder.removeAll()
        queued.removeAll()
        queuedOrder.removeAll()
        for held in all { fail(held, ChannelError.ioOnClosedChannel) }
        for promise in outputPromises { promise.fail(ChannelError.ioOnClosedChannel) }
        outputPromises.removeAll()
    }
}
