import NIOCore
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// An HTTP/2 client connection at the frame level: sits after `HTTP2Codec` (which keeps the
/// protocol's state, HPACK and outbound flow control), as its peer, and hands each stream's frames, as HTTP request
/// parts, to the stream's `ProxyRequestHandler` — no child channel, pipeline or HTTP/1 codec pair per stream.
///
/// - Heads that arrive in a read are handed on when the read ends, so a stream its client resets in the same
///   read (rapid reset) is known to be reset before its exchange starts.
/// - Inbound flow control is ours (`HTTP2InboundWindow`): credit goes back as the exchanges take the bytes.
/// - A stream is writable while less than `highWatermark` of its response waits to go out, and the connection
///   is writable.
final class HTTP2DownstreamConnection: ChannelInboundHandler, RemovableChannelHandler, HTTP2StreamTablePeer {
    typealias InboundIn = Never

    /// Connection-level window kept for the client; its streams' are `streamWindowTarget` (NIO's default).
    static let connectionWindowTarget = 1 << 20
    static let streamWindowTarget = 65_535

    private let watcher: HTTP2ConnectionWatcher
    private let makeExchange: () -> ProxyRequestHandler
    /// The open streams and the way out; the streams write through it.
    let frames = HTTP2StreamTable<HTTP2DownstreamStream>(windowTarget: connectionWindowTarget)
    private var clientAddress: String?
    /// Streams whose head came in the read being handled: started when it ends.
    private var opened = PerReadList<HTTP2DownstreamStream>()
    var isWritable: Bool { frames.isWritable }

    init(watcher: HTTP2ConnectionWatcher, makeExchange: @escaping () -> ProxyRequestHandler) {
        self.watcher = watcher
        self.makeExchange = makeExchange
    }

    func handlerAdded(context: ChannelHandlerContext) {
        frames.attach(context, peer: self)
        clientAddress = context.channel.remoteAddress?.ipAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        closeAll()
        frames.detach()
    }

    // MARK: The codec's reports

    func received(_ block: HTTP2ReceivedFields, on id: HTTP2StreamID, endStream: Bool) {
        if let stream = frames[id] {
            // A second header block is the request's trailers (the codec lets no other through).
            stream.receive(.end(HTTPHeaders(regularFieldsOf: block)))
        } else {
            open(id, block, endStream: endStream)
        }
    }

    func received(_ body: ByteBuffer, on id: HTTP2StreamID, endStream: Bool) {
        guard let stream = frames[id] else { return }
        if body.readableBytes > 0 { stream.receive(.body(body)) }
        if endStream { stream.receive(.end(nil)) }
    }

    // The client's GOAWAY and SETTINGS, and the codec's own GOAWAY: the codec acts on them (the connection closes
    // after its GOAWAY; the open streams finish after the client's).
    func goAwayReceived() {}
    func maxConcurrentStreamsChanged(to limit: Int) {}
    func wentAway() {}

    private func open(_ id: HTTP2StreamID, _ block: HTTP2ReceivedFields, endStream: Bool) {
        guard let (head, malformed) = HTTPRequestHead.fromHTTP2(block, endStream: endStream) else {
            // No :method, :path or :scheme (the codec lets CONNECT through without the last two).
            frames.sendReset(id, .protocolError)
            frames.flush()
            return
        }
        let exchange = makeExchange()
        let stream = HTTP2DownstreamStream(id: id, connection: self, exchange: exchange, head: head, endStream: endStream)
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
        let streams = opened.take()
        for stream in streams { stream.start() }
        opened.giveBack(consume streams)
    }

    // MARK: Channel events

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
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

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        frames.writabilityChanged(context)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closeAll()
        context.fireChannelInactive()
    }

    private func closeAll() {
        let unstarted = opened.take()
        for stream in frames.closingAll() { stream.closed() }
        // Their exchanges never saw a head: they only let go of the stream.
        for stream in unstarted { stream.abandon() }
    }

    func forget(_ stream: HTTP2DownstreamStream) {
        guard frames.remove(stream.id) else { return }
        watcher.streamClosed()
    }
}

extension HTTPRequestHead {
    /// An HTTP/2 request's header block as an HTTP/1-shaped head: `:authority` becomes `host` when there is
    /// none. What makes it malformed for a proxy is told apart: a `host` that disagrees with `:authority` (RFC 9113
    /// §8.3.1; answered 400 `invalid_host`), a field value with a control character HTTP/2 lets through but
    /// HTTP/1.1 forbids (answered 400 `bad_request`). A request that can carry a body and ended with its headers
    /// gets `content-length: 0`. Nil when `:method`, `:path` or `:scheme` is missing.
    static func fromHTTP2(_ block: HTTP2ReceivedFields, endStream: Bool) -> (HTTPRequestHead, malformed: LocalReplyReason?)? {
        var method: String?
        var path: String?
        var authority: String?
        var hasScheme = false
        // Built as an array: `HTTPHeaders.add` checks each name for non-ASCII bytes, which `HTTP2FieldCheck` has
        // ruled out (the codec checks every block before its peer sees it).
        // With room for `host` and `content-length`, and for what `ProxyHeaders.prepareUpstreamRequest` adds (its
        // `reserveCapacity` then finds the room there, and the array is not moved).
        var fields: [(String, String)] = []
        fields.reserveCapacity(block.count + 10)
        var sawRegular = false
        var malformed: LocalReplyReason?
        var hasContentLength = false
        for field in block.fields {
            let (name, value) = (field.name, field.value)
            if name.utf8.first == UInt8(ascii: ":") {
                // By length first, as `HTTP2FieldCheck` tells them apart.
                switch name.utf8.count {
                case 7 where name == ":method": method = value
                case 5 where name == ":path": path = value
                case 10 where name == ":authority": authority = value
                case 7 where name == ":scheme": hasScheme = true
                default: break
                }
                continue
            }
            if !sawRegular {
                // Pseudo-fields come first (the codec checks it): `host` leads, as an HTTP/1.1 client puts it.
                sawRegular = true
                if let authority, !block.contains(name: "host") { fields.append(("host", authority)) }
            }
            switch name.utf8.count {
            case 4 where name == "host": if let authority, value != authority { malformed = .invalidHost }
            case 14 where name == "content-length": hasContentLength = true
            default: break
            }
            if malformed == nil, !block.everyValueFitsHTTP1, !ProxyHeaders.isValidFieldValue(value) { malformed = .badRequest }
            fields.append((name, value))
        }
        if !sawRegular, let authority { fields.append(("host", authority)) }
        guard let method, let path, hasScheme else { return nil }
        let httpMethod = HTTPMethod(rawValue: method)
        if endStream, !hasContentLength {
            switch httpMethod {
            case .GET, .HEAD, .DELETE, .CONNECT, .TRACE: break
            default: fields.append(("content-length", "0"))
            }
        }
        return (HTTPRequestHead(version: .http2, method: httpMethod, uri: path, headers: HTTPHeaders(fields)), malformed)
    }
}

extension HTTPHeaders {
    /// A trailer block's fields (pseudo-fields dropped, and fields whose value HTTP/1.1 could not carry: too late
    /// for a 400, the body has gone upstream).
    init(regularFieldsOf block: HTTP2ReceivedFields) {
        var fields: [(String, String)] = []
        fields.reserveCapacity(block.count)
        for field in block.fields where field.name.utf8.first != UInt8(ascii: ":") && (block.everyValueFitsHTTP1 || ProxyHeaders.isValidFieldValue(field.value)) {
            fields.append((field.name, field.value))
        }
        self.init(fields)
    }
}
