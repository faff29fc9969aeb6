import NIOCore
import NIOHTTP1

/// Where a `ProxyRequestHandler` writes its response and asks for more of its request: the pipeline of an
/// HTTP/1.1 connection (the handler's own context), or one stream of an HTTP/2 connection.
enum DownstreamSide {
    case http1(ChannelHandlerContext)
    case http2(HTTP2DownstreamStream)
    /// Removed from its pipeline: nothing more goes out.
    case detached

    var isAttached: Bool {
        if case .detached = self { return false }
        return true
    }

    /// Whether the client takes more now (the connection's, or the stream's, buffer below its high water mark).
    var isWritable: Bool {
        switch self {
        case .http1(let context): return context.channel.isWritable
        case .http2(let stream): return stream.isWritable
        case .detached: return false
        }
    }

    var isActive: Bool {
        switch self {
        case .http1(let context): return context.channel.isActive
        case .http2(let stream): return !stream.isClosed
        case .detached: return false
        }
    }

    func write(_ part: HTTPServerResponsePart) {
        switch self {
        case .http1(let context): context.write(NIOAny(part), promise: nil)
        case .http2(let stream): stream.write(part, promise: nil)
        case .detached: break
        }
    }

    func writeAndFlush(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        switch self {
        case .http1(let context): context.writeAndFlush(NIOAny(part), promise: promise)
        case .http2(let stream):
            stream.write(part, promise: promise)
            stream.flush()
        case .detached: promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush() {
        switch self {
        case .http1(let context): context.flush()
        case .http2(let stream): stream.flush()
        case .detached: break
        }
    }

    /// HTTP/1.1: closes the connection. HTTP/2: resets the stream (CANCEL) unless it already ended both ways.
    func close() {
        switch self {
        case .http1(let context): context.close(promise: nil)
        case .http2(let stream): stream.reset()
        case .detached: break
        }
    }

    /// Asks for more of the request: the connection's next read, or the stream's held frames.
    func read() {
        switch self {
        case .http1(let context): context.read()
        case .http2(let stream): stream.read()
        case .detached: break
        }
    }
}
