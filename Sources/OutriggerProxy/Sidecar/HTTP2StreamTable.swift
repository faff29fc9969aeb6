import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// What the two frame-level HTTP/2 handlers (`HTTP2DownstreamConnection`, `HTTP2UpstreamConnection`) share: the
/// way out to the codec before them (called directly), the connection's inbound window, whether the connection
/// takes more, the open streams by id and the streams handed parts in the read being handled, and the codec's
/// stream reports every stream hears of. A class: sending a frame makes the codec report back into the handler at
/// once (a reentrant call that a struct's exclusive access would trap on).
final class HTTP2StreamTable<Stream: HTTP2ExchangeStream> {
    private var codec: HTTP2Codec?
    private var window: HTTP2InboundWindow
    private(set) var isWritable = true
    private var streams = StreamIDMap<Stream>()
    private var touched = PerReadList<Stream>()

    init(windowTarget: Int) {
        window = HTTP2InboundWindow(target: windowTarget)
    }

    /// The handler was added after the codec: it becomes the codec's peer, and the streams' way out is the codec.
    func attach(_ context: ChannelHandlerContext, peer: any HTTP2CodecPeer) {
        codec = try? context.pipeline.syncOperations.handler(type: HTTP2Codec.self)
        assert(codec != nil, "an HTTP/2 connection handler goes after an HTTP2Codec")
        codec?.peer = peer
        eventLoop = context.eventLoop
        isWritable = context.channel.isWritable
    }

    func detach() {
        codec?.peer = nil
        codec = nil
        eventLoop = nil
    }

    // MARK: Streams

    subscript(id: HTTP2StreamID) -> Stream? { streams[Self.key(id)] }

    var all: [Stream] { streams.allValues }

    func add(_ stream: Stream, as id: HTTP2StreamID) {
        streams[Self.key(id)] = stream
    }

    /// - Returns: whether the stream was open.
    @discardableResult
    func remove(_ id: HTTP2StreamID) -> Bool {
        streams.removeValue(forKey: Self.key(id)) != nil
    }

    private static func key(_ id: HTTP2StreamID) -> UInt32 { UInt32(Int32(id)) }

    /// `stream` was handed parts in this read: it hears, once, when the read ends.
    func touched(_ stream: Stream) {
        guard !stream.touchedThisRead else { return }
        stream.touchedThisRead = true
        touched.append(stream)
    }

    func readEnded() {
        guard !touched.isEmpty else { return }
        let streams = touched.take()
        for stream in streams {
            stream.touchedThisRead = false
            stream.readEnded()
        }
        touched.giveBack(consume streams)
    }

    /// The connection went: the streams still open, for their handler to close; the read's list is dropped.
    func closingAll() -> [Stream] {
        for stream in touched.take() { stream.touchedThisRead = false }
        return all
    }

    // MARK: The codec's reports, and channel events

    func streamClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
        streams[Self.key(id)]?.closed(reason: reason)
    }

    /// A window's size: a stream's goes to it; the connection's may earn the peer credit.
    func inboundWindow(of id: HTTP2StreamID, is size: Int) {
        if id != .rootStream {
            streams[Self.key(id)]?.windowReported(size: size)
        } else if let increment = window.reported(size: size) {
            sendWindowUpdate(.rootStream, increment)
        }
    }

    /// The codec reset a stream for a protocol error: that stream hears of it.
    func streamError(_ error: NIOHTTP2Errors.StreamError) {
        streams[Self.key(error.streamID)]?.resetForProtocolError(error)
    }

    /// The connection's writability changed: every stream hears of it.
    func writabilityChanged(_ context: ChannelHandlerContext) {
        isWritable = context.channel.isWritable
        for stream in all { stream.connectionWritabilityChanged() }
    }

    // MARK: Output

    func sendWindowUpdate(_ id: HTTP2StreamID, _ increment: Int) {
        codec?.writeWindowUpdate(id, increment: increment, promise: nil)
        flush()
    }

    func sendHeaders(_ fields: HTTP2HeaderFields, on id: HTTP2StreamID, endStream: Bool = false, promise: EventLoopPromise<Void>? = nil) {
        guard let codec else { return closedChannel(promise) }
        codec.writeHeaders(fields, on: id, endStream: endStream, promise: promise)
    }

    func sendData(_ body: ByteBuffer, on id: HTTP2StreamID, endStream: Bool = false, promise: EventLoopPromise<Void>? = nil) {
        guard let codec else { return closedChannel(promise) }
        codec.writeData(body, on: id, endStream: endStream, promise: promise)
    }

    func sendReset(_ id: HTTP2StreamID, _ code: HTTP2ErrorCode) {
        codec?.writeReset(id, code, promise: nil)
    }

    private func closedChannel(_ promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.ioOnClosedChannel)
    }

    func flush() {
        codec?.flush()
    }

    /// The connection's loop; nil before the handler is added.
    private(set) var eventLoop: (any EventLoop)?
}

/// A codec's peer whose streams are in an `HTTP2StreamTable`: the codec's stream reports go to them there.
protocol HTTP2StreamTablePeer: HTTP2CodecPeer {
    associatedtype Stream: HTTP2ExchangeStream
    var frames: HTTP2StreamTable<Stream> { get }
}

extension HTTP2StreamTablePeer {
    func inboundWindow(of stream: HTTP2StreamID, is size: Int) {
        frames.inboundWindow(of: stream, is: size)
    }

    func streamClosed(_ stream: HTTP2StreamID, reason: HTTP2ErrorCode?) {
        frames.streamClosed(stream, reason: reason)
    }

    /// The codec reset a stream for a protocol error: the stream, if still open, hears of it (an upstream one: its
    /// response was malformed, and its exchange fails; a downstream one has closed already).
    func streamError(_ error: NIOHTTP2Errors.StreamError) {
        frames.streamError(error)
    }
}
