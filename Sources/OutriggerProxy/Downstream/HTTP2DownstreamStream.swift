import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// One stream of an `HTTP2DownstreamConnection`: the request parts it holds until its exchange takes them, and
/// the response, turned into frames — the head held until the next part, so that a response without a body is
/// one HEADERS frame with END_STREAM, and the last body part carrying END_STREAM.
final class HTTP2DownstreamStream: HTTP2ExchangeStream, AppendingHeadOutput {
    let id: HTTP2StreamID
    private let connection: HTTP2DownstreamConnection
    private(set) var exchange: ProxyRequestHandler?
    /// The request head, until the read that brought it ends.
    private var head: HTTPRequestHead?
    private var headEndsStream: Bool
    /// Parts received that the exchange does not take yet (a body while its upstream cannot take more).
    private var held = HTTP2HeldParts<HTTPRequestHead>(windowTarget: HTTP2DownstreamConnection.streamWindowTarget)
    /// Handed parts in the read being handled (`HTTP2StreamTable.touched` keeps it).
    var touchedThisRead = false
    /// The client reset the stream (or the codec did) before its head was handed on: nothing goes upstream.
    private(set) var resetBeforeItsHead = false
    private(set) var isClosed = false

    /// The final head, held until the next part, with the proxy's own fields that go after its fields: as the codec
    /// takes it (`HTTP2HeaderFields.response`), as the upstream stream holds its request's.
    private var responseHead: HTTP2HeaderFields?
    private var responseData: ByteBuffer?
    private var responseEnded = false
    private var resetSent = false
    /// Response bytes written to the HTTP/2 codec and not yet out (flow control or the socket holds them).
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
        exchange.received(.head(consume head))
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
        exchange.received(consume part)
        connection.frames.touched(self)
    }

    /// The read ended: the exchange flushes what the parts it was handed made it write.
    func readEnded() {
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
            exchange.received(consume part)
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
        case .head(let head):
            take(head, appending: AppendedResponseFields(), promise: promise)
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
                connection.frames.sendHeaders(.trailers(trailers), on: id, endStream: true, promise: promise)
            } else if let data = responseData {
                responseData = nil
                sendHeldHead()
                connection.frames.sendData(data, on: id, endStream: true, promise: promise)
            } else if let held = responseHead.take() {
                connection.frames.sendHeaders(held, on: id, endStream: true, promise: promise)
            } else {
                connection.frames.sendData(ByteBuffer(), on: id, endStream: true, promise: promise)
            }
        }
    }

    /// A head with the proxy's own fields given beside its fields (`AppendedResponseFields`).
    func writeHead(_ head: HTTPResponseHead, appending own: AppendedResponseFields) {
        guard !isClosed, !resetSent, !responseEnded else { return }
        take(head, appending: own, promise: nil)
    }

    /// A final head is held until the next part (a response without a body is then one HEADERS frame ending the
    /// stream); an informational one (100 Continue) goes at once, the final head following.
    private func take(_ head: HTTPResponseHead, appending own: AppendedResponseFields, promise: EventLoopPromise<Void>?) {
        if head.status.code < 200 {
            connection.frames.sendHeaders(.response(head, appending: own), on: id, promise: promise)
        } else {
            responseHead = .response(head, appending: own)
            promise?.succeed(())
        }
    }

    func flush() {
        sendHeldHead()
        sendHeldData()
        connection.frames.flush()
    }

    private func sendHeldHead() {
        guard let held = responseHead.take() else { return }
        connection.frames.sendHeaders(held, on: id)
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
        connection.frames.sendData(data, on: id, promise: written)
    }

    func connectionWritabilityChanged() {
        if watermark.isBelow { exchange?.writabilityChanged() }
    }

    func resetForProtocolError(_ error: NIOHTTP2Errors.StreamError) {
        exchange?.failed(error)
    }

    // MARK: Closing

    /// The exchange gives up on the stream: RST_STREAM CANCEL, unless it already closed.
    func reset() {
        guard !isClosed, !resetSent else { return }
        resetSent = true
        responseHead = nil
        responseData = nil
        connection.frames.sendReset(id, .cancel)
        // The codec reports the stream closed while it sends the frame; if it knew the stream no more, it
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
