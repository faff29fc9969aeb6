import NIOConcurrencyHelpers
import NIOCore
import OutriggerProxy
import Testing

@Suite("Flush coalescing on HTTP/2 connections, through a socket")
struct FlushCoalescerTests {
    @Test func flushesOfOneTickLeaveAsOneAndACloseSendsWhatWasWrittenFirst() async throws {
        let flushes = NIOLockedValueBox(0)
        // Counter (next to the socket) ← coalescer ← a writer that flushes after every part.
        let server = try await loopbackServer(accepted: { channel in
            try? channel.pipeline.syncOperations.addHandlers([FlushCounter(flushes), FlushCoalescer()])
        }) { PartWriter() }
        defer { server.close(promise: nil) }

        let reply = try await RawTCP.exchange(port: server.localAddress!.port!, [UInt8]())
        #expect(reply.text == "abcd", "nothing written before the close was lost")
        #expect(reply.closedByPeer)
        #expect(flushes.withLockedValue { $0 } == 2, "four flushes in two ticks reach the socket as two")
    }
}

/// Counts the flushes that reach the socket.
private final class FlushCounter: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    let count: NIOLockedValueBox<Int>

    init(_ count: NIOLockedValueBox<Int>) {
        self.count = count
    }

    func flush(context: ChannelHandlerContext) {
        count.withLockedValue { $0 += 1 }
        context.flush()
    }
}

/// On connect: "a", "b", "c", each flushed, in one tick; in the next, "d" flushed and a close.
private final class PartWriter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        for part in ["a", "b", "c"] {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: part)), promise: nil)
        }
        context.eventLoop.assumeIsolated().execute {
            context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(string: "d")), promise: nil)
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }
}
