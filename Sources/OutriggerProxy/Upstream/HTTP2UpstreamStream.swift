import NIOCore
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// One request's stream on an `HTTP2UpstreamConnection`. The request head is held until the next part, so a
/// request without a body is one HEADERS frame with END_STREAM; response DATA is held while the downstream
/// cannot take more (credit goes back as it is handed on).
final class HTTP2UpstreamStream: HTTP2ExchangeStream, AppendingHeadOutput {
    private let connection: HTTP2UpstreamConnection
    private(set) var exchange: UpstreamExchangeHandler?
    private(set) var id: HTTP2StreamID?
    private var requestMethod: HTTPMethod = .GET
    /// The head, held until the next part, with the proxy's own fields that go after its fields: boxed already as
    /// the codec takes it (`HTTP2HeaderFields.request`), so holding and sending it moves a reference, not ~140 bytes.
    private var requestHead: HTTP2HeaderFields?
    private var requestData: ByteBuffer?
    private var requestEnded = false
    private var resetSent = false
    private var watermark = SendWatermark.http2Stream

    private var finalHeadReceived = false
    private var held = HTTP2HeldParts<HTTPResponseHead>(windowTarget: HTTP2UpstreamConnection.streamWindowTarget)
    /// Handed parts in the read being handled (`HTTP2StreamTable.touched` keeps it).
    var touchedThisRead = false
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
            take(head, appending: AppendedOwnFields())
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
                send(.headers(.trailers(trailers), endStream: true), promise: promise)
            } else if let data = requestData {
                requestData = nil
                sendHeldHead(endStream: false)
                send(.data(data, endStream: true), promise: promise)
            } else if requestHead != nil {
                sendHeldHead(endStream: true)
                promise?.succeed(())
            } else {
                send(.data(ByteBuffer(), endStream: true), promise: promise)
            }
        }
    }

    /// A request's head with the proxy's own fields given beside its fields (`AppendedOwnFields`).
    func writeHead(_ head: HTTPRequestHead, appending own: AppendedOwnFields) {
        guard !isClosed, !resetSent, !requestEnded else { return }
        take(head, appending: own)
    }

    /// The head is held until the next part: a request without a body is then one HEADERS frame ending the stream.
    private func take(_ head: HTTPRequestHead, appending own: AppendedOwnFields) {
        requestMethod = head.method
        requestHead = .request(head, scheme: connection.scheme, appending: own)
    }

    func flush() {
        sendHeldHead(endStream: false)
        sendHeldData()
        connection.frames.flush()
    }

    private func sendHeldHead(endStream: Bool) {
        guard let held = requestHead.take() else { return }
        guard let id = connection.assignID(to: self) else {
            // The connection's stream ids ran out: refused, so the request goes to a new connection.
            resetSent = true
            finish(failure: NIOHTTP2Errors.streamClosed(streamID: .maxID, errorCode: .refusedStream))
            return
        }
        self.id = id
        send(.headers(held, endStream: endStream))
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
        send(.data(data, endStream: false), promise: written)
    }

    private enum Frame {
        case headers(HTTP2HeaderFields, endStream: Bool)
        case data(ByteBuffer, endStream: Bool)
    }

    private func send(_ frame: Frame, promise: EventLoopPromise<Void>? = nil) {
        guard let id else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch frame {
        case let .headers(block, endStream): connection.frames.sendHeaders(block, on: id, endStream: endStream, promise: promise)
        case let .data(body, endStream): connection.frames.sendData(body, on: id, endStream: endStream, promise: promise)
        }
    }

    func connectionWritabilityChanged() {
        if watermark.isBelow { exchange?.writabilityChanged() }
    }

    func resetForProtocolError(_ error: NIOHTTP2Errors.StreamError) {
        // A malformed response: the exchange fails.
        exchange?.failed(error)
    }

    // MARK: Response

    func receive(_ block: HTTP2ReceivedFields, endStream: Bool) {
        if finalHeadReceived {
            deliver(.end(HTTPHeaders(regularFieldsOf: block)))
            return
        }
        guard let head = HTTPResponseHead.fromHTTP2(block, endStream: endStream, requestMethod: requestMethod) else {
            reset(.protocolError)
            return
        }
        if head.status.code >= 200 { finalHeadReceived = true }
        // Handed on owned (`consume`, and `deliver` and `HTTP2HeldParts.arrived` take it): with no other reference
        // to its fields, the exchange changes them in place, without a copy of the array.
        deliver(.head(consume head))
        if endStream { deliver(.end(nil)) }
    }

    func receive(_ body: ByteBuffer, endStream: Bool) {
        if body.readableBytes > 0 { deliver(.body(body)) }
        if endStream { deliver(.end(nil)) }
    }

    private func deliver(_ part: consuming HTTPClientResponsePart) {
        guard let exchange else {
            if case .end = part { held.peerEndedStream() }  // nobody takes it, but the stream has ended
            return
        }
        guard let part = held.arrived(consume part, exchangeTakesBody: exchange.mayRead) else {
            exchange.holdingReads()
            return
        }
        exchange.received(consume part)
        connection.frames.touched(self)
    }

    func readEnded() {
        exchange?.readComplete()
    }

    /// The downstream takes more: held parts, as far as it takes them.
    func read() {
        var delivered = 0
        while let exchange, let part = held.take(exchangeTakesBody: exchange.mayRead) {
            delivered += 1
            exchange.received(consume part)
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
        connection.frames.sendReset(id, code)
        // The codec reports the stream closed while it sends the frame; if it knew the stream no more, it
        // reports nothing and the stream closes here.
        connection.frames.flush()
        if !isClosed { closed(reason: code) }
    }

    /// The codec closed the stream: both sides ended (`reason` nil), or a reset either way.
    func closed(reason: HTTP2ErrorCode?) {
        guard !isClosed else { return }
        isClosed = true
        if let id { connection.forget(id) }
        guard let reason, let id else {
            // Cleanly: parts still held go on first.
            if held.isEmpty { finish(failure: nil) } else { closedBehindHeld = true }
            return
        }
        // A stream past the last id of the upstream's GOAWAY closes as REFUSED_STREAM (the codec says so).
        finish(failure: NIOHTTP2Errors.streamClosed(streamID: id, errorCode: reason))
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
