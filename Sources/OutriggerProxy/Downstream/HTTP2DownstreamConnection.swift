import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// An HTTP/2 client connection at the frame level: sits after NIO's `NIOHTTP2Handler` (which keeps the
/// protocol's state, HPACK and outbound flow control) and hands each stream's frames, as HTTP request parts, to
/// the stream's `ProxyRequestHandler` — no child channel, pipeline or HTTP/1 codec pair per stream.
///
/// - Heads that arrive in a read are handed on when the read ends, so a stream its client resets in the same
///   read (rapid reset) is known to be reset before its exchange starts.
/// - Inbound flow control is ours (`HTTP2InboundWindow`): credit goes back as the exchanges take the bytes.
/// - A stream is writable while less than `highWatermark` of its response waits to go out, and the connection
///   is writable.
final class HTTP2DownstreamConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Connection-level window kept for the client; its streams' are `streamWindowTarget` (NIO's default).
    static let connectionWindowTarget = 1 << 20
    static let streamWindowTarget = 65_535

    private let watcher: HTTP2ConnectionWatcher
    private let makeExchange: () -> ProxyRequestHandler
    /// The open streams and the way out; the streams write through it.
    let frames = HTTP2StreamTable<HTTP2DownstreamStream>(windowTarget: connectionWindowTarget)
    private var clientAddress: String?
    /// Streams whose head came in the read being handled: started when it ends.
    private var opened: [HTTP2DownstreamStream] = []
    var isWritable: Bool { frames.isWritable }

    init(watcher: HTTP2ConnectionWatcher, makeExchange: @escaping () -> ProxyRequestHandler) {
        self.watcher = watcher
        self.makeExchange = makeExchange
    }

    func handlerAdded(context: ChannelHandlerContext) {
        frames.attach(context)
        clientAddress = context.channel.remoteAddress?.ipAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAll()
        frames.detach()
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if let stream = frames[frame.streamID] {
                // A second header block is the request's trailers (NIO's state machine allows no other).
                stream.receive(.end(HTTPHeaders(regularFieldsOf: headers.headers)))
            } else {
                open(frame.streamID, headers)
            }
        case .data(let data):
            guard let stream = frames[frame.streamID], case .byteBuffer(let body) = data.data else { return }
            if body.readableBytes > 0 { stream.receive(.body(body)) }
            if data.endStream { stream.receive(.end(nil)) }
        default:
            break  // SETTINGS, PING, GOAWAY, WINDOW_UPDATE, RST_STREAM: NIO's handler acts on them.
        }
    }

    private func open(_ id: HTTP2StreamID, _ block: HTTP2Frame.FramePayload.Headers) {
        guard let (head, malformed) = HTTPRequestHead.fromHTTP2(block.headers, endStream: block.endStream) else {
            // No :method, :path or :scheme (NIO's validation lets CONNECT through without the last two).
            frames.write(HTTP2Frame(streamID: id, payload: .rstStream(.protocolError)), promise: nil)
            frames.flush()
            return
        }
        let exchange = makeExchange()
        let stream = HTTP2DownstreamStream(id: id, connection: self, exchange: exchange, head: head, endStream: block.endStream)
        exchange.malformedHTTP2Head = malformed
        exchange.attach(.http2(stream), clientAddress: clientAddress)
        frames.add(stream, as: id)
        opened.append(stream)
        watcher.streamOpened()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        startOpenedStreams()
        frames.readEnded()
        context.fireChannelReadComplete()
    }

    private func startOpenedStreams() {
        guard !opened.isEmpty else { return }
        let streams = opened
        opened.removeAll(keepingCapacity: true)
        for stream in streams { stream.start() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if frames.handle(event) { return }
        switch event {
        case is ChannelShouldQuiesceEvent:
            // Shutdown: no new streams; the connection closes once the open ones are done.
            watcher.goAwayGracefully()
        case is SendTimedOut:
            // The whole connection is cut for taking nothing: every exchange on it ends here, logged as such.
            for stream in frames.all { stream.exchange?.sendTimedOut() }
            context.fireUserInboundEventTriggered(event)
        default:
            context.fireUserInboundEventTriggered(event)
        }
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
        let unstarted = opened
        opened.removeAll()
        for stream in frames.closingAll() { stream.closed() }
        // Their exchanges never saw a head: they only let go of the stream.
        for stream in unstarted { stream.abandon() }
    }

    func forget(_ stream: HTTP2DownstreamStream) {
        guard frames.remove(stream.id) else { return }
        watcher.streamClosed()
    }
}

/// One stream of an `HTTP2DownstreamConnection`: the request parts it holds until its exchange takes them, and
/// the response, turned into frames — the head held until the next part, so that a response without a body is
/// one HEADERS frame with END_STREAM, and the last body part carrying END_STREAM.
final class HTTP2DownstreamStream: HTTP2ExchangeStream {
    let id: HTTP2StreamID
    private let connection: HTTP2DownstreamConnection
    private(set) var exchange: ProxyRequestHandler?
    /// The request head, until the read that brought it ends.
    private var head: HTTPRequestHead?
    private var headEndsStream: Bool
    /// Parts received that the exchange does not take yet (a body while its upstream cannot take more).
    private var held = HTTP2HeldParts<HTTPRequestHead>(windowTarget: HTTP2DownstreamConnection.streamWindowTarget)
    private var touchedThisRead = false
    /// The client reset the stream (or NIO did) before its head was handed on: nothing goes upstream.
    private(set) var resetBeforeItsHead = false
    private(set) var isClosed = false

    private var responseHead: HTTPResponseHead?
    private var responseData: ByteBuffer?
    private var responseEnded = false
    private var resetSent = false
    /// Response bytes written to NIO's handler and not yet out (flow control or the socket holds them).
    private var watermark = SendWatermark.http2Stream

    init(id: HTTP2StreamID, connection: HTTP2DownstreamConnection, exchange: ProxyRequestHandler, head: HTTPRequestHead, endStream: Bool) {
        self.id = id
        self.connection = connection
        self.exchange = exchange
        self.head = head
        self.headEndsStream = endStream
        if endStream { held.peerEndedStream() }
    }

    var isWritable: Bool { watermark.isBelow && connection.isWritable && !isClosed }

    // MARK: Request

    /// The read that opened the stream ended: the exchange gets its head, and what came with it.
    func start() {
        guard let exchange, let head else { return }
        self.head = nil
        exchange.received(.head(head))
        if headEndsStream, exchange === self.exchange { exchange.received(.end(nil)) }
        deliverHeld()
        self.exchange?.readComplete()
        if resetBeforeItsHead { finishClosing() }
    }

    func receive(_ part: HTTPServerRequestPart) {
        guard !isClosed, let exchange else { return }
        // Until the head is handed on, everything waits behind it.
        guard let part = held.arrived(part, exchangeTakesBody: exchange.mayRead, behindHead: head != nil) else {
            if head == nil { exchange.holdingReads() }
            return
        }
        exchange.received(part)
        if !touchedThisRead {
            touchedThisRead = true
            connection.frames.touched(self)
        }
    }

    /// The read ended: the exchange flushes what the parts it was handed made it write.
    func readEnded() {
        touchedThisRead = false
        exchange?.readComplete()
    }

    /// The exchange asks for more (its upstream can take it): held parts, as far as it takes them.
    func read() {
        guard head == nil, !held.isEmpty else { return }
        if deliverHeld() > 0 { exchange?.readComplete() }
    }

    /// - Returns: how many parts were handed on.
    @discardableResult
    private func deliverHeld() -> Int {
        var delivered = 0
        while !isClosed || resetBeforeItsHead, let exchange, let part = held.take(exchangeTakesBody: exchange.mayRead) {
            delivered += 1
            exchange.received(part)
        }
        if !held.isEmpty { exchange?.holdingReads() }
        if !isClosed, let increment = held.creditToReturn() { connection.frames.sendWindowUpdate(id, increment) }
        return delivered
    }

    func windowReported(size: Int) {
        if let increment = held.windowReported(size: size) { connection.frames.sendWindowUpdate(id, increment) }
    }

    // MARK: Response

    func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        guard !isClosed, !resetSent, !responseEnded else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch part {
        case .head(let head) where head.status.code < 200:
            // Informational (100 Continue): out at once, the final head follows.
            connection.frames.write(frame(.headers(.init(headers: HPACKHeaders(responseHead: head)))), promise: promise)
        case .head(let head):
            responseHead = head
            promise?.succeed(())
        case .body(.byteBuffer(let body)):
            sendHeldHead()
            sendHeldData()
            responseData = body
            promise?.succeed(())
        case .body(.fileRegion):
            preconditionFailure("HTTP/2 responses are relayed from buffers")
        case .end(let trailers):
            responseEnded = true
            if let trailers {
                sendHeldHead()
                sendHeldData()
                connection.frames.write(frame(.headers(.init(headers: HPACKHeaders(trailers: trailers), endStream: true))), promise: promise)
            } else if let data = responseData {
                responseData = nil
                sendHeldHead()
                connection.frames.write(frame(.data(.init(data: .byteBuffer(data), endStream: true))), promise: promise)
            } else if let head = responseHead {
                responseHead = nil
                connection.frames.write(frame(.headers(.init(headers: HPACKHeaders(responseHead: head), endStream: true))), promise: promise)
            } else {
                connection.frames.write(frame(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: promise)
            }
        }
    }

    func flush() {
        sendHeldHead()
        sendHeldData()
        connection.frames.flush()
    }

    private func sendHeldHead() {
        guard let head = responseHead else { return }
        responseHead = nil
        connection.frames.write(frame(.headers(.init(headers: HPACKHeaders(responseHead: head)))), promise: nil)
    }

    /// A body part that is not the last: counted until it is out, for the stream's writability.
    private func sendHeldData() {
        guard let data = responseData else { return }
        responseData = nil
        let bytes = data.readableBytes
        guard let eventLoop = connection.frames.eventLoop else { return }
        let written = eventLoop.makePromise(of: Void.self)
        if watermark.queued(bytes), connection.isWritable { exchange?.writabilityChanged() }
        written.futureResult.assumeIsolated().whenComplete { _ in
            if self.watermark.sent(bytes), self.connection.isWritable { self.exchange?.writabilityChanged() }
        }
        connection.frames.write(frame(.data(.init(data: .byteBuffer(data)))), promise: written)
    }

    func connectionWritabilityChanged() {
        if watermark.isBelow { exchange?.writabilityChanged() }
    }

    func resetByNIO(_ error: Error) {
        exchange?.failed(error)
    }

    private func frame(_ payload: HTTP2Frame.FramePayload) -> HTTP2Frame {
        HTTP2Frame(streamID: id, payload: payload)
    }

    // MARK: Closing

    /// The exchange gives up on the stream: RST_STREAM CANCEL, unless it already closed.
    func reset() {
        guard !isClosed, !resetSent else { return }
        resetSent = true
        responseHead = nil
        responseData = nil
        connection.frames.write(frame(.rstStream(.cancel)), promise: nil)
        // NIO's handler reports the stream closed while it sends the frame; if it knew the stream no more, it
        // reports nothing and the stream closes here.
        connection.frames.flush()
        closed()
    }

    func closed(reason: HTTP2ErrorCode?) {
        closed()
    }

    /// The stream closed (both sides ended, or a reset either way, or the connection went).
    func closed() {
        guard !isClosed else { return }
        isClosed = true
        connection.forget(self)
        if head != nil {
            // Its head is handed on when the read ends, and tells the exchange the stream is gone.
            resetBeforeItsHead = true
            return
        }
        finishClosing()
    }

    /// The connection went before the stream's head was handed on.
    func abandon() {
        head = nil
        finishClosing()
    }

    private func finishClosing() {
        held.removeAll()
        responseHead = nil
        responseData = nil
        guard let exchange else { return }
        self.exchange = nil
        exchange.inactive()
        exchange.detach()
    }
}

extension HTTPRequestHead {
    /// An HTTP/2 request's header block as an HTTP/1-shaped head: `:authority` becomes `host` when there is
    /// none. What makes it malformed for a proxy is told apart: a `host` that disagrees with `:authority` (RFC 9113
    /// §8.3.1; answered 400 `invalid_host`), a field value with a control character HTTP/2 lets through but
    /// HTTP/1.1 forbids (answered 400 `bad_request`). A request that can carry a body and ended with its headers
    /// gets `content-length: 0`. Nil when `:method`, `:path` or `:scheme` is missing.
    static func fromHTTP2(_ block: HPACKHeaders, endStream: Bool) -> (HTTPRequestHead, malformed: LocalReplyReason?)? {
        var method: String?
        var path: String?
        var authority: String?
        var hasScheme = false
        var headers = HTTPHeaders()
        headers.reserveCapacity(block.count + 1)
        var sawRegular = false
        var malformed: LocalReplyReason?
        var hasContentLength = false
        for (name, value, _) in block {
            if name.utf8.first == UInt8(ascii: ":") {
                switch name {
                case ":method": method = value
                case ":path": path = value
                case ":authority": authority = value
                case ":scheme": hasScheme = true
                default: break
                }
                continue
            }
            if !sawRegular {
                // Pseudo-fields come first (NIO checks it): `host` leads, as an HTTP/1.1 client puts it.
                sawRegular = true
                if let authority, !block.contains(name: "host") { headers.add(name: "host", value: authority) }
            }
            if name == "host", let authority, value != authority { malformed = .invalidHost }
            if malformed == nil, !ProxyHeaders.isValidFieldValue(value) { malformed = .badRequest }
            if name == "content-length" { hasContentLength = true }
            headers.add(name: name, value: value)
        }
        if !sawRegular, let authority { headers.add(name: "host", value: authority) }
        guard let method, let path, hasScheme else { return nil }
        let httpMethod = HTTPMethod(rawValue: method)
        if endStream, !hasContentLength {
            switch httpMethod {
            case .GET, .HEAD, .DELETE, .CONNECT, .TRACE: break
            default: headers.add(name: "content-length", value: "0")
            }
        }
        return (HTTPRequestHead(version: .http2, method: httpMethod, uri: path, headers: headers), malformed)
    }
}

extension HTTPHeaders {
    /// A trailer block's fields (pseudo-fields dropped, and fields whose value HTTP/1.1 could not carry: too late
    /// for a 400, the body has gone upstream).
    init(regularFieldsOf block: HPACKHeaders) {
        self.init()
        reserveCapacity(block.count)
        for (name, value, _) in block where name.utf8.first != UInt8(ascii: ":") && ProxyHeaders.isValidFieldValue(value) {
            add(name: name, value: value)
        }
    }
}

extension HPACKHeaders {
    /// A response head as an HTTP/2 header block: `:status` first, names lower-cased, and the fields that only
    /// mean something to one HTTP/1.1 connection left out (RFC 9113 §8.2.2).
    init(responseHead head: HTTPResponseHead) {
        self.init()
        reserveCapacity(head.headers.count + 1)
        add(name: ":status", value: String(head.status.code))
        appendHTTP2Fields(of: head.headers)
    }

    init(trailers: HTTPHeaders) {
        self.init()
        reserveCapacity(trailers.count)
        appendHTTP2Fields(of: trailers)
    }

    private mutating func appendHTTP2Fields(of headers: HTTPHeaders) {
        for (name, value) in headers where !ProxyHeaders.isConnectionSpecific(name) {
            add(name: name.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) ? name.lowercased() : name, value: value)
        }
    }
}
