import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// RFC 9113 §5.4.1: after sending GOAWAY for a connection error, an endpoint MUST close the connection.
/// NIO's HTTP/2 handler sends the GOAWAY; this handler, between it and the socket, follows the frames it
/// writes (header, then payload length) and closes the connection once a GOAWAY with an error is out.
final class HTTP2ConnectionErrorCloser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private var scanner = HTTP2FrameHeaderScanner()
    private var closing = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closing else {
            context.write(data, promise: promise)
            return
        }
        switch unwrapOutboundIn(data) {
        case .byteBuffer(let buffer):
            if scanForGoAwayWithError(buffer) {
                closing = true
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.cascade(to: promise)
                context.writeAndFlush(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            }
        case .fileRegion(let region):
            scanner.skip(region.readableBytes)
        }
        context.write(data, promise: promise)
    }

    /// Walks the frame headers in `buffer`; true when one is a GOAWAY whose error code is not NO_ERROR.
    private func scanForGoAwayWithError(_ buffer: ByteBuffer) -> Bool {
        var found = false
        scanner.scan(buffer) { frame, payload in
            // NIO writes a GOAWAY's header and payload together: last stream id, then the error code.
            if frame.type == HTTP2FrameKind.goAway, let code = buffer.getInteger(at: payload + 4, as: UInt32.self), code != 0 {
                found = true
            }
        }
        return found
    }
}
