import Benchmark
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerConfig
import OutriggerEcho
import OutriggerProxy

/// Whole HTTP/1.1 requests over loopback sockets, in this process: the same keep-alive client either
/// straight to the echo server or through a sidecar (one event loop) in front of it. Malloc counts are
/// process-wide, and the direct request carries the fields the sidecar would add (the echo server parses the
/// same head on both paths), so "proxied" minus "direct" is what the sidecar allocates per request.
let benchmarks: @Sendable () -> Void = {
    let configuration = Benchmark.Configuration(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: 200,
        maxDuration: .seconds(4),
        maxIterations: 10_000
    )

    for path in [LoopbackFixture.Path.direct, .proxied] {
        let fixture = LoopbackFixture(path: path)
        Benchmark("HTTP/1.1 request \(path)", configuration: configuration) { benchmark in
            do {
                let status = try fixture.client.get()
                if status != .ok { benchmark.error("unexpected status \(status)") }
            } catch {
                benchmark.error("request failed: \(error)")
            }
        } setup: {
            try await fixture.start()
        } teardown: {
            await fixture.stop()
        }
    }
}

/// The servers and the client of one benchmark, started in its setup and stopped in its teardown.
final class LoopbackFixture: Sendable {
    enum Path: String, Sendable, CustomStringConvertible {
        case direct, proxied
        var description: String { rawValue }
    }

    private struct Running {
        var echo: EchoServer
        var sidecar: Sidecar?
        var client: KeepAliveClient
    }

    /// Connections warmed before measuring: the sidecar's upstream pool, buffers, lazily built state.
    static let warmupRequests = 500

    struct UnexpectedStatus: Error {
        var status: HTTPResponseStatus
    }

    let path: Path
    private let running = NIOLockedValueBox<Running?>(nil)

    init(path: Path) {
        self.path = path
    }

    /// The running client; only valid between `start` and `stop`.
    var client: KeepAliveClient {
        guard let client = running.withLockedValue({ $0?.client }) else { fatalError("loopback fixture not started") }
        return client
    }

    func start() async throws {
        let echo = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "echo")
        var sidecar: Sidecar?
        let client: KeepAliveClient
        do {
            var port = echo.localAddress.port ?? 0
            if path == .proxied {
                let config = SidecarConfig.quickStart(
                    listen: HostPort(host: "127.0.0.1", port: 0),
                    upstreams: [HostPort(host: "127.0.0.1", port: port)],
                    admin: nil,
                    concurrency: 1
                )
                let started = try await Sidecar.start(config: config, logger: Logger(label: "microbench") { _ in SwiftLogNoOpLogHandler() })
                sidecar = started
                port = started.listenerAddresses.values.first?.port ?? 0
            }
            client = try await KeepAliveClient.connect(port: port, addingWhatTheSidecarAdds: path == .direct)
        } catch {
            await sidecar?.shutdown()
            await echo.stop()
            throw error
        }
        running.withLockedValue { $0 = Running(echo: echo, sidecar: sidecar, client: client) }
        do {
            for _ in 0..<Self.warmupRequests {
                let status = try await client.send().get()
                guard status == .ok else { throw UnexpectedStatus(status: status) }
            }
        } catch {
            await stop()
            throw error
        }
    }

    func stop() async {
        guard let stopping = running.withLockedValue({ state -> Running? in
            defer { state = nil }
            return state
        }) else { return }
        await stopping.client.close()
        await stopping.sidecar?.shutdown()
        await stopping.echo.stop()
    }
}

/// One keep-alive HTTP/1.1 connection with at most one request in flight, on an event loop of its own.
final class KeepAliveClient: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel

    private init(group: MultiThreadedEventLoopGroup, channel: Channel) {
        self.group = group
        self.channel = channel
    }

    /// The fields a sidecar adds to the request it forwards, with values of the same lengths. The echo server's
    /// decoder allocates for each name or value over 15 bytes it parses, so the direct request carries them too:
    /// the echo does the same work on both paths, and the difference is the sidecar's own allocations.
    static let fieldsTheSidecarAdds: [(String, String)] = [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "49bc4e7f-f4cb-44e8-8a46-0b1ea3ad3f23"),
        ("x-outrigger-expected-timeout-ms", "15000"),
        ("traceparent", "00-624d3cdbf49e737e9620e87f58708e55-ba750ce1c246850d-00"),
    ]

    static func connect(port: Int, addingWhatTheSidecarAdds: Bool) async throws -> KeepAliveClient {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // A fixed-size body (`size=`) keeps the echo server's answer independent of the headers it receives.
        var headers: HTTPHeaders = ["host": "127.0.0.1:\(port)", "user-agent": "outrigger-microbench", "accept": "*/*"]
        if addingWhatTheSidecarAdds { headers.add(contentsOf: fieldsTheSidecarAdds) }
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/bench?size=64", headers: headers)
        do {
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseWaiter(request: head))
                    }
                }
                .connect(host: "127.0.0.1", port: port)
                .get()
            return KeepAliveClient(group: group, channel: channel)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    /// Sends the GET; the future completes with the status once the whole response has arrived.
    func send() -> EventLoopFuture<HTTPResponseStatus> {
        let promise = channel.eventLoop.makePromise(of: HTTPResponseStatus.self)
        channel.writeAndFlush(promise, promise: nil)
        return promise.futureResult
    }

    /// Sends the GET and blocks the calling thread (the benchmark's, never an event loop) until the whole
    /// response has arrived.
    func get() throws -> HTTPResponseStatus {
        try send().wait()
    }

    func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// Writes the request for each promise written to it and completes that promise at the response's end.
final class ResponseWaiter: ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = EventLoopPromise<HTTPResponseStatus>
    typealias OutboundOut = HTTPClientRequestPart

    private struct ConnectionClosed: Error {}

    private let request: HTTPRequestHead
    private var pending: EventLoopPromise<HTTPResponseStatus>?
    private var status: HTTPResponseStatus = .ok

    init(request: HTTPRequestHead) {
        self.request = request
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        precondition(pending == nil, "one request in flight at a time")
        pending = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body:
            break
        case .end:
            let promise = pending
            pending = nil
            promise?.succeed(status)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(ConnectionClosed())
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func fail(_ error: Error) {
        let promise = pending
        pending = nil
        promise?.fail(error)
    }
}
