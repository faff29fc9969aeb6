import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// An HTTP/2 connection to an upstream at the frame level: sits after NIO's `NIOHTTP2Handler` (client mode,
/// no multiplexer) and carries each stream's request and response for its `UpstreamExchangeHandler` — no
/// child channel, pipeline or HTTP/1 codec pair per stream. Stream ids are taken as request heads go out, so
/// they rise in the order NIO sends them. It also reports what the upstream says on stream 0: GOAWAY and
/// SETTINGS_MAX_CONCURRENT_STREAMS.
final class HTTP2UpstreamConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    static let connectionWindowTarget = 1 << 20
    static let streamWindowTarget = 65_535

    /// `https` over TLS: the `:scheme` of every request.
    let scheme: String
    /// Called with the last stream id the upstream says it processes, before the streams past it close.
    var goAwayReceived: ((HTTP2StreamID) -> Void)?
    var maxConcurrentStreamsChanged: ((Int) -> Void)?
    /// The open streams and the way out; the streams write through it.
    let frames = HTTP2StreamTable<HTTP2UpstreamStream>(windowTarget: connectionWindowTarget)
    private var nextStreamID = HTTP2StreamID(1)
    private var goAwayLastStreamID: HTTP2StreamID?
    var isWritable: Bool { frames.isWritable }

    init(scheme: String) {
        self.scheme = scheme
    }

    func handlerAdded(context: ChannelHandlerContext) {
        frames.attach(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAll()
        frames.detach()
    }

    /// A stream for `exchange`; it gets its id when its head goes out.
    func makeStream(for exchange: UpstreamExchangeHandler) -> HTTP2UpstreamStream {
        HTTP2UpstreamStream(connection: self, exchange: exchange)
    }

    func assignID(to stream: HTTP2UpstreamStream) -> HTTP2StreamID {
        let id = nextStreamID
        nextStreamID = HTTP2StreamID(Int32(id) + 2)
        frames.add(stream, as: id)
        return id
    }

    /// Whether a stream closed with this id was past the last id of the upstream's GOAWAY (not processed).
    func refusedByGoAway(_ id: HTTP2StreamID) -> Bool {
        goAwayLastStreamID.map { id > $0 } ?? false
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            frames[frame.streamID]?.receive(headers.headers, endStream: headers.endStream)
        case .data(let data):
            guard case .byteBuffer(let body) = data.data else { return }
            frames[frame.streamID]?.receive(body, endStream: data.endStream)
        case .goAway(let lastStreamID, _, _):
            goAwayLastStreamID = min(goAwayLastStreamID ?? lastStreamID, lastStreamID)
            goAwayReceived?(lastStreamID)
        case .settings(.settings(let settings)):
            for setting in settings where setting.parameter == .maxConcurrentStreams { maxConcurrentStreamsChanged?(setting.value) }
        case .pushPromise(let promise):
            // No server push is asked for (SETTINGS_ENABLE_PUSH 0): a promised stream is refused.
            frames.write(HTTP2Frame(streamID: promise.pushedStreamID, payload: .rstStream(.refusedStream)), promise: nil)
            frames.flush()
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        frames.readEnded()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !frames.handle(event) { context.fireUserInboundEventTriggered(event) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if !frames.streamError(error) { context.fireErrorCaught(error) }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        frames.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeAll()
        context.fireChannelInactive()
    }

    private func closeAll() {
        for stream in frames.closingAll() { stream.connectionClosed() }
    }

    func forget(_ id: HTTP2StreamID) {
        frames.remove(id)
    }
}

/// One request's stream on an `HTTP2UpstreamConnection`. The request head is held until the next part, so a
/// request without a body is one HEADERS frame with END_STREAM; response DATA is held while the downstream
/// cannot take more (credit goes back as it is handed on).
final class HTTP2UpstreamStream: HTTP2ExchangeStream {
    private let connection: HTTP2UpstreamConnection
    private(set) var exchange: UpstreamExchangeHandler?
    private(set) var id: HTTP2StreamID?
    private var requestMethod: HTTPMethod = .GET
    private var requestHead: HTTPRequestHead?
    private var requestData: ByteBuffer?
    private var requestEnded = false
    private var resetSent = false
    private var watermark = SendWatermark.http2Stream

    private var finalHeadReceived = false
    private var held = HTTP2HeldParts<HTTPResponseHead>(windowTarget: HTTP2UpstreamConnection.streamWindowTarget)
    private var touchedThisRead = false
    /// Closed cleanly while response parts were still held: the exchange hears of the close once it has them.
    private var closedBehindHeld = false
    private(set) var isClosed = false

    init(connection: HTTP2UpstreamConnection, exchange: UpstreamExchangeHandler) {
        self.connection = connection
        self.exchange = exchange
    }

    var isWritable: Bool { watermark.isBelow && connection.isWritable && !isClosed }

    // MARK: Request

    func write(_ part: HTTPClientRequestPart, promise: EventLoopPromise<Void>?) {
        guard !isClosed, !resetSent, !requestEnded else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch part {
        case .head(let head):
            requestMethod = head.method
            requestHead = head
            promise?.succeed(())
        case .body(.byteBuffer(let body)):
            sendHeldHead(endStream: false)
            sendHeldData()
            requestData = body
            promise?.succeed(())
        case .body(.fileRegion):
            preconditionFailure("HTTP/2 requests are relayed from buffers")
        case .end(let trailers):
            requestEnded = true
            if let trailers {
                sendHeldHead(endStream: false)
                sendHeldData()
                send(.headers(.init(headers: HPACKHeaders(trailers: trailers), endStream: true)), promise: promise)
            } else if let data = requestData {
                requestData = nil
                sendHeldHead(endStream: false)
                send(.data(.init(data: .byteBuffer(data), endStream: true)), promise: promise)
            } else if requestHead != nil {
                sendHeldHead(endStream: true)
                promise?.succeed(())
            } else {
                send(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), promise: promise)
            }
        }
    }

    func flush() {
        sendHeldHead(endStream: false)
        sendHeldData()
        connection.frames.flush()
    }

    private func sendHeldHead(endStream: Bool) {
        guard let head = requestHead else { return }
        requestHead = nil
        id = connection.assignID(to: self)
        send(.headers(.init(headers: HPACKHeaders(requestHead: head, scheme: connection.scheme), endStream: endStream)))
    }

    /// A body part that is not the last: counted until it is out, for the stream's writability.
    private func sendHeldData() {
        guard let data = requestData, let eventLoop = connection.frames.eventLoop else { return }
        requestData = nil
        let bytes = data.readableBytes
        let written = eventLoop.makePromise(of: Void.self)
        if watermark.queued(bytes), connection.isWritable { exchange?.writabilityChanged() }
        written.futureResult.assumeIsolated().whenComplete { _ in
            if self.watermark.sent(bytes), self.connection.isWritable { self.exchange?.writabilityChanged() }
        }
        send(.data(.init(data: .byteBuffer(data))), promise: written)
    }

    private func send(_ payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>? = nil) {
        guard let id else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        connection.frames.write(HTTP2Frame(streamID: id, payload: payload), promise: promise)
    }

    func connectionWritabilityChanged() {
        if watermark.isBelow { exchange?.writabilityChanged() }
    }

    func resetByNIO(_ error: Error) {
        // A malformed response: the exchange fails.
        exchange?.failed(error)
    }

    // MARK: Response

    func receive(_ block: HPACKHeaders, endStream: Bool) {
        if finalHeadReceived {
            deliver(.end(HTTPHeaders(regularFieldsOf: block)))
            return
        }
        guard let head = HTTPResponseHead.fromHTTP2(block, endStream: endStream, requestMethod: requestMethod) else {
            reset(.protocolError)
            return
        }
        if head.status.code >= 200 { finalHeadReceived = true }
        deliver(.head(head))
        if endStream { deliver(.end(nil)) }
    }

    func receive(_ body: ByteBuffer, endStream: Bool) {
        if body.readableBytes > 0 { deliver(.body(body)) }
        if endStream { deliver(.end(nil)) }
    }

    private func deliver(_ part: HTTPClientResponsePart) {
        guard let exchange else {
            if case .end = part { held.peerEndedStream() }  // nobody takes it, but the stream has ended
            return
        }
        guard let part = held.arrived(part, exchangeTakesBody: exchange.mayRead) else {
            exchange.holdingReads()
            return
        }
        exchange.received(part)
        if !touchedThisRead {
            touchedThisRead = true
            connection.frames.touched(self)
        }
    }

    func readEnded() {
        touchedThisRead = false
        exchange?.readComplete()
    }

    /// The downstream takes more: held parts, as far as it takes them.
    func read() {
        var delivered = 0
        while let exchange, let part = held.take(exchangeTakesBody: exchange.mayRead) {
            delivered += 1
            exchange.received(part)
        }
        if !held.isEmpty { exchange?.holdingReads() }
        if !isClosed, let id, let increment = held.creditToReturn() { connection.frames.sendWindowUpdate(id, increment) }
        if delivered > 0 { exchange?.readComplete() }
        if held.isEmpty, closedBehindHeld { finish(failure: nil) }
    }

    func windowReported(size: Int) {
        if let id, let increment = held.windowReported(size: size) { connection.frames.sendWindowUpdate(id, increment) }
    }

    // MARK: Closing

    func reset() {
        reset(.cancel)
    }

    /// The exchange gives up on the stream (or the response was malformed): RST_STREAM, unless it closed.
    func reset(_ code: HTTP2ErrorCode) {
        guard !isClosed, !resetSent else { return }
        resetSent = true
        requestHead = nil
        requestData = nil
        guard let id else {
            // Its head never went out: nothing to tell the upstream.
            finish(failure: nil)
            return
        }
        connection.frames.write(HTTP2Frame(streamID: id, payload: .rstStream(code)), promise: nil)
        // NIO's handler reports the stream closed while it sends the frame; if it knew the stream no more, it
        // reports nothing and the stream closes here.
        connection.frames.flush()
        if !isClosed { closed(reason: code) }
    }

    /// NIO closed the stream: both sides ended (`reason` nil), or a reset either way.
    func closed(reason: HTTP2ErrorCode?) {
        guard !isClosed else { return }
        isClosed = true
        if let id { connection.forget(id) }
        guard let reason, let id else {
            // Cleanly: parts still held go on first.
            if held.isEmpty { finish(failure: nil) } else { closedBehindHeld = true }
            return
        }
        // A stream past the last id of the upstream's GOAWAY was not processed, whatever code NIO closed it with.
        let code = connection.refusedByGoAway(id) ? .refusedStream : reason
        finish(failure: NIOHTTP2Errors.streamClosed(streamID: id, errorCode: code))
    }

    /// The connection went: whatever is held is lost with it.
    func connectionClosed() {
        isClosed = true
        if let id { connection.forget(id) }
        finish(failure: nil)
    }

    private func finish(failure: Error?) {
        isClosed = true
        held.removeAll()
        guard let exchange else { return }
        self.exchange = nil
        if let failure { exchange.failed(failure) }
        exchange.inactive()
    }
}

extension HPACKHeaders {
    /// A request head as an HTTP/2 header block: pseudo-fields first (`:authority` from `host`), names
    /// lower-cased, connection-specific fields left out but `te: trailers` (gRPC needs it).
    init(requestHead head: HTTPRequestHead, scheme: String) {
        self.init()
        reserveCapacity(head.headers.count + 4)
        add(name: ":method", value: head.method.rawValue)
        add(name: ":scheme", value: scheme)
        if let host = head.headers.first(name: "host") { add(name: ":authority", value: host) }
        add(name: ":path", value: head.uri)
        for (name, value) in head.headers {
            if name.utf8.count == 4, name.lowercased() == "host" { continue }
            if ProxyHeaders.isConnectionSpecific(name) {
                if name.lowercased() == "te", value.lowercased() == "trailers" { add(name: "te", value: "trailers") }
                continue
            }
            add(name: name.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) ? name.lowercased() : name, value: value)
        }
    }
}

extension HTTPResponseHead {
    /// An HTTP/2 response header block as an HTTP/1-shaped head; like NIO's codec, a final response that has a
    /// body but no `content-length` is marked chunked (or `content-length: 0` when it ended with its headers),
    /// so an HTTP/1.1 client's framing is known. Nil without a valid `:status`.
    static func fromHTTP2(_ block: HPACKHeaders, endStream: Bool, requestMethod: HTTPMethod) -> HTTPResponseHead? {
        var status: Int?
        var headers = HTTPHeaders()
        headers.reserveCapacity(block.count + 1)
        var hasContentLength = false
        for (name, value, _) in block {
            if name.utf8.first == UInt8(ascii: ":") {
                if name == ":status" { status = Int(value) }
                continue
            }
            if name == "content-length" { hasContentLength = true }
            headers.add(name: name, value: value)
        }
        guard let status, (100...999).contains(status) else { return nil }
        if !(100..<200).contains(status), status != 204, status != 304, requestMethod != .HEAD, requestMethod != .CONNECT, !hasContentLength {
            headers.add(name: endStream ? "content-length" : "transfer-encoding", value: endStream ? "0" : "chunked")
        }
        return HTTPResponseHead(version: .http2, status: HTTPResponseStatus(statusCode: status), headers: headers)
    }
}
