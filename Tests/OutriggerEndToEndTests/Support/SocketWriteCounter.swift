import NIOConcurrencyHelpers
import NIOCore

struct SocketWrites {
    var writes = 0
    var flushes = 0
}

/// Counts the writes and flushes that reach the socket.
final class SocketWriteCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    let counts: NIOLockedValueBox<SocketWrites>

    init(_ counts: NIOLockedValueBox<SocketWrites>) {
        self.counts = counts
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        counts.withLockedValue { $0.writes += 1 }
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        counts.withLockedValue { $0.flushes += 1 }
        context.flush()
    }
}
