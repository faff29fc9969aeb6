import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore

/// The one place a local reply's bytes are decided: status with its reason phrase, `x-outrigger-reason`,
/// and a one-line body saying why. gRPC requests get a gRPC status instead of a bare HTTP error.
enum LocalReply {
    static func head(
        for reason: LocalReplyReason,
        version: HTTPVersion,
        isGRPC: Bool,
        closeConnection: Bool,
        bodyLength: Int
    ) -> HTTPResponseHead {
        var headers = HTTPHeaders()
        headers.reserveCapacity(6)
        if isGRPC {
            headers.add(name: "content-type", value: "application/grpc")
            // HTTP/2 carries the status in trailers (see `trailers`); HTTP/1.1 has only the head.
            if version.major != 2 { headers.add(contentsOf: grpcStatus(for: reason)) }
        } else {
            headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        }
        headers.add(name: "content-length", value: String(bodyLength))
        headers.add(name: OutriggerHeader.reason, value: reason.rawValue)
        if closeConnection && version.major == 1 { headers.add(name: "connection", value: "close") }
        let status: HTTPResponseStatus = isGRPC ? .ok : reason.status
        return HTTPResponseHead(version: version.major == 2 ? .http2 : .http1_1, status: status, headers: headers)
    }

    static func grpcStatus(for reason: LocalReplyReason) -> HTTPHeaders {
        ["grpc-status": String(reason.grpcStatus), "grpc-message": reason.explanation.replacingOccurrences(of: " ", with: "%20")]
    }

    static func body(for reason: LocalReplyReason, isGRPC: Bool, allocator: ByteBufferAllocator) -> ByteBuffer? {
        isGRPC ? nil : allocator.buffer(string: reason.rawValue + ": " + reason.explanation + "\n")
    }

    /// Writes a whole local reply as HTTP server parts; the caller flushes.
    static func write(
        _ reason: LocalReplyReason,
        version: HTTPVersion,
        isGRPC: Bool,
        isHEAD: Bool,
        closeConnection: Bool,
        to downstream: DownstreamSide,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        let body = Self.body(for: reason, isGRPC: isGRPC, allocator: allocator)
        let head = Self.head(for: reason, version: version, isGRPC: isGRPC, closeConnection: closeConnection, bodyLength: body?.readableBytes ?? 0)
        let trailers = isGRPC && version.major == 2 ? grpcStatus(for: reason) : nil
        return writeParts(head, body: body, trailers: trailers, isHEAD: isHEAD, to: downstream, eventLoop: eventLoop)
    }

    /// Head, body (not for HEAD) and end, flushed: the one way a reply the proxy makes itself goes out.
    private static func writeParts(_ head: HTTPResponseHead, body: ByteBuffer?, trailers: HTTPHeaders?, isHEAD: Bool,
                                   to downstream: DownstreamSide, eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        downstream.write(.head(head))
        if let body, !isHEAD, body.readableBytes > 0 { downstream.write(.body(.byteBuffer(body))) }
        let written = eventLoop.makePromise(of: Void.self)
        downstream.writeAndFlush(.end(trailers), promise: written)
        return written.futureResult
    }

    /// What local replies' bodies are allocated with (NIO's default allocator, as a channel's is).
    private static let allocator = ByteBufferAllocator()
}

extension LocalReply {
    /// Writes a route's fallback response (its own status, headers and body, marked `fallback`).
    static func writeFallback(
        status: Int,
        headers configured: [HeaderValue],
        body text: String,
        version: HTTPVersion,
        isHEAD: Bool,
        closeConnection: Bool,
        to downstream: DownstreamSide,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        var headers = HTTPHeaders()
        for header in configured { headers.add(name: header.name, value: header.value) }
        if !headers.contains(name: "content-type") { headers.add(name: "content-type", value: "text/plain; charset=utf-8") }
        headers.replaceOrAdd(name: "content-length", value: String(text.utf8.count))
        headers.replaceOrAdd(name: OutriggerHeader.reason, value: LocalReplyReason.fallback.rawValue)
        if closeConnection && version.major == 1 { headers.add(name: "connection", value: "close") }
        let head = HTTPResponseHead(version: version.major == 2 ? .http2 : .http1_1, status: HTTPResponseStatus(statusCode: status), headers: headers)
        return writeParts(head, body: allocator.buffer(string: text), trailers: nil, isHEAD: isHEAD, to: downstream, eventLoop: eventLoop)
    }
}
