import NIOCore
import NIOHPACK
import NIOHTTP2
import OutriggerCore

/// `HTTP2Codec`'s outbound side: what the peer's streams send, framed into the one output buffer, DATA held while a send
/// window is shut, a client's requests queued past the peer's stream limit, and the one write per event-loop tick.
extension HTTP2Codec {
    /// The most output storage a connection keeps from one write to the next (more only while more waits to go).
    static let maxKeptOutput = 64 * 1024

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
    func scheduleFlush(_ context: ChannelHandlerContext) {
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
    func flushOutput(_ context: ChannelHandlerContext) {
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
    func sendWaiting(only: UInt32?) {
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
    func startQueued() {
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
    func dropWaiting(_ id: UInt32) {
        guard !waiting.isEmpty, let held = waiting.removeValue(forKey: id) else { return }
        waitingOrder.removeAll { $0 == id }
        fail(held, NIOHTTP2Errors.streamClosed(streamID: HTTP2StreamID(Int32(id)), errorCode: .cancel))
    }

    private func fail(_ held: [Held], _ error: Error) {
        for item in held { item.promise?.fail(error) }
    }

    func failWaiting() {
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
