import NIOCore
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// One HTTP/2 stream as an exchange sees it, downstream (`HTTP2DownstreamStream`) or upstream
/// (`HTTP2UpstreamStream`): it takes the exchange's outgoing HTTP parts and turns them into frames.
protocol HTTP2ExchangeStream: AnyObject {
    associatedtype Part
    /// Less than the high water mark of what was written is still unsent, and the connection takes more.
    var isWritable: Bool { get }
    var isClosed: Bool { get }
    func write(_ part: Part, promise: EventLoopPromise<Void>?)
    func flush()
    /// The exchange takes more: parts held back are handed on.
    func read()
    /// The exchange gives up: RST_STREAM CANCEL, unless the stream already closed.
    func reset()
    /// The connection's writability changed.
    func connectionWritabilityChanged()
    /// The codec reset the stream for a protocol error.
    func resetForProtocolError(_ error: NIOHTTP2Errors.StreamError)
    /// The codec reported the stream closed: both sides ended (`reason` nil), or a reset either way.
    func closed(reason: HTTP2ErrorCode?)
    /// The codec reported the stream's inbound window.
    func windowReported(size: Int)
    /// The read that handed the stream parts ended.
    func readEnded()
    /// Handed parts in the read being handled: kept by `HTTP2StreamTable.touched`, so the stream hears the end once.
    var touchedThisRead: Bool { get set }
}

/// Where an HTTP/1.1 exchange's parts go: its connection's pipeline, from the exchange handler's own context.
protocol HTTP1PartOutput: AnyObject {
    associatedtype Part
    var context: ChannelHandlerContext { get }
    func write(_ part: Part, promise: EventLoopPromise<Void>?)
    /// Writes what it holds back, then flushes the pipeline.
    func flush()
}

/// Where an exchange writes and asks for more: the pipeline of an HTTP/1.1 connection (through the handler's own
/// context), or one stream of an HTTP/2 connection. `DownstreamSide` for `ProxyRequestHandler`, `UpstreamSide`
/// for `UpstreamExchangeHandler`.
enum ExchangeSide<HTTP1: HTTP1PartOutput, Stream: HTTP2ExchangeStream> where HTTP1.Part == Stream.Part {
    case http1(HTTP1)
    case http2(Stream)
    /// Removed from its pipeline, or its stream gone: nothing more goes out.
    case detached

    var isHTTP1: Bool {
        if case .http1 = self { return true }
        return false
    }

    var isAttached: Bool {
        if case .detached = self { return false }
        return true
    }

    var isWritable: Bool {
        switch self {
        case .http1(let output): return output.context.channel.isWritable
        case .http2(let stream): return stream.isWritable
        case .detached: return false
        }
    }

    var isActive: Bool {
        switch self {
        case .http1(let output): return output.context.channel.isActive
        case .http2(let stream): return !stream.isClosed
        case .detached: return false
        }
    }

    func write(_ part: Stream.Part) {
        switch self {
        case .http1(let output): output.write(part, promise: nil)
        case .http2(let stream): stream.write(part, promise: nil)
        case .detached: break
        }
    }

    func writeAndFlush(_ part: Stream.Part, promise: EventLoopPromise<Void>?) {
        switch self {
        case .http1(let output):
            output.write(part, promise: promise)
            output.flush()
        case .http2(let stream):
            stream.write(part, promise: promise)
            stream.flush()
        case .detached: promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush() {
        switch self {
        case .http1(let output): output.flush()
        case .http2(let stream): stream.flush()
        case .detached: break
        }
    }

    /// HTTP/1.1: closes the connection. HTTP/2: resets the stream unless it already ended both ways.
    func close() {
        switch self {
        case .http1(let output): output.context.close(promise: nil)
        case .http2(let stream): stream.reset()
        case .detached: break
        }
    }

    /// Asks for more: the connection's next read, or the stream's held frames.
    func read() {
        switch self {
        case .http1(let output): output.context.read()
        case .http2(let stream): stream.read()
        case .detached: break
        }
    }
}

extension ExchangeSide where HTTP1: AppendingHeadOutput, Stream: AppendingHeadOutput, HTTP1.FinalHead == Stream.FinalHead,
    HTTP1.AppendedFields == Stream.AppendedFields {
    /// A head (a request's, or a response's final one), with the proxy's own fields to send after its fields.
    @inline(__always)
    func writeHead(_ head: HTTP1.FinalHead, appending own: HTTP1.AppendedFields) {
        switch self {
        case .http1(let output): output.writeHead(head, appending: own)
        case .http2(let stream): stream.writeHead(head, appending: own)
        case .detached: break
        }
    }
}

typealias DownstreamSide = ExchangeSide<HTTP1ResponseWriter, HTTP2DownstreamStream>
typealias UpstreamSide = ExchangeSide<HTTP1RequestWriter, HTTP2UpstreamStream>
