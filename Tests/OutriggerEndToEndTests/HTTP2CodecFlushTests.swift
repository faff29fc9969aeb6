import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP2
import OutriggerCore
@testable import OutriggerProxy
import Testing

@Suite("The HTTP/2 codec's writes: one per event-loop tick, through a socket")
struct HTTP2CodecFlushTests {
    @Test func framesFlushedInOneTickLeaveInOneWriteAndACloseSendsWhatWasFramedFirst() async throws {
        let counts = NIOLockedValueBox(SocketWrites())
        // Counter (next to the socket) ← codec (a client's, as upstream) ← a writer that flushes after every request.
        let server = try await loopbackServer(accepted: { channel in
            try? channel.pipeline.syncOperations.addHandlers([
                SocketWriteCounter(counts), HTTP2Codec(.client, limits: .upstream, allocator: channel.allocator),
            ])
        }) { RequestWriter() }
        defer { server.close(promise: nil) }

        let reply = try await RawTCP.exchange(port: server.localAddress!.port!, [UInt8]())
        #expect(reply.closedByPeer)
        #expect(reply.bytes.starts(with: HTTP2FrameKind.clientPreface), "the preface went first")
        #expect(Self.headersStreams(in: reply.bytes) == [1, 3, 5, 7], "every request went, the one written before the close too")
        let seen = counts.withLockedValue { $0 }
        // The preface with the codec's SETTINGS; streams 1, 3 and 5, flushed one by one in a tick; stream 7 and the close.
        #expect(seen.writes == 3, "three requests flushed in one tick left as one buffer")
        #expect(seen.flushes == 3, "and in one write")
    }

    /// The codec frames into the same storage write after write: what a write's completion frames (here, the next
    /// request) goes once, after the bytes it followed, and those never go twice.
    @Test func framesWrittenAsAWriteCompletesLeaveOnceAfterIt() async throws {
        let server = try await loopbackServer(accepted: { channel in
            try? channel.pipeline.syncOperations.addHandler(HTTP2Codec(.client, limits: .upstream, allocator: channel.allocator))
        }) { ChainedRequestWriter() }
        defer { server.close(promise: nil) }

        let reply = try await RawTCP.exchange(port: server.localAddress!.port!, [UInt8]())
        #expect(reply.closedByPeer)
        #expect(Self.headersStreams(in: reply.bytes) == [1, 3, 5, 7], "each request once, in order")
    }

    /// The stream ids of the HEADERS frames in `bytes`, after the client preface.
    static func headersStreams(in bytes: [UInt8]) -> [UInt32] {
        var streams: [UInt32] = []
        var at = HTTP2FrameKind.clientPreface.count
        while at + 9 <= bytes.count {
            let length = Int(bytes[at]) << 16 | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2])
            if bytes[at + 3] == 1 {
                streams.append(bytes[at + 5 ..< at + 9].reduce(0) { $0 << 8 | UInt32($1) } & 0x7fff_ffff)
            }
            at += 9 + length
        }
        return streams
    }
}

private struct SocketWrites {
    var writes = 0
    var flushes = 0
}

/// Counts the writes and flushes that reach the socket.
private final class SocketWriteCounter: ChannelOutboundHandler {
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

/// Once connected: requests on streams 1, 3 and 5, each flushed, in one tick; in the next, stream 7 flushed and a close.
private final class RequestWriter: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    func channelActive(context: ChannelHandlerContext) {
        for stream in [1, 3, 5] {
            context.writeAndFlush(wrapOutboundOut(Self.request(on: stream)), promise: nil)
        }
        context.eventLoop.assumeIsolated().execute {
            context.writeAndFlush(self.wrapOutboundOut(Self.request(on: 7)), promise: nil)
            context.close(promise: nil)
        }
        context.fireChannelActive()
    }

    static func request(on stream: Int) -> HTTP2Frame {
        let head = HPACKHeaders([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "upstream")])
        return HTTP2Frame(streamID: HTTP2StreamID(stream), payload: .headers(.init(headers: head, endStream: true)))
    }
}

/// Once connected: a request on stream 1; as each write completes, the next request (3, 5, 7) is written and
/// flushed; the last one's completion closes.
private final class ChainedRequestWriter: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    func channelActive(context: ChannelHandlerContext) {
        write(stream: 1, context)
        context.fireChannelActive()
    }

    private func write(stream: Int, _ context: ChannelHandlerContext) {
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { _ in
            if stream < 7 { self.write(stream: stream + 2, context) } else { context.close(promise: nil) }
        }
        context.writeAndFlush(wrapOutboundOut(RequestWriter.request(on: stream)), promise: written)
    }
}
