import NIOCore
import NIOHTTP1
import OutriggerCore

/// Writes an HTTP/1.1 connection's responses into its pipeline as bytes (`HTTP1MessageEncoder`), where NIO's
/// `HTTPResponseEncoder` sat: each part is encoded where it is written, with no pipeline hop and no boxed part
/// per write. It counts the responses it ended, for `HTTP1ProtocolErrorHandler`'s answer to a broken pipelined
/// request, which waits for the responses owed before it.
final class HTTP1ResponseWriter: HTTP1PartOutput {
    /// `ProxyRequestHandler`'s, the last handler: its writes pass every outbound handler.
    let context: ChannelHandlerContext
    private var encoder = HTTP1MessageEncoder()
    /// Responses whose end was written.
    private(set) var responsesEnded = 0
    /// A final (non-1xx) response head was written and its end not yet.
    private(set) var responseStarted = false
    private var afterResponses: (count: Int, action: () -> Void)?

    /// The largest head buffer kept for the next head.
    private static let keptHeadCapacity = 4096
    /// Bodies up to this size are framed into one buffer with their chunk size line: one write, not three.
    private static let copiedChunkLimit = 4096

    private var headBuffer: ByteBuffer

    init(context: ChannelHandlerContext) {
        self.context = context
        headBuffer = context.channel.allocator.buffer(capacity: 256)
    }

    func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(let head):
            if head.status.code >= 200 { responseStarted = true }
            // The last head's buffer is reused once it is written (the socket no longer holds it): a
            // keep-alive connection's heads then cost no allocation.
            headBuffer.clear()
            encoder.encodeHead(head, into: &headBuffer)
            context.write(NIOAny(IOData.byteBuffer(headBuffer)), promise: promise)
            if headBuffer.capacity > Self.keptHeadCapacity {  // an idle connection keeps no large buffer
                headBuffer = context.channel.allocator.buffer(capacity: 256)
            }
        case .body(let body):
            writeBody(body, promise: promise)
        case .end(let trailers):
            if encoder.isChunked || promise != nil {
                // Unchunked, nothing ends the body on the wire; an empty write still completes the promise in order.
                var buffer = context.channel.allocator.buffer(capacity: trailers == nil ? 5 : 256)
                _ = encoder.encodeEnd(trailers: trailers, into: &buffer)
                context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
            }  // else: unchunked (the encoder has nothing to forget), and no promise to keep
            responseStarted = false
            responsesEnded += 1
            if let after = afterResponses, responsesEnded >= after.count {
                afterResponses = nil
                after.action()
            }
        }
    }

    /// Runs `action` once `count` responses have ended on this connection (at once if they have).
    func whenResponsesEnded(_ count: Int, _ action: @escaping () -> Void) {
        guard responsesEnded < count else {
            action()
            return
        }
        afterResponses = (count, action)
    }

    /// The handler leaves the pipeline: a reply still waiting would keep the error handler (and this) alive.
    func cancelWaiting() {
        afterResponses = nil
    }

    private func writeBody(_ body: IOData, promise: EventLoopPromise<Void>?) {
        guard encoder.isChunked, body.readableBytes > 0 else {
            context.write(NIOAny(body), promise: promise)
            return
        }
        if case .byteBuffer(let bytes) = body, bytes.readableBytes <= Self.copiedChunkLimit {
            var buffer = context.channel.allocator.buffer(capacity: bytes.readableBytes + 12)
            encoder.encodeBody(bytes, into: &buffer)
            context.write(NIOAny(IOData.byteBuffer(buffer)), promise: promise)
            return
        }
        // Large (or a file region): size line, the data as it is, then the CRLF kept at the size line's end.
        var sizeLine = context.channel.allocator.buffer(capacity: 24)
        HTTP1MessageEncoder.writeChunkSize(body.readableBytes, into: &sizeLine)
        sizeLine.writeStaticString("\r\n")
        var crlf = sizeLine
        crlf.moveReaderIndex(forwardBy: crlf.readableBytes - 2)
        sizeLine.moveWriterIndex(to: sizeLine.writerIndex - 2)
        context.write(NIOAny(IOData.byteBuffer(sizeLine)), promise: nil)
        context.write(NIOAny(body), promise: nil)
        context.write(NIOAny(IOData.byteBuffer(crlf)), promise: promise)
    }
}
