import Atomics
import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerProxy

/// The built-in demo and test upstream. It answers with what it received (method, path, headers, body
/// size) as JSON, and does what each request asks, by query parameter or `x-echo-*` header:
///
/// | query / header | effect |
/// |---|---|
/// | `status=N` / `x-echo-status` | answer with status N |
/// | `delay=MS` / `x-echo-delay` | wait MS milliseconds before answering |
/// | `size=N` / `x-echo-size` | answer with an N-byte body (streamed, with backpressure) instead of JSON |
/// | `reset=1` / `x-echo-reset` | close the connection (HTTP/2: reset the stream) instead of answering |
/// | `resetAfter=N` / `x-echo-resetafter` | send the head and N bytes of the body, then close (HTTP/2: reset) mid-body |
/// | `close=1` / `x-echo-close` | answer, then close the connection |
/// | `trailers=1` / `x-echo-trailers` | end the response with trailers (`x-echo-trailer: done`) |
///
/// `GET /healthz` answers 200 while the server is healthy and 503 once `setHealthy(false)` was called;
/// `setFailing(status:)` makes every other request get that status;
/// after `setDraining(true)` every response carries `x-outrigger-drain: true` (how an instance being
/// replaced tells sidecars to stop sending it new requests).
///
/// An HTTP/1.1 request with `Connection: upgrade` and `Upgrade: P` gets `101 Switching Protocols`, after
/// which every byte received is sent back as it came (a tunnel echo; no WebSocket framing).
///
/// Serves HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port.
public final class EchoServer: Sendable {
    public let name: String
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let counter: EchoCounter

    public var localAddress: SocketAddress { channel.localAddress! }
    /// Requests answered (or reset as asked) so far.
    public var requestsServed: Int { counter.served.load(ordering: .relaxed) }

    private init(name: String, group: MultiThreadedEventLoopGroup, channel: Channel, counter: EchoCounter) {
        self.name = name
        self.group = group
        self.channel = channel
        self.counter = counter
    }

    /// `delay` is added to every request's own (a uniformly slow instance, for balancer tests and demos).
    public static func start(host: String, port: Int, name: String, threads: Int = 1, delay: Duration = .zero) async throws -> EchoServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let counter = EchoCounter(baseDelayMilliseconds: Int(delay.nanoseconds / 1_000_000))
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PrefaceSniffer { channel, isHTTP2 in
                            if isHTTP2 {
                                _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                                    mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                                ) { stream in
                                    stream.eventLoop.makeCompletedFuture {
                                        try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                        try stream.pipeline.syncOperations.addHandler(EchoHandler(name: name, protocolName: "HTTP/2", counter: counter))
                                    }
                                }
                            } else {
                                let sync = channel.pipeline.syncOperations
                                try sync.addHandler(HTTPResponseEncoder())
                                try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
                                try sync.addHandler(HTTPServerPipelineHandler())
                                try sync.addHandler(HTTPServerProtocolErrorHandler())
                                try sync.addHandler(EchoHandler(name: name, protocolName: "HTTP/1.1", counter: counter))
                            }
                        })
                    }
                }
                .bind(host: host, port: port)
                .get()
            return EchoServer(name: name, group: group, channel: channel, counter: counter)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Health checks of `/healthz` pass (true) or get 503 (false).
    public func setHealthy(_ healthy: Bool) {
        counter.healthy.store(healthy, ordering: .relaxed)
    }

    /// Every request is answered with `status` (a failing instance, for retry and outlier tests), or as
    /// it asks again (nil). `/healthz` is not affected.
    public func setFailing(status: Int?) {
        counter.failingStatus.store(status ?? 0, ordering: .relaxed)
    }

    /// Every response from now on waits `delay` more (a slow instance, or a fast one again with `.zero`).
    public func setDelay(_ delay: Duration) {
        counter.baseDelay.store(Int(delay.nanoseconds / 1_000_000), ordering: .relaxed)
    }

    /// Every response asks sidecars to drain this instance (true), or stops asking (false).
    public func setDraining(_ draining: Bool) {
        counter.draining.store(draining, ordering: .relaxed)
    }

    public func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// Stops taking connections: `waitUntilClosed` returns. The event loops keep running until `stop`.
    public func closeListener() async {
        try? await channel.close()
    }

    /// Returns once the listener is closed. Call it before `stop`: once the event loops are shut down, nothing
    /// would complete the wait.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }
}

/// What every connection of one server shares: its base delay and its request count.
final class EchoCounter: Sendable {
    let served = ManagedAtomic(0)
    let healthy = ManagedAtomic(true)
    let draining = ManagedAtomic(false)
    /// 0: answer as asked; otherwise every request gets this status.
    let failingStatus = ManagedAtomic(0)
    let baseDelay: ManagedAtomic<Int>
    var baseDelayMilliseconds: Int { baseDelay.load(ordering: .relaxed) }

    init(baseDelayMilliseconds: Int) {
        self.baseDelay = ManagedAtomic(baseDelayMilliseconds)
    }
}

/// What one request asked the echo server to do.
struct EchoInstructions {
    var status = 200
    var delayMilliseconds = 0
    var bodySize: Int?
    var reset = false
    var resetAfterBytes: Int?
    var close = false
    var trailers = false

    init(_ head: HTTPRequestHead) {
        var values: [String: String] = [:]
        if let query = head.uri.split(separator: "?", maxSplits: 1).dropFirst().first {
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                values[String(parts[0])] = parts.count > 1 ? String(parts[1]) : "1"
            }
        }
        for (name, value) in head.headers where name.lowercased().hasPrefix("x-echo-") {
            values[String(name.lowercased().dropFirst("x-echo-".count))] = value
        }
        if let status = values["status"].flatMap(Int.init), (100...599).contains(status) { self.status = status }
        delayMilliseconds = values["delay"].flatMap(Int.init) ?? 0
        bodySize = values["size"].flatMap(Int.init)
        reset = values["reset"] == "1" || values["reset"] == "true"
        resetAfterBytes = (values["resetAfter"] ?? values["resetafter"]).flatMap(Int.init)
        close = values["close"] == "1" || values["close"] == "true"
        trailers = values["trailers"] == "1" || values["trailers"] == "true"
    }
}

final class EchoHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private static let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)

    private let name: String
    private let protocolName: String
    private let counter: EchoCounter
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    /// Bytes of a sized body still to write, when writing waits for writability.
    private var remaining = 0
    private var pendingEnd: (trailers: HTTPHeaders?, close: Bool)?

    init(name: String, protocolName: String, counter: EchoCounter) {
        self.name = name
        self.protocolName = protocolName
        self.counter = counter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            bodyBytes = 0
        case .body(let body):
            bodyBytes += body.readableBytes
        case .end:
            guard let head else { return }
            let instructions = EchoInstructions(head)
            let delay = instructions.delayMilliseconds + counter.baseDelayMilliseconds
            if delay > 0 {
                let bodyBytes = self.bodyBytes
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay))) {
                    self.respond(context: context, head: head, bodyBytes: bodyBytes, instructions: instructions)
                }
            } else {
                respond(context: context, head: head, bodyBytes: bodyBytes, instructions: instructions)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead, bodyBytes: Int, instructions: EchoInstructions) {
        guard context.channel.isActive else { return }
        counter.served.wrappingIncrement(ordering: .relaxed)
        if instructions.reset {
            context.close(promise: nil)
            return
        }
        if protocolName == "HTTP/1.1", let upgrade = head.headers.first(name: "upgrade"),
           head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "upgrade" }) {
            switchToRawEcho(context: context, upgrade: upgrade)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "x-echo-server", value: name)
        let body: ByteBuffer?
        if let size = instructions.bodySize {
            headers.add(name: "content-type", value: "application/octet-stream")
            if !instructions.trailers { headers.add(name: "content-length", value: String(size)) }
            body = nil
            remaining = size
        } else {
            var requestHeaders: [String: String] = [:]
            for (name, value) in head.headers {
                let key = name.lowercased()
                requestHeaders[key] = requestHeaders[key].map { "\($0), \(value)" } ?? value
            }
            let object: [String: Any] = [
                "server": name, "method": head.method.rawValue, "path": head.uri,
                "headers": requestHeaders, "bodyBytes": bodyBytes, "protocol": protocolName,
            ]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            var buffer = context.channel.allocator.buffer(capacity: data.count + 1)
            buffer.writeBytes(data)
            buffer.writeString("\n")
            headers.add(name: "content-type", value: "application/json")
            if !instructions.trailers { headers.add(name: "content-length", value: String(buffer.readableBytes)) }
            body = buffer
        }
        if instructions.close && protocolName == "HTTP/1.1" { headers.add(name: "connection", value: "close") }
        if counter.draining.load(ordering: .relaxed) { headers.add(name: "x-outrigger-drain", value: "true") }
        var statusCode = instructions.status
        let failing = counter.failingStatus.load(ordering: .relaxed)
        if failing != 0 && head.uri != "/healthz" { statusCode = failing }
        if head.uri == "/healthz" && !counter.healthy.load(ordering: .relaxed) { statusCode = 503 }
        let status = HTTPResponseStatus(statusCode: statusCode)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if let cut = instructions.resetAfterBytes {
            // The response breaks off: the head, `cut` bytes of its body, then the connection (or stream) goes.
            let partial = body.map { $0.getSlice(at: $0.readerIndex, length: min(cut, $0.readableBytes))! }
                ?? Self.chunk.getSlice(at: 0, length: min(cut, remaining, Self.chunk.readableBytes))!
            remaining = 0
            if partial.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(partial))), promise: nil) }
            context.flush()
            context.close(promise: nil)
            return
        }
        if let body, head.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        if head.method == .HEAD { remaining = 0 }
        var trailers: HTTPHeaders?
        if instructions.trailers { trailers = ["x-echo-trailer": "done"] }
        pendingEnd = (trailers, instructions.close || !head.isKeepAlive)
        writeRemaining(context: context)
    }

    /// Writes a sized body while the channel is writable, then the end.
    private func writeRemaining(context: ChannelHandlerContext) {
        while remaining > 0 && context.channel.isWritable {
            let count = min(remaining, Self.chunk.readableBytes)
            remaining -= count
            context.write(wrapOutboundOut(.body(.byteBuffer(Self.chunk.getSlice(at: 0, length: count)!))), promise: nil)
        }
        if remaining > 0 {
            context.flush()
            return
        }
        guard let end = pendingEnd else { return }
        pendingEnd = nil
        let written = context.writeAndFlush(wrapOutboundOut(.end(end.trailers)))
        if end.close { written.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }

    /// Answers 101, then swaps the HTTP handlers for a byte echo (the decoder last, so no byte is lost).
    private func switchToRawEcho(context: ChannelHandlerContext, upgrade: String) {
        let headers: HTTPHeaders = ["upgrade": upgrade, "connection": "upgrade", "x-echo-server": name]
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(RawEchoHandler())
            pipeline.removeHandler(try pipeline.handler(type: HTTPServerProtocolErrorHandler.self), promise: nil)
            pipeline.removeHandler(try pipeline.handler(type: HTTPServerPipelineHandler.self), promise: nil)
            pipeline.removeHandler(try pipeline.handler(type: HTTPResponseEncoder.self), promise: nil)
            pipeline.removeHandler(context: context, promise: nil)
            pipeline.removeHandler(try pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { writeRemaining(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// After an upgrade: every byte back as it came.
final class RawEchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
