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

    /// The storage follows the writes: 15 requests with a 4 KiB body, each written as the one before completes (inside
    /// the flush that sent it), do not pile up in it — each flush's bytes are let go before the next are framed — and
    /// all of it goes.
    @Test func storageKeptFromWriteToWriteFollowsTheWrites() async throws {
        let largest = NIOLockedValueBox(0)
        let server = try await loopbackServer(accepted: { channel in
            try? channel.pipeline.syncOperations.addHandler(HTTP2Codec(.client, limits: .upstream, allocator: channel.allocator))
        }) { ChainedRequestWriter(bodyBytes: 4096, largestOutput: largest) }
        defer { server.close(promise: nil) }

        let reply = try await RawTCP.exchange(port: server.localAddress!.port!, [UInt8]())
        #expect(reply.closedByPeer)
        #expect(Self.headersStreams(in: reply.bytes) == Array(stride(from: 1, through: 29, by: 2)), "every request once, in order")
        #expect(Self.dataBytes(in: reply.bytes) == 15 * 4096, "and every body")
        let capacity = largest.withLockedValue { $0 }
        #expect(capacity > 0 && capacity <= 16 * 1024, "about 4 times a write at most, not the 60 KiB written")
    }

    /// The payload bytes of the DATA frames in `bytes`, after the client preface.
    static func dataBytes(in bytes: [UInt8]) -> Int {
        frames(in: bytes).filter { $0.type == 0 }.reduce(0) { $0 + $1.length }
    }

    /// The stream ids of the HEADERS frames in `bytes`, after the client preface.
    static func headersStreams(in bytes: [UInt8]) -> [UInt32] {
        frames(in: bytes).filter { $0.type == 1 }.map(\.stream)
    }

    /// Each frame in `bytes` after the client preface: its type, stream id and payload length.
    static func frames(in bytes: [UInt8]) -> [(type: UInt8, stream: UInt32, length: Int)] {
        var frames: [(type: UInt8, stream: UInt32, length: Int)] = []
        var at = HTTP2FrameKind.clientPreface.count
        while at + 9 <= bytes.count {
            let length = Int(bytes[at]) << 16 | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2])
            frames.append((bytes[at + 3], bytes[at + 5 ..< at + 9].reduce(0) { $0 << 8 | UInt32($1) } & 0x7fff_ffff, length))
            at += 9 + length
        }
        return frames
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

    /// A request's HEADERS: a GET that ends with them, or the start of a POST whose body follows.
    static func request(on stream: Int, method: String = "GET", endStream: Bool = true) -> HTTP2Frame {
        let head = HPACKHeaders([(":method", method), (":scheme", "http"), (":path", "/"), (":authority", "upstream")])
        return HTTP2Frame(streamID: HTTP2StreamID(stream), payload: .headers(.init(headers: head, endStream: endStream)))
    }
}

/// Once connected: a request on stream 1; as each write completes, the next request is written and flushed (3, 5, 7,
/// or up to 29 with a body); the last one's completion closes.
private final class ChainedRequestWriter: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame
    /// Each request's body (none: the request ends with its headers).
    let bodyBytes: Int
    /// The largest output storage the codec had as a write completed.
    let largestOutput: NIOLockedValueBox<Int>?

    init(bodyBytes: Int = 0, largestOutput: NIOLockedValueBox<Int>? = nil) {
        self.bodyBytes = bodyBytes
        self.largestOutput = largestOutput
    }

    func channelActive(context: ChannelHandlerContext) {
        write(stream: 1, context)
        context.fireChannelActive()
    }

    private func write(stream: Int, _ context: ChannelHandlerContext) {
        let last = bodyBytes > 0 ? 29 : 7
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { _ in
            if let largest = self.largestOutput, let codec = try? context.pipeline.syncOperations.handler(type: HTTP2Codec.self) {
                largest.withLockedValue { $0 = max($0, codec.outputCapacity) }
            }
            if stream < last { self.write(stream: stream + 2, context) } else { context.close(promise: nil) }
        }
        guard bodyBytes > 0 else {
            context.writeAndFlush(wrapOutboundOut(RequestWriter.request(on: stream)), promise: written)
            return
        }
        context.write(wrapOutboundOut(RequestWriter.request(on: stream, method: "POST", endStream: false)), promise: nil)
        let body = context.channel.allocator.buffer(repeating: UInt8(ascii: "x"), count: bodyBytes)
        let data = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(body), endStream: true))
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: HTTP2StreamID(stream), payload: data)), promise: written)
    }
}
