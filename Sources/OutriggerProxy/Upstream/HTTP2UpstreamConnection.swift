import NIOCore
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// An HTTP/2 connection to an upstream at the frame level: sits after our `HTTP2Codec` (client role, which keeps
/// the protocol's state, HPACK and outbound flow control), as its peer, and carries each stream's request and
/// response for its `UpstreamExchangeHandler` — no child channel, pipeline or HTTP/1 codec pair per stream. Stream ids
/// are taken as request heads go out, so they rise in the order the codec sends them. It also reports what the
/// upstream says on stream 0: GOAWAY and SETTINGS_MAX_CONCURRENT_STREAMS.
final class HTTP2UpstreamConnection: ChannelInboundHandler, RemovableChannelHandler, HTTP2StreamTablePeer {
    typealias InboundIn = Never

    static let connectionWindowTarget = 1 << 20
    static let streamWindowTarget = 65_535

    /// `https` over TLS: the `:scheme` of every request.
    let scheme: String
    /// The connection takes no new streams: the upstream's GOAWAY came (called before the streams past its last id
    /// close), this side sent one for a connection error, or its stream ids are running out.
    var goingAway: (() -> Void)?
    var streamLimitChanged: ((Int) -> Void)?
    /// The open streams and the way out; the streams write through it.
    let frames = HTTP2StreamTable<HTTP2UpstreamStream>(windowTarget: connectionWindowTarget)
    private var streamIDs = HTTP2ClientStreamIDs()
    var isWritable: Bool { frames.isWritable }

    init(scheme: String) {
        self.scheme = scheme
    }

    func handlerAdded(context: ChannelHandlerContext) {
        frames.attach(context, peer: self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAll()
        frames.detach()
    }

    /// A stream for `exchange`; it gets its id when its head goes out.
    func makeStream(for exchange: UpstreamExchangeHandler) -> HTTP2UpstreamStream {
        HTTP2UpstreamStream(connection: self, exchange: exchange)
    }

    /// - Returns: nil when the connection's stream ids ran out (it left its pool long before: the stream is refused).
    func assignID(to stream: HTTP2UpstreamStream) -> HTTP2StreamID? {
        guard let (next, runningOut) = streamIDs.take() else { return nil }
        let id = HTTP2StreamID(Int32(next))
        frames.add(stream, as: id)
        if runningOut { goingAway?() }
        return id
    }

    // MARK: The codec's reports

    func received(_ block: HTTP2ReceivedFields, on id: HTTP2StreamID, endStream: Bool) {
        frames[id]?.receive(block, endStream: endStream)
    }

    func received(_ body: ByteBuffer, on id: HTTP2StreamID, endStream: Bool) {
        frames[id]?.receive(body, endStream: endStream)
    }

    func goAwayReceived() {
        goingAway?()
    }

    func maxConcurrentStreamsChanged(to limit: Int) {
        streamLimitChanged?(limit)
    }

    func wentAway() {
        goingAway?()
    }

    // MARK: Channel events

    func channelReadComplete(context: ChannelHandlerContext) {
        frames.readEnded()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        frames.writabilityChanged(context)
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

extension HTTPResponseHead {
    /// An HTTP/2 response header block as an HTTP/1-shaped head; like NIO's codec, a final response that has a
    /// body but no `content-length` is marked chunked (or `content-length: 0` when it ended with its headers),
    /// so an HTTP/1.1 client's framing is known. Nil without a valid `:status`.
    static func fromHTTP2(_ block: HTTP2ReceivedFields, endStream: Bool, requestMethod: HTTPMethod) -> HTTPResponseHead? {
        var status: Int?
        // Built as an array: `HTTPHeaders.add` checks each name for non-ASCII bytes, which `HTTP2FieldCheck` has
        // ruled out (the codec checks every block before its peer sees it).
        // With room for a framing field and the ones `ProxyHeaders.prepareDownstreamResponse` adds.
        var fields: [(String, String)] = []
        fields.reserveCapacity(block.count + 3)
        var hasContentLength = false
        for field in block.fields {
            let (name, value) = (field.name, field.value)
            if name.utf8.first == UInt8(ascii: ":") {
                if name == ":status" { status = Int(value) }
                continue
            }
            if name == "content-length" { hasContentLength = true }
            fields.append((name, value))
        }
        guard let status, (100...999).contains(status) else { return nil }
        if !(100..<200).contains(status), status != 204, status != 304, !requestMethod.isHEAD, !requestMethod.isCONNECT, !hasContentLength {
            fields.append(endStream ? ("content-length", "0") : ("transfer-encoding", "chunked"))
        }
        return HTTPResponseHead(version: .http2, status: HTTPResponseStatus(statusCode: status), headers: HTTPHeaders(fields))
    }
}
