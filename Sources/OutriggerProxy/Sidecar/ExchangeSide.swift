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
    /// NIO reset the stream for a protocol error (a `NIOHTTP2Errors.StreamError`).
    func resetByNIO(_ error: Error)
    /// NIO reported the stream closed: both sides ended (`reason` nil), or a reset either way.
    func closed(reason: HTTP2ErrorCode?)
    /// NIO reported the stream's inbound window.
    func windowReported(size: Int)
    /// The read that handed the stream parts ended.
    func readEnded()
}

/// Where an HTTP/1.1 exchange's parts go: its connection's pipeline, from the exchange handler's own context.
protocol HTTP1PartOutput: AnyObject {
    associatedtype Part
    var context: ChannelHandlerContext { get }
    func write(_ part: Part, promise: EventLoopPromise<Void>?)
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
            output.context.flush()
        case .http2(let stream):
            stream.write(part, promise: promise)
            stream.flush()
        case .detached: promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    func flush() {
        switch self {
        case .http1(let output): output.context.flush()
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

typealias DownstreamSide = ExchangeSide<HTTP1ResponseWriter, HTTP2DownstreamStream>
typealias UpstreamSide = ExchangeSide<HTTP1RequestWriter, HTTP2UpstreamStream>

/// What the two frame-level HTTP/2 handlers (`HTTP2DownstreamConnection`, `HTTP2UpstreamConnection`) share: the
/// way out to NIO's handler before them, the connection's inbound window, whether the connection takes more,
/// the open streams by id and the streams handed parts in the read being handled, and the channel events every
/// stream hears of. A class: writing a frame makes NIO report events back into the handler at once (a reentrant
/// call that a struct's exclusive access would trap on).
final class HTTP2StreamTable<Stream: HTTP2ExchangeStream> {
    private(set) var context: ChannelHandlerContext?
    private var window: HTTP2InboundWindow
    private(set) var isWritable = true
    private var streams: [HTTP2StreamID: Stream] = [:]
    private var touched: [Stream] = []

    init(windowTarget: Int) {
        window = HTTP2InboundWindow(target: windowTarget)
    }

    func attach(_ context: ChannelHandlerContext) {
        self.context = context
        isWritable = context.channel.isWritable
    }

    func detach() {
        context = nil
    }

    // MARK: Streams

    subscript(id: HTTP2StreamID) -> Stream? { streams[id] }

    var all: [Stream] { Array(streams.values) }

    func add(_ stream: Stream, as id: HTTP2StreamID) {
        streams[id] = stream
    }

    /// - Returns: whether the stream was open.
    @discardableResult
    func remove(_ id: HTTP2StreamID) -> Bool {
        streams.removeValue(forKey: id) != nil
    }

    /// `stream` was handed parts in this read: it hears when the read ends.
    func touched(_ stream: Stream) {
        touched.append(stream)
    }

    func readEnded() {
        guard !touched.isEmpty else { return }
        let streams = touched
        touched.removeAll(keepingCapacity: true)
        for stream in streams { stream.readEnded() }
    }

    /// The connection went: the streams still open, for their handler to close; the read's list is dropped.
    func closingAll() -> [Stream] {
        touched.removeAll()
        return all
    }

    // MARK: Channel events

    /// NIO's stream events: a stream closed, a window's size. - Returns: whether `event` was one.
    func handle(_ event: Any) -> Bool {
        switch event {
        case let closed as StreamClosedEvent:
            streams[closed.streamID]?.closed(reason: closed.reason)
        case let update as NIOHTTP2WindowUpdatedEvent:
            guard let size = update.inboundWindowSize else { return true }
            if update.streamID != .rootStream {
                streams[update.streamID]?.windowReported(size: size)
            } else if let increment = window.reported(size: size) {
                sendWindowUpdate(.rootStream, increment)
            }
        default:
            return false
        }
        return true
    }

    /// The connection's writability changed: every stream hears of it.
    func writabilityChanged() {
        isWritable = context?.channel.isWritable ?? false
        for stream in all { stream.connectionWritabilityChanged() }
    }

    /// NIO reports a stream error (it has reset the stream): that stream hears of it. - Returns: whether `error` was one.
    func streamError(_ error: Error) -> Bool {
        guard let streamError = error as? NIOHTTP2Errors.StreamError else { return false }
        streams[streamError.streamID]?.resetByNIO(streamError)
        return true
    }

    // MARK: Output

    func sendWindowUpdate(_ id: HTTP2StreamID, _ increment: Int) {
        write(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment)), promise: nil)
        flush()
    }

    func write(_ frame: HTTP2Frame, promise: EventLoopPromise<Void>?) {
        guard let context else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(NIOAny(frame), promise: promise)
    }

    func flush() {
        context?.flush()
    }

    var eventLoop: (any EventLoop)? { context?.eventLoop }
}

/// The parts an HTTP/2 stream received that its exchange does not take yet (a body while the other side cannot
/// take more), in order, and the flow-control credit they hold back: credit for a body goes back only once it
/// is handed on (`HTTP2InboundWindow`).
struct HTTP2HeldParts<Head: Equatable> {
    typealias Part = HTTPPart<Head, ByteBuffer>
    private var parts: [Part] = []
    private var window: HTTP2InboundWindow
    private var takenBytes = 0
    /// The peer ended the stream (END_STREAM received): its window is over, and NIO refuses a WINDOW_UPDATE for a
    /// half-closed (remote) stream as a stream error, which would cut an exchange whose body all arrived.
    private var peerEnded = false

    init(windowTarget: Int) {
        window = HTTP2InboundWindow(target: windowTarget)
    }

    var isEmpty: Bool { parts.isEmpty }

    /// A part the peer sent: returned to be handed on now, or held (nil) when it must wait — parts are already
    /// waiting, it is a body the exchange does not take now, or `behindHead` (the head is not handed on yet).
    /// An end is noted either way: the peer has ended the stream.
    mutating func arrived(_ part: Part, exchangeTakesBody: Bool, behindHead: Bool = false) -> Part? {
        var mustWait = behindHead || !parts.isEmpty
        switch part {
        case .head: break
        case .body: mustWait = mustWait || !exchangeTakesBody
        case .end: peerEnded = true
        }
        guard mustWait else { return part }
        hold(part)
        return nil
    }

    private mutating func hold(_ part: Part) {
        if case .body(let body) = part { window.held(body.readableBytes) }
        parts.append(part)
    }

    /// The next part to hand on (removed), unless it is a body and the exchange does not take one now.
    mutating func take(exchangeTakesBody: Bool) -> Part? {
        guard let part = parts.first else { return nil }
        if case .body(let body) = part {
            guard exchangeTakesBody else { return nil }
            takenBytes += body.readableBytes
        }
        parts.removeFirst()
        return part
    }

    /// The peer's END_STREAM came where no part goes through `arrived` (with the head, or with no exchange to take
    /// it): no credit goes back for this stream (the connection's still does).
    mutating func peerEndedStream() {
        peerEnded = true
    }

    /// The credit to give back for the bodies taken since last asked, if an update is due.
    mutating func creditToReturn() -> Int? {
        guard takenBytes > 0 else { return nil }
        defer { takenBytes = 0 }
        let increment = window.released(takenBytes)
        return peerEnded ? nil : increment
    }

    /// NIO reported the stream's window. - Returns: the credit to give back, if an update is due.
    mutating func windowReported(size: Int) -> Int? {
        let increment = window.reported(size: size)
        return peerEnded ? nil : increment
    }

    mutating func removeAll() {
        parts.removeAll()
    }
}
