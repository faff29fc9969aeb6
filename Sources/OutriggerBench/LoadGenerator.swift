import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import OutriggerConfig

/// What `outrigger bench` sends, where, and for how long.
public struct BenchOptions: Sendable {
    public var host: String
    public var port: Int
    public var path: String
    public var method: HTTPMethod = .GET
    public var headers: [(String, String)] = []
    public var bodySize = 0
    public var connections = 16
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    public var http2 = false
    /// Concurrent streams per HTTP/2 connection.
    public var streams = 1
    /// Requests per second (open loop); nil runs closed loop at the maximum the target sustains.
    public var rate: Double?
    public var duration: Duration = .seconds(10)
    /// Sent but not counted, before the measured `duration`.
    public var warmup: Duration = .seconds(1)
    public var timeout: Duration = .seconds(10)
    /// TLS (an `https://` URL): HTTP/2 is negotiated by ALPN `h2`, HTTP/1.1 by `http/1.1`.
    public var tls = false
    /// PEM file of the CA that signed the target's certificate; nil uses the system's trust roots.
    public var caCertificatePath: String?
    /// Skips certificate verification (a self-signed target).
    public var insecure = false

    public init(host: String, port: Int, path: String) {
        self.host = host
        self.port = port
        self.path = path
    }

    /// Parses `http://host:port/path?query` or `https://…`.
    public init?(url: String) {
        let tls = url.hasPrefix("https://")
        guard tls || url.hasPrefix("http://") else { return nil }
        let rest = url.dropFirst(tls ? "https://".count : "http://".count)
        let authority = rest.prefix { $0 != "/" }
        let path = rest.dropFirst(authority.count)
        var host = String(authority)
        var port = tls ? 443 : 80
        if let colon = authority.lastIndex(of: ":"), !authority[colon...].contains("]") {
            guard let parsed = Int(authority[authority.index(after: colon)...]) else { return nil }
            host = String(authority[..<colon])
            port = parsed
        }
        host = host.trimmingCharacters(in: ["[", "]"])
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port, path: path.isEmpty ? "/" : String(path))
        self.tls = tls
    }

    var defaultPort: Int { tls ? 443 : 80 }

    /// The client TLS context: ALPN for the protocol asked for, verification as configured.
    func makeTLSContext() throws -> NIOSSLContext? {
        guard tls else { return nil }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.applicationProtocols = http2 ? ["h2"] : ["http/1.1"]
        if insecure { configuration.certificateVerification = .none }
        if let caCertificatePath {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caCertificatePath))
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

/// HTTP/1.1 keep-alive load over N connections, or h2c over N connections × M streams, on one event
/// loop, scheduled by `LoadScheduler`.
public enum LoadGenerator {
    /// Runs the test; `progress` gets a line a second.
    public static func run(_ options: BenchOptions, progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> BenchResults {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { group.shutdownGracefully { _ in } }
        let loop = group.next()
        let address = try SocketAddress.makeAddressResolvingHost(options.host, port: options.port)
        let tlsContext = try options.makeTLSContext()
        let promise = loop.makePromise(of: BenchResults.self)
        loop.execute {
            let coordinator = LoadCoordinator(options: options, address: address, tlsContext: tlsContext, eventLoop: loop,
                                              done: promise, progress: progress)
            coordinator.start()
        }
        return try await promise.futureResult.get()
    }
}

/// Owns the scheduler, the connections and the results; lives on the generator's event loop.
final class LoadCoordinator {
    private let options: BenchOptions
    private let address: SocketAddress
    private let tlsContext: NIOSSLContext?
    private let eventLoop: any EventLoop
    private let done: EventLoopPromise<BenchResults>
    private let progress: @Sendable (String) -> Void
    private var dispatch: LoadDispatch<any BenchWorker>
    private var scheduler: LoadScheduler { dispatch.scheduler }
    /// The one wake-up the free workers share (`LoadDispatch`).
    private var wake: Scheduled<Void>?
    private var results = BenchResults()
    private var measureFrom: UInt64
    /// Closed loop: the window opens when the first connection is ready (as wrk's and h2load's clocks start
    /// once they have connected), so time spent starting up and connecting on a busy machine is not in it.
    private var windowOpen = false
    /// When a request was last sent or ended, or a connection opened or closed (for the backstop).
    private var lastActivity: UInt64 = NIODeadline.now().uptimeNanoseconds
    private var active = 0
    private var finished = false
    /// When the last measured request ended: a target that fell behind finishes after the schedule does.
    private var lastEnd: UInt64 = 0
    private var progressTask: Scheduled<Void>?
    let head: HTTPRequestHead
    let body: ByteBuffer?
    var streamsPerConnection: Int { options.http2 ? options.streams : 1 }

    init(options: BenchOptions, address: SocketAddress, tlsContext: NIOSSLContext?, eventLoop: any EventLoop,
         done: EventLoopPromise<BenchResults>, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.address = address
        self.tlsContext = tlsContext
        self.eventLoop = eventLoop
        self.done = done
        self.progress = progress
        let now = NIODeadline.now().uptimeNanoseconds
        self.measureFrom = now + options.warmup.unsignedNanoseconds
        self.dispatch = LoadDispatch(scheduler: LoadScheduler(rate: options.rate, start: now, duration: (options.warmup + options.duration).unsignedNanoseconds))
        var headers = HTTPHeaders([("host", options.port == options.defaultPort ? options.host : "\(options.host):\(options.port)")])
        for (name, value) in options.headers { headers.replaceOrAdd(name: name, value: value) }
        if options.bodySize > 0 { headers.replaceOrAdd(name: "content-length", value: String(options.bodySize)) }
        self.head = HTTPRequestHead(version: .http1_1, method: options.method, uri: options.path, headers: headers)
        self.body = options.bodySize > 0 ? ByteBuffer(repeating: UInt8(ascii: "x"), count: options.bodySize) : nil
    }

    func start() {
        for _ in 0..<options.connections { connect() }
        reportProgressInASecond()
        scheduleBackstop()
    }

    /// A backstop: once the schedule is over, a run in which nothing has happened (no request sent or ended,
    /// no connection opened or closed) for a request timeout and 2 s ends (seen twice under heavy load: every
    /// connection gone, no timer left, the run waiting forever). A run still making progress is never cut.
    private func scheduleBackstop() {
        // Holds the coordinator strongly: with no connection left to hold it, it must still finish the run.
        eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [self] in
            guard !self.finished else { return }
            let now = NIODeadline.now().uptimeNanoseconds
            if now > self.scheduler.end && now - self.lastActivity > self.options.timeout.unsignedNanoseconds + 2_000_000_000 {
                self.progress("nothing happened for the request timeout after the schedule ended; \(self.active) connections unaccounted for")
                self.finish()
            } else {
                self.scheduleBackstop()
            }
        }
    }

    private func reportProgressInASecond() {
        progressTask = eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { [weak self] in
            guard let self, !self.finished else { return }
            let elapsed = Double(NIODeadline.now().uptimeNanoseconds - self.scheduler.start) / 1e9
            self.progress(String(format: "%5.1f s  sent %d  completed %d  failed %d", elapsed, self.results.sent, self.results.completed, self.results.failed))
            self.reportProgressInASecond()
        }
    }

    private func connect() {
        if options.http2 {
            connectHTTP2()
            return
        }
        active += 1
        let handler = BenchConnection(coordinator: self)
        let loopBound = NIOLoopBound(handler, eventLoop: eventLoop)
        connectChannel { channel in
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            try channel.pipeline.syncOperations.addHandler(loopBound.value)
        }
            .assumeIsolated()
            .whenFailure { [self] _ in connectFailed() }
    }

    /// A TCP connection to the target, past the TLS handshake when asked for, its pipeline then set up by
    /// `configure`. A failed handshake fails the connection, so it counts as a connect error.
    private func connectChannel(_ configure: @escaping @Sendable (Channel) throws -> Void) -> EventLoopFuture<Channel> {
        let tlsContext = self.tlsContext
        // SNI carries names only, never addresses.
        let serverName = (try? SocketAddress(ipAddress: options.host, port: 0)) == nil ? options.host : nil
        let handshake = eventLoop.makePromise(of: Void.self)
        if tlsContext == nil { handshake.succeed() }
        let connected = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.nanoseconds(options.timeout.nanoseconds))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let tlsContext else { return }
                    try channel.pipeline.syncOperations.addHandlers(
                        NIOSSLClientHandler(context: tlsContext, serverHostname: serverName), TLSHandshakeGate(handshake))
                }
            }
            .connect(to: address)
        connected.whenFailure { handshake.fail($0) }
        return connected.flatMap { channel in
            handshake.futureResult
                .flatMapThrowing {
                    try configure(channel)
                    return channel
                }
                .flatMapError { error in
                    channel.close(promise: nil)
                    return channel.eventLoop.makeFailedFuture(error)
                }
        }
    }

    private func connectFailed() {
        active -= 1
        let now = NIODeadline.now().uptimeNanoseconds
        lastActivity = now
        if now >= measureFrom { results.record(.connectError, latencyMicroseconds: nil) }
        if now < scheduler.end {
            // Try again shortly; a refused port must not spin.
            eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(100)) { self.connect() }
        } else {
            finishIfIdle()
        }
    }

    private func connectHTTP2() {
        active += 1
        connectChannel { channel in
            _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
            ) { stream in stream.close() }
        }
            .flatMapThrowing { channel in
                (channel, try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer())
            }
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .failure:
                    connectFailed()
                case .success(let (channel, multiplexer)):
                    let connection = HTTP2BenchConnection(channel: channel, multiplexer: multiplexer, coordinator: self)
                    channel.closeFuture.assumeIsolated().whenComplete { _ in
                        connection.workers = []  // breaks the worker ↔ connection cycle
                        self.connectionClosed(wanted: connection.stopped)
                    }
                    connection.workers = (0..<options.streams).map { _ in HTTP2StreamWorker(connection: connection) }
                    for worker in connection.workers { connectionFree(worker) }
                }
            }
    }

    /// A connection is ready for its next request.
    func connectionFree(_ connection: any BenchWorker) {
        let now = NIODeadline.now().uptimeNanoseconds
        lastActivity = now
        if options.rate == nil && !windowOpen {
            windowOpen = true
            measureFrom = now + options.warmup.unsignedNanoseconds
            dispatch.scheduler = LoadScheduler(rate: nil, start: now, duration: (options.warmup + options.duration).unsignedNanoseconds)
        }
        perform(dispatch.workerFree(connection, now: now, usable: \.canSend))
    }

    private func perform(_ actions: [LoadDispatch<any BenchWorker>.Action]) {
        for action in actions {
            switch action {
            case .send(let worker, let intended):
                if intended >= measureFrom { results.sent += 1 }
                worker.send(intended: intended, timeout: options.timeout)
            case .stop(let worker):
                worker.stop()
            case .wake(let deadline):
                wake?.cancel()
                wake = eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(deadline)) { [weak self] in
                    guard let self else { return }
                    self.wake = nil
                    self.perform(self.dispatch.woke(now: NIODeadline.now().uptimeNanoseconds, usable: \.canSend))
                }
            }
        }
    }

    /// A request ended; `intended` is when it was meant to be sent.
    func requestEnded(_ outcome: RequestOutcome, intended: UInt64) {
        let now = NIODeadline.now().uptimeNanoseconds
        lastActivity = now
        guard intended >= measureFrom else { return }
        if options.rate == nil && now >= scheduler.end {
            // Closed loop measures a fixed window, as wrk and h2load do.
            results.unfinished += 1
            return
        }
        lastEnd = now
        results.record(outcome, latencyMicroseconds: outcome == .connectError ? nil : (now - intended) / 1000)
    }

    /// A connection closed; a replacement is opened while the test runs.
    func connectionClosed(wanted: Bool) {
        active -= 1
        lastActivity = NIODeadline.now().uptimeNanoseconds
        if !wanted && NIODeadline.now().uptimeNanoseconds < scheduler.end {
            connect()
        } else {
            finishIfIdle()
        }
    }

    private func finishIfIdle() {
        guard active == 0 else { return }
        finish()
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        progressTask?.cancel()
        wake?.cancel()
        let scheduled = Double(options.duration.unsignedNanoseconds) / 1e9
        // Open loop: a target that fell behind finishes after the schedule does, and that time counts.
        let late = options.rate != nil && lastEnd > measureFrom
        results.measuredSeconds = late ? Swift.max(scheduled, Double(lastEnd - measureFrom) / 1e9) : scheduled
        done.succeed(results)
    }
}

/// Holds a new TLS connection back until its handshake completes, then steps out of the pipeline.
final class TLSHandshakeGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let handshake: EventLoopPromise<Void>
    private var settled = false

    init(_ handshake: EventLoopPromise<Void>) {
        self.handshake = handshake
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent, !settled {
            settled = true
            handshake.succeed()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        settle(failing: error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        settle(failing: ChannelError.eof)
        context.fireChannelInactive()
    }

    private func settle(failing error: Error) {
        guard !settled else { return }
        settled = true
        handshake.fail(error)
    }
}

/// Something that carries one request at a time: an HTTP/1.1 connection, or a stream slot on an HTTP/2 one.
protocol BenchWorker: AnyObject {
    /// Whether it can still send (its connection is open and not closing).
    var canSend: Bool { get }
    func send(intended: UInt64, timeout: Duration)
    /// The test is over for this worker.
    func stop()
}

/// One keep-alive connection: sends a request, waits for its response, asks for the next.
final class BenchConnection: ChannelInboundHandler, BenchWorker {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let coordinator: LoadCoordinator
    private var context: ChannelHandlerContext?
    private var inFlight: (intended: UInt64, status: Int, timer: Scheduled<Void>)?
    private var closing = false

    init(coordinator: LoadCoordinator) {
        self.coordinator = coordinator
    }

    var canSend: Bool { context != nil && !closing }

    /// Added once the connection is up (and past TLS): ready for its first request.
    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        coordinator.connectionFree(self)
    }

    func send(intended: UInt64, timeout: Duration) {
        guard let context else { return }
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanoseconds)) { [weak self] in
            guard let self, let request = self.inFlight else { return }
            self.inFlight = nil
            self.coordinator.requestEnded(.timeout, intended: request.intended)
            self.context?.close(promise: nil)
        }
        inFlight = (intended, 0, timer)
        context.write(wrapOutboundOut(.head(coordinator.head)), promise: nil)
        if let body = coordinator.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func stop() {
        closing = true
        context?.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            inFlight?.status = Int(head.status.code)
        case .body:
            break
        case .end:
            guard let request = inFlight else { return }
            inFlight = nil
            request.timer.cancel()
            coordinator.requestEnded(.status(request.status), intended: request.intended)
            coordinator.connectionFree(self)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let request = inFlight {
            inFlight = nil
            request.timer.cancel()
            coordinator.requestEnded(.reset, intended: request.intended)
        }
        coordinator.connectionClosed(wanted: closing)
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// An h2c connection shared by `streams` workers; it closes when every worker has stopped.
final class HTTP2BenchConnection {
    let channel: Channel
    let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    let coordinator: LoadCoordinator
    /// Held here: a worker waiting for its next due time is referenced by nothing else.
    var workers: [HTTP2StreamWorker] = []
    private var stoppedWorkers = 0
    private(set) var stopped = false

    init(channel: Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer, coordinator: LoadCoordinator) {
        self.channel = channel
        self.multiplexer = multiplexer
        self.coordinator = coordinator
    }

    func workerStopped() {
        stoppedWorkers += 1
        if stoppedWorkers == coordinator.streamsPerConnection {
            stopped = true
            channel.close(promise: nil)
        }
    }
}

/// One stream slot on an h2c connection: each request is a new stream.
final class HTTP2StreamWorker: BenchWorker {
    private let connection: HTTP2BenchConnection

    init(connection: HTTP2BenchConnection) {
        self.connection = connection
    }

    var canSend: Bool { connection.channel.isActive }

    func send(intended: UInt64, timeout: Duration) {
        guard connection.channel.isActive else { return }
        let handler = BenchStream(worker: self, intended: intended)
        let loopBound = NIOLoopBound(handler, eventLoop: connection.channel.eventLoop)
        let coordinator = connection.coordinator
        let head = coordinator.head
        let body = coordinator.body
        let created = connection.channel.eventLoop.makePromise(of: Channel.self)
        connection.multiplexer.createStreamChannel(promise: created) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.pipeline.syncOperations.addHandlers([HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http), loopBound.value])
            }
        }
        created.futureResult.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let stream):
                handler.timer = stream.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(timeout.nanoseconds)) {
                    handler.fail(.timeout)
                    stream.close(promise: nil)
                }
                stream.write(HTTPClientRequestPart.head(head), promise: nil)
                if let body { stream.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil) }
                stream.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            case .failure:
                handler.fail(.reset)
            }
        }
    }

    func stop() {
        connection.workerStopped()
    }

    /// The stream's request ended; the slot is free for the next one.
    func ended(_ outcome: RequestOutcome, intended: UInt64) {
        connection.coordinator.requestEnded(outcome, intended: intended)
        if connection.channel.isActive {
            connection.coordinator.connectionFree(self)
        }
    }
}

/// Reads one response on one stream.
final class BenchStream: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let worker: HTTP2StreamWorker
    private let intended: UInt64
    private var status = 0
    private var done = false
    var timer: Scheduled<Void>?

    init(worker: HTTP2StreamWorker, intended: UInt64) {
        self.worker = worker
        self.intended = intended
    }

    func fail(_ outcome: RequestOutcome) {
        guard !done else { return }
        done = true
        timer?.cancel()
        worker.ended(outcome, intended: intended)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body: break
        case .end:
            guard !done else { return }
            done = true
            timer?.cancel()
            worker.ended(.status(status), intended: intended)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.reset)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

extension Duration {
    /// Whole nanoseconds, for the scheduler's unsigned clock; negative durations count as zero.
    var unsignedNanoseconds: UInt64 { UInt64(max(nanoseconds, 0)) }
}
