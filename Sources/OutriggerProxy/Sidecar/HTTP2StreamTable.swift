import NIOCore
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// What the two frame-level HTTP/2 handlers (`HTTP2DownstreamConnection`, `HTTP2UpstreamConnection`) share: the
/// way out to the codec before them, the connection's inbound window, whether the connection takes more,
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

    /// `stream` was handed parts in this read: it hears, once, when the read ends.
    func touched(_ stream: Stream) {
        guard !stream.touchedThisRead else { return }
        stream.touchedThisRead = true
        touched.append(stream)
    }

    func readEnded() {
        guard !touched.isEmpty else { return }
        let streams = touched
        touched.removeAll(keepingCapacity: true)
        for stream in streams {
            stream.touchedThisRead = false
            stream.readEnded()
        }
    }

    /// The connection went: the streams still open, for their handler to close; the read's list is dropped.
    func closingAll() -> [Stream] {
        for stream in touched { stream.touchedThisRead = false }
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
