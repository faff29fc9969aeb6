import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Byte-exact HTTP/1.1 over a plain socket, for what curl will not send (malformed requests, pipelining).
enum RawTCP {
    struct Reply: Sendable {
        var bytes: [UInt8]
        var text: String
        /// True when the peer closed the connection; false when `timeout` ended the wait with it still open.
        var closedByPeer: Bool

        /// Status lines of every response in `text`, in order.
        var statusLines: [String] {
            // Split on any line break: "\r\n" is one Character in Swift, and bodies end in a bare "\n".
            text.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasPrefix("HTTP/1.") && $0.count >= 12 }
        }
    }

    /// Sends `request`, then reads until the peer closes or `timeout` passes (a safety net, not a wait:
    /// the tests that use it expect the peer to close).
    static func exchange(port: Int, _ request: [UInt8], timeout: Duration = .seconds(20)) async throws -> Reply {
        try await exchange(port: port, parts: [ByteBuffer(bytes: request)], gap: .zero, timeout: timeout)
    }

    /// Sends `parts` one after another, `gap` apart (a slow client), then reads until the peer closes or
    /// `timeout` passes. Writes are not waited for: a peer that stops reading leaves them pending.
    static func exchange(port: Int, parts: [ByteBuffer], gap: Duration, timeout: Duration = .seconds(20)) async throws -> Reply {
        let collector = NIOLockedValueBox<[UInt8]>([])
        let timedOut = NIOLockedValueBox(false)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteCollector(collector))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) {
            timedOut.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        for (index, part) in parts.enumerated() {
            if index > 0 { try await Task.sleep(for: gap) }
            channel.writeAndFlush(part, promise: nil)
        }
        try await channel.closeFuture.get()
        timer.cancel()
        let bytes = collector.withLockedValue { $0 }
        return Reply(bytes: bytes, text: String(decoding: bytes, as: UTF8.self), closedByPeer: !timedOut.withLockedValue { $0 })
    }

    static func exchange(port: Int, _ request: String, timeout: Duration = .seconds(20)) async throws -> Reply {
        try await exchange(port: port, Array(request.utf8), timeout: timeout)
    }

    /// A connection left open: what arrived so far can be read at any time (for a tunnel, which does not close).
    final class Connection: Sendable {
        private let channel: Channel
        private let collected: NIOLockedValueBox<[UInt8]>

        init(port: Int) async throws {
            let collected = NIOLockedValueBox<[UInt8]>([])
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ByteCollector(collected)) }
                }
                .connect(host: "127.0.0.1", port: port)
                .get()
            self.collected = collected
        }

        var received: String { String(decoding: collected.withLockedValue { $0 }, as: UTF8.self) }

        func send(_ text: String) {
            channel.writeAndFlush(ByteBuffer(string: text), promise: nil)
        }

        func close() async {
            try? await channel.close()
        }
    }
}

/// A loopback server on port 0 whose every accepted connection gets a fresh handler from `makeHandler`
/// (after `accepted`, which sees each connection first).
func loopbackServer(accepted: @escaping @Sendable (Channel) -> Void = { _ in },
                    _ makeHandler: @escaping @Sendable () -> any ChannelHandler) async throws -> Channel {
    try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .childChannelInitializer { channel in
            accepted(channel)
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(makeHandler())
            }
        }
        .bind(host: "127.0.0.1", port: 0)
        .get()
}

/// An upstream that records every byte it receives and answers nothing: proves what reached it.
final class RecordingUpstream: Sendable {
    private let channel: Channel
    private let received: NIOLockedValueBox<[UInt8]>
    private let connections: NIOLockedValueBox<Int>

    var port: Int { channel.localAddress!.port! }
    var receivedBytes: Int { received.withLockedValue { $0.count } }
    var receivedText: String { received.withLockedValue { String(decoding: $0, as: UTF8.self) } }
    var connectionCount: Int { connections.withLockedValue { $0 } }

    private init(channel: Channel, received: NIOLockedValueBox<[UInt8]>, connections: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.received = received
        self.connections = connections
    }

    /// With `answer`, each read that ends a request head is answered with it (bodiless requests only).
    static func start(answer: String? = nil) async throws -> RecordingUpstream {
        let received = NIOLockedValueBox<[UInt8]>([])
        let connections = NIOLockedValueBox(0)
        let channel = try await loopbackServer(accepted: { _ in connections.withLockedValue { $0 += 1 } }) { ByteCollector(received, answer: answer) }
        return RecordingUpstream(channel: channel, received: received, connections: connections)
    }

    func stop() async {
        try? await channel.close()
    }
}

/// Appends every byte a channel reads to a shared buffer; closes on errors.
private final class ByteCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let bytes: NIOLockedValueBox<[UInt8]>
    let answer: String?

    init(_ bytes: NIOLockedValueBox<[UInt8]>, answer: String? = nil) {
        self.bytes = bytes
        self.answer = answer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytes.withLockedValue { $0.append(contentsOf: buffer.readableBytesView) }
        if let answer, String(buffer: buffer).hasSuffix("\r\n\r\n") {
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: answer)), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// An upstream that answers every connection's first bytes at once with a fixed response, without
/// reading the request body: the early answer a server gives to an upload it refuses.
final class EarlyResponder: Sendable {
    private let channel: Channel
    var port: Int { channel.localAddress!.port! }

    private init(channel: Channel) {
        self.channel = channel
    }

    static func start(response: String) async throws -> EarlyResponder {
        let channel = try await loopbackServer { AnswerOnce(response: response) }
        return EarlyResponder(channel: channel)
    }

    func stop() async {
        try? await channel.close()
    }

    private final class AnswerOnce: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let response: String
        var answered = false

        init(response: String) {
            self.response = response
        }

        /// Answers on the first bytes, then stops reading: the rest of a large request can never be sent
        /// whole (the socket buffers fill), so the exchange is certain to end before the request does.
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered else { return }
            answered = true
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
    }
}

/// An upstream that serves one request per keep-alive connection and then, like a server whose idle
/// timeout just fired, closes the connection when the next request arrives on it, without answering.
final class OneRequestPerConnectionUpstream: Sendable {
    private let channel: Channel
    private let connections: NIOLockedValueBox<Int>
    var port: Int { channel.localAddress!.port! }
    var connectionCount: Int { connections.withLockedValue { $0 } }

    private init(channel: Channel, connections: NIOLockedValueBox<Int>) {
        self.channel = channel
        self.connections = connections
    }

    /// - Parameter resetting: a later request is answered with a reset (SO_LINGER 0), not a clean close: the
    ///   upstream aborting a request it read, rather than a keep-alive connection it had closed.
    static func start(resetting: Bool = false) async throws -> OneRequestPerConnectionUpstream {
        let connections = NIOLockedValueBox(0)
        let channel = try await loopbackServer(accepted: { _ in connections.withLockedValue { $0 += 1 } }) { AnswerOnceHandler(resetting: resetting) }
        return OneRequestPerConnectionUpstream(channel: channel, connections: connections)
    }

    func stop() async {
        try? await channel.close()
    }

    private final class AnswerOnceHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var seen: [UInt8] = []
        private var answered = false
        private let resetting: Bool

        init(resetting: Bool) {
            self.resetting = resetting
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if answered {
                if resetting, let socket = context.channel as? SocketOptionProvider {
                    let channel = context.channel
                    socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
                } else {
                    context.close(promise: nil)
                }
                return
            }
            seen += unwrapInboundIn(data).readableBytesView
            guard String(decoding: seen, as: UTF8.self).contains("\r\n\r\n") else { return }
            answered = true
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok"
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}

/// An upstream that answers with a head and the first bytes of a longer body, then stalls (never closes).
final class StallingUpstream: Sendable {
    private let channel: Channel
    var port: Int { channel.localAddress!.port! }

    private init(channel: Channel) {
        self.channel = channel
    }

    static func start() async throws -> StallingUpstream {
        let channel = try await loopbackServer { StallHandler() }
        return StallingUpstream(channel: channel)
    }

    func stop() async {
        try? await channel.close()
    }

    private final class StallHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var answered = false

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !answered else { return }
            answered = true
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nfirst bytes"
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: response)), promise: nil)
        }
    }
}

/// A raw connection the test keeps open: bytes sent when asked, every byte received collected, and a wait for
/// the peer to close it (with a safety net, after which the test closes it itself).
final class HeldConnection: Sendable {
    private let channel: Channel
    private let received: NIOLockedValueBox<[UInt8]>
    private let closedByTest = NIOLockedValueBox(false)

    private init(channel: Channel, received: NIOLockedValueBox<[UInt8]>) {
        self.channel = channel
        self.received = received
    }

    /// - Parameter reading: false: nothing is ever read (a small receive buffer, soon full), as a client that
    ///   stopped reading; a reset by the peer is still seen.
    static func open(port: Int, reading: Bool = true) async throws -> HeldConnection {
        let received = NIOLockedValueBox<[UInt8]>([])
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: reading)
            .channelOption(.socketOption(.so_rcvbuf), value: reading ? 128 * 1024 : 4096)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(ByteCollector(received)) }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return HeldConnection(channel: channel, received: received)
    }

    var bytes: [UInt8] { received.withLockedValue { $0 } }

    func send(_ bytes: [UInt8]) {
        channel.writeAndFlush(ByteBuffer(bytes: bytes), promise: nil)
    }

    /// Waits for the peer to close the connection: true when it did, false when `timeout` passed first.
    func closedByPeer(within timeout: Duration = .seconds(20)) async throws -> Bool {
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) { [channel, closedByTest] in
            closedByTest.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        try await channel.closeFuture.get()
        timer.cancel()
        return !closedByTest.withLockedValue { $0 }
    }

    func close() async {
        closedByTest.withLockedValue { $0 = true }
        try? await channel.close()
    }
}
