import NIOCore
import NIOHTTP1
import OutriggerCore

/// A message head `HTTP1MessageEncoder` writes: a response's (downstream) or a request's (upstream).
protocol HTTP1WritableHead: Equatable {
    /// The proxy's own fields written after the head's (`AppendedResponseFields`, `AppendedOwnFields`).
    associatedtype AppendedFields
    /// None of them (a head written as it is).
    static var noAppendedFields: AppendedFields { get }
    /// A 1xx response: the final head is still to come.
    var isInterim: Bool { get }
    func encode(with encoder: inout HTTP1MessageEncoder, appending own: AppendedFields, into buffer: inout ByteBuffer)
}

extension HTTPResponseHead: HTTP1WritableHead {
    static var noAppendedFields: AppendedResponseFields { AppendedResponseFields() }
    var isInterim: Bool { status.code < 200 }
    func encode(with encoder: inout HTTP1MessageEncoder, appending own: AppendedResponseFields, into buffer: inout ByteBuffer) {
        encoder.encodeHead(self, appending: own, into: &buffer)
    }
}

extension HTTPRequestHead: HTTP1WritableHead {
    static var noAppendedFields: AppendedOwnFields { AppendedOwnFields() }
    var isInterim: Bool { false }
    func encode(with encoder: inout HTTP1MessageEncoder, appending own: AppendedOwnFields, into buffer: inout ByteBuffer) {
        encoder.encodeHead(self, appending: own, into: &buffer)
    }
}

/// Where a side's head goes with the proxy's own fields after its fields: an HTTP/1.1 connection's writer, or an
/// HTTP/2 stream (`ExchangeSide.writeHead(_:appending:)`).
protocol AppendingHeadOutput {
    associatedtype FinalHead
    associatedtype AppendedFields
    func writeHead(_ head: FinalHead, appending own: AppendedFields)
}

/// The largest head buffer kept for the next message (an idle keep-alive connection holds no more), and what a final
/// head and the small body parts after it fill at most: copied in, they cost no allocation of their own.
private let keptHeadCapacity = 1024
/// Bodies up to this size are framed into one buffer with their chunk size line: one write, not three.
private let copiedChunkLimit = 4096
/// Room for a chunk's size line and the CRLFs around its data.
private let chunkFramingBytes = 12

/// An HTTP/1.1 connection's responses downstream, written by `ProxyRequestHandler`.
typealias HTTP1ResponseWriter = HTTP1MessageWriter<HTTPResponseHead>
/// An upstream HTTP/1.1 connection's requests, written by `UpstreamExchangeHandler`.
typealias HTTP1RequestWriter = HTTP1MessageWriter<HTTPRequestHead>

/// Writes an HTTP/1.1 connection's messages into its pipeline as bytes (`HTTP1MessageEncoder`), where NIO's
/// encoders sat: each part is encoded where it is written, with no pipeline hop and no boxed part per write.
///
/// A final head waits in its buffer for what follows it: small body parts are copied in behind it (framed when
/// chunked), and the head goes with them at the message's end or at the next flush, whichever comes first — a small
/// message is one write to the pipeline, not two or three. Every way out of the writer (`flush`, a write with a
/// promise, a part that does not fit) writes the waiting bytes first, so the order on the wire is the parts' order.
/// It counts the messages it ended: downstream, for `HTTP1DownstreamConnection`'s answer to a broken pipelined
/// request, which waits for the responses owed before it.
final class HTTP1MessageWriter<Head: HTTP1WritableHead>: HTTP1PartOutput {
    /// The writing handler's (the last in its pipeline): its writes pass every outbound handler.
    let context: ChannelHandlerContext
    private var encoder = HTTP1MessageEncoder()
    /// Messages whose end was written.
    private(set) var messagesEnded = 0
    /// A final (non-1xx) head was written and its end not yet.
    private(set) var messageStarted = false
    private var afterMessages: (count: Int, action: () -> Void)?

    private var headBuffer: ByteBuffer
    /// `headBuffer` holds a head (and maybe body parts after it) not yet written to the pipeline.
    private var holdsUnwrittenBytes = false
    /// Bytes were written to the pipeline since its last flush. A flush with none costs NIO's whole flush path
    /// (about 700 instructions): a request sent and flushed when its upstream was leased is not flushed again at
    /// the end of the read burst it came in.
    private var holdsUnflushedWrites = false

    init(context: ChannelHandlerContext) {
        self.context = context
        headBuffer = context.channel.allocator.buffer(capacity: 256)
    }

    func write(_ part: HTTPPart<Head, IOData>, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(let head):
            writeHead(isInterim: head.isInterim, promise: promise) { head.encode(with: &$0, appending: Head.noAppendedFields, into: &$1) }
        case .body(let body):
            if holdsUnwrittenBytes, case .byteBuffer(let bytes) = body,
               headBuffer.readableBytes + bytes.readableBytes + chunkFramingBytes <= keptHeadCapacity {
                encoder.encodeBody(bytes, into: &headBuffer)
                if promise != nil { writeHeldBytes(promise: promise) }
                return
            }
            writeHeldBytes(promise: nil)
            writeBody(body, promise: promise)
        case .end(let trailers):
            if holdsUnwrittenBytes {
                _ = encoder.encodeEnd(trailers: trailers, into: &headBuffer)  // the last chunk when chunked, else nothing
                writeHeldBytes(promise: promise)
            } else if encoder.isChunked || promise != nil {
                // Unchunked, nothing ends the body on the wire; an empty write still completes the promise in order.
                var buffer = context.channel.allocator.buffer(capacity: trailers == nil ? 5 : 256)
                _ = encoder.encodeEnd(trailers: trailers, into: &buffer)
                pass(.byteBuffer(buffer), promise: promise)
            }  // else: unchunked (the encoder has nothing to forget), and no promise to keep
            messageStarted = false
            messagesEnded += 1
            if let after = afterMessages, messagesEnded >= after.count {
                afterMessages = nil
                after.action()
            }
        }
    }

    /// A head, encoded by `encode` into the head buffer, where it waits for what follows it.
    @inline(__always)
    private func writeHead(isInterim: Bool, promise: EventLoopPromise<Void>?, _ encode: (inout HTTP1MessageEncoder, inout ByteBuffer) -> Void) {
        writeHeldBytes(promise: nil)
        if !isInterim { messageStarted = true }
        // The last head's buffer is reused once it is written (the socket no longer holds it): a
        // keep-alive connection's heads then cost no allocation.
        headBuffer.clear()
        encode(&encoder, &headBuffer)
        holdsUnwrittenBytes = true
        // A 1xx answer goes at once: its final head follows only later, and a tunnel's bytes may go after it.
        if isInterim || promise != nil { writeHeldBytes(promise: promise) }
    }

    /// Writes what waits behind a head, then flushes the pipeline.
    func flush() {
        writeHeldBytes(promise: nil)
        guard holdsUnflushedWrites else { return }
        holdsUnflushedWrites = false
        context.flush()
    }

    /// Every write of this writer goes through here: the next `flush` then has something to send.
    private func pass(_ data: IOData, promise: EventLoopPromise<Void>?) {
        holdsUnflushedWrites = true
        context.write(NIOAny(data), promise: promise)
    }

    private func writeHeldBytes(promise: EventLoopPromise<Void>?) {
        guard holdsUnwrittenBytes else { return }
        holdsUnwrittenBytes = false
        pass(.byteBuffer(headBuffer), promise: promise)
        if headBuffer.capacity > keptHeadCapacity {  // an idle connection keeps no large buffer
            headBuffer = context.channel.allocator.buffer(capacity: 256)
        }
    }

    /// Runs `action` once `count` messages have ended on this connection (at once if they have).
    func whenMessagesEnded(_ count: Int, _ action: @escaping () -> Void) {
        guard messagesEnded < count else {
            action()
            return
        }
        afterMessages = (count, action)
    }

    /// The handler leaves the pipeline: a reply still waiting would keep the error handler (and this) alive.
    func cancelWaiting() {
        afterMessages = nil
    }

    private func writeBody(_ body: IOData, promise: EventLoopPromise<Void>?) {
        guard encoder.isChunked, body.readableBytes > 0 else {
            pass(body, promise: promise)
            return
        }
        if case .byteBuffer(let bytes) = body, bytes.readableBytes <= copiedChunkLimit {
            var buffer = context.channel.allocator.buffer(capacity: bytes.readableBytes + chunkFramingBytes)
            encoder.encodeBody(bytes, into: &buffer)
            pass(.byteBuffer(buffer), promise: promise)
            return
        }
        // Large (or a file region): size line, the data as it is, then the CRLF kept at the size line's end.
        var sizeLine = context.channel.allocator.buffer(capacity: 24)
        HTTP1MessageEncoder.writeChunkSize(body.readableBytes, into: &sizeLine)
        sizeLine.writeStaticString("\r\n")
        var crlf = sizeLine
        crlf.moveReaderIndex(forwardBy: crlf.readableBytes - 2)
        sizeLine.moveWriterIndex(to: sizeLine.writerIndex - 2)
        pass(.byteBuffer(sizeLine), promise: nil)
        pass(body, promise: nil)
        pass(.byteBuffer(crlf), promise: promise)
    }
}

extension HTTP1MessageWriter: AppendingHeadOutput {
    /// A head, with the proxy's own fields written after its fields.
    @inline(__always)
    func writeHead(_ head: Head, appending own: Head.AppendedFields) {
        writeHead(isInterim: head.isInterim, promise: nil) { head.encode(with: &$0, appending: own, into: &$1) }
    }
}
