import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// Flushes a connection at most once per event-loop tick. An HTTP/2 connection's streams are answered by
/// different upstream connections, each of whose read events would flush the whole connection — one
/// `write` system call per response. Deferred to the tick's task phase (after every ready socket has been
/// read), the responses that came in together leave in one write.
public final class FlushCoalescer: ChannelOutboundHandler {
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private var flushPending = false

    public init() {}

    public func flush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        context.eventLoop.assumeIsolated().execute {
            self.flushNow(context: context)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // What was written before a close goes out first (a GOAWAY, the last responses), flush asked for or not
        // yet: a close can come from inside an HTTP/2 codec, between its writes and its flush.
        flushPending = false
        context.flush()
        context.close(mode: mode, promise: promise)
    }

    private func flushNow(context: ChannelHandlerContext) {
        guard flushPending else { return }
        flushPending = false
        context.flush()
    }
}
