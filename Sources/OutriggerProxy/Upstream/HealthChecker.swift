import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// What one health check found.
struct HealthProbeResult {
    var passed: Bool
    /// The endpoint's answer asked to drain (`x-outrigger-drain: true`); nil when the probe cannot tell (TCP).
    var drain: Bool?
    var detail: String
}

/// Runs one endpoint's active health checks: one checker per endpoint per process, on one event loop, its
/// verdicts written to the endpoint's shared state for every loop's balancer. The decisions are
/// `HealthCheckStateMachine`'s; this class only probes and keeps time.
final class HealthChecker: @unchecked Sendable {
    // @unchecked: everything mutable below is touched on `eventLoop` only (every entry point hops there).
    let endpoint: Endpoint
    private let clusterName: String
    private let stats: ClusterStats
    private let drainTimeout: Duration
    private let eventLoop: any EventLoop
    private let logger: Logger
    private var machine: HealthCheckStateMachine
    private var random = FastRandom()
    private var next: Scheduled<Void>?
    private var stopped = false

    /// The cluster's TLS, which its probes (HTTP and gRPC) speak too.
    private let tls: UpstreamTLSConfig?
    private let tlsContexts: UpstreamTLSContexts

    init(endpoint: Endpoint, cluster: ClusterRuntime, config: HealthCheckConfig, eventLoop: any EventLoop, tlsContexts: UpstreamTLSContexts, logger: Logger) {
        self.tls = cluster.config.tls
        self.tlsContexts = tlsContexts
        self.endpoint = endpoint
        self.clusterName = cluster.name
        self.stats = cluster.stats
        self.drainTimeout = cluster.config.endpointDrainTimeout
        self.eventLoop = eventLoop
        self.logger = logger
        self.machine = HealthCheckStateMachine(config)
    }

    func start() {
        eventLoop.execute {
            self.schedule(in: self.machine.initialDelay(random: &self.random))
        }
    }

    /// Stops checking; with `forgetVerdict` the endpoint goes back to unchecked (health checks were removed).
    func stop(forgetVerdict: Bool) {
        eventLoop.execute {
            self.stopped = true
            self.next?.cancel()
            if forgetVerdict { self.endpoint.state.setHealth(.unchecked, now: NIODeadline.now().uptimeNanoseconds) }
        }
    }

    private func schedule(in nanoseconds: Int64) {
        guard !stopped else { return }
        next = eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) { self.check() }
    }

    private func check() {
        guard !stopped else { return }
        // The probe's future never fails: every failure is a failed check.
        var tlsSettings: UpstreamTLSSettings?
        if let tls, machine.config.kind != .tcp {
            // A probe speaks HTTP/1.1 (http) or HTTP/2 (grpc) whatever the cluster's requests do.
            let upstreamProtocol: ClusterConfig.UpstreamProtocol = machine.config.kind == .grpc ? .http2 : .http1
            do {
                let context = try tlsContexts.context(for: tls, upstreamProtocol: upstreamProtocol)
                tlsSettings = UpstreamTLSSettings(context: context, tls: tls, endpointHost: endpoint.configured.host, upstreamProtocol: upstreamProtocol)
            } catch {
                // Never in plaintext to a TLS upstream: the check fails, saying why.
                record(HealthProbeResult(passed: false, drain: nil, detail: "TLS: \(error)"))
                schedule(in: machine.nextDelay(random: &random))
                return
            }
        }
        HealthProbe.run(machine.config, endpoint: endpoint, on: eventLoop, tls: tlsSettings).whenSuccess { result in
            self.record(result)
            self.schedule(in: self.machine.nextDelay(random: &self.random))
        }
    }

    private func record(_ result: HealthProbeResult) {
        guard !stopped else { return }
        let state = endpoint.state
        let now = NIODeadline.now().uptimeNanoseconds
        if result.passed {
            state.healthChecksPassed.increment()
            stats.healthChecksPassed.increment()
        } else {
            state.healthChecksFailed.increment()
            stats.healthChecksFailed.increment()
        }
        switch result.drain {
        case true?:
            EndpointDrain.start(endpoint, stats: stats, timeout: drainTimeout)
        case false? where result.passed && state.drainingUntil != .max:
            // The endpoint answers again without asking to drain (a new instance): end a drain it asked for
            // (an admin drain stays until the admin ends it).
            state.undrain(now: now)
        default:
            break
        }
        guard let health = machine.record(passed: result.passed) else { return }
        let previous = state.setHealth(health, now: now)
        let metadata: Logger.Metadata = ["cluster": "\(clusterName)", "endpoint": "\(endpoint)", "check": "\(result.detail)"]
        switch health {
        case .unhealthy:
            stats.endpointsMarkedUnhealthy.increment()
            logger.warning("endpoint unhealthy; no new requests go to it", metadata: metadata)
        case .healthy where previous == .unhealthy:
            stats.endpointsMarkedHealthy.increment()
            logger.info("endpoint healthy again", metadata: metadata)
        default:
            break
        }
    }
}

/// One probe of each kind, failing (not throwing) on timeout, refusal or a wrong answer.
enum HealthProbe {
    static func run(_ config: HealthCheckConfig, endpoint: Endpoint, on eventLoop: any EventLoop,
                    tls: UpstreamTLSSettings? = nil) -> EventLoopFuture<HealthProbeResult> {
        let promise = eventLoop.makePromise(of: HealthProbeResult.self)
        let timeout = TimeAmount.nanoseconds(config.timeout.nanoseconds)
        let authority = config.host ?? endpoint.configured.description
        let channelBox = NIOLockedValueBox<Channel?>(nil)
        let deadline = eventLoop.scheduleTask(in: timeout) {
            promise.fail(HealthProbeError("no answer within \(ConfigDuration.format(config.timeout))"))
            channelBox.withLockedValue { $0 }?.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in
            deadline.cancel()
            channelBox.withLockedValue { $0 }?.close(promise: nil)
        }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [tls = tls.map { NIOLoopBound($0, eventLoop: eventLoop) }] channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // A handshake that fails closes the connection; the probe fails with why.
                        let established = channel.eventLoop.makePromise(of: Void.self)
                        established.futureResult.whenFailure { promise.fail(HealthProbeError("TLS: \($0)")) }
                        try tls.value.addHandlers(to: channel, timeout: timeout, established: established)
                    }
                    switch config.kind {
                    case .tcp:
                        break
                    case .http:
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(HTTPProbeHandler(config: config, authority: authority, promise: promise))
                    case .grpc:
                        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                            mode: .client, connectionConfiguration: .init(), streamConfiguration: .init()
                        ) { stream in stream.close() }
                    }
                }
            }
        bootstrap.connect(to: endpoint.address).whenComplete { result in
            switch result {
            case .success(let channel):
                channelBox.withLockedValue { $0 = channel }
                switch config.kind {
                case .tcp:
                    promise.succeed(HealthProbeResult(passed: true, drain: nil, detail: "connected"))
                case .grpc:
                    do {
                        let multiplexer = try channel.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer()
                        multiplexer.createStreamChannel(promise: nil) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(GRPCProbeHandler(config: config, authority: authority, promise: promise))
                            }
                        }
                    } catch {
                        promise.fail(error)
                    }
                case .http:
                    break
                }
                channel.closeFuture.whenComplete { _ in promise.fail(HealthProbeError("connection closed before an answer")) }
            case .failure(let error):
                promise.fail(error)
            }
        }
        return promise.futureResult.flatMapErrorWithEventLoop { error, loop in
            loop.makeSucceededFuture(HealthProbeResult(passed: false, drain: nil, detail: "\(error)"))
        }
    }
}

struct HealthProbeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Sends the check request on an HTTP/1.1 connection and judges the answer.
private final class HTTPProbeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let config: HealthCheckConfig
    private let authority: String
    private let promise: EventLoopPromise<HealthProbeResult>
    private var head: HTTPResponseHead?
    private var body: ByteBuffer?
    private static let maxBody = 64 * 1024

    init(config: HealthCheckConfig, authority: String, promise: EventLoopPromise<HealthProbeResult>) {
        self.config = config
        self.authority = authority
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        let headers: HTTPHeaders = ["host": authority, "user-agent": "outrigger-health-check", "connection": "close"]
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: config.method), uri: config.path, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body(var part):
            guard config.bodyContains != nil else { return }
            if body == nil { body = part } else if body!.readableBytes < Self.maxBody { body!.writeBuffer(&part) }
        case .end:
            guard let head else { return }
            let status = Int(head.status.code)
            let passed = HealthCheckVerdict.http(status: status, body: body.map { String(buffer: $0) }, config: config)
            let drain = head.headers.first(name: EndpointDrain.header)?.lowercased() == "true"
            promise.succeed(HealthProbeResult(passed: passed, drain: drain, detail: "HTTP \(status)"))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// Calls `grpc.health.v1.Health/Check` on one HTTP/2 stream and judges the answer: HTTP 200, grpc-status 0
/// and SERVING.
private final class GRPCProbeHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let config: HealthCheckConfig
    private let authority: String
    private let promise: EventLoopPromise<HealthProbeResult>
    private var httpStatus: String?
    private var grpcStatus: String?
    private var drain = false
    private var message: [UInt8] = []

    init(config: HealthCheckConfig, authority: String, promise: EventLoopPromise<HealthProbeResult>) {
        self.config = config
        self.authority = authority
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        let headers: HPACKHeaders = [
            ":method": "POST", ":scheme": "http", ":path": "/grpc.health.v1.Health/Check", ":authority": authority,
            "content-type": "application/grpc", "te": "trailers", "user-agent": "outrigger-health-check",
        ]
        context.write(wrapOutboundOut(.headers(.init(headers: headers))), promise: nil)
        let frame = context.channel.allocator.buffer(bytes: HealthCheckVerdict.grpcRequestFrame(service: config.service))
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(frame), endStream: true))), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var ended = false
        switch unwrapInboundIn(data) {
        case .headers(let headers):
            if let status = headers.headers.first(name: ":status") { httpStatus = status }
            if let status = headers.headers.first(name: "grpc-status") { grpcStatus = status }
            if headers.headers.first(name: EndpointDrain.header)?.lowercased() == "true" { drain = true }
            ended = headers.endStream
        case .data(let data):
            if case .byteBuffer(let buffer) = data.data, message.count < 64 * 1024 { message += Array(buffer.readableBytesView) }
            ended = data.endStream
        case .rstStream(let code):
            promise.fail(HealthProbeError("stream reset (\(code))"))
        default:
            break
        }
        guard ended else { return }
        let serving = HealthCheckVerdict.grpcServingStatus(frame: message)
        let passed = httpStatus == "200" && grpcStatus == "0" && serving == 1
        let detail = "HTTP \(httpStatus ?? "-"), grpc-status \(grpcStatus ?? "-"), serving status \(serving.map(String.init) ?? "-")"
        promise.succeed(HealthProbeResult(passed: passed, drain: drain, detail: detail))
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// Keeps exactly one checker per endpoint of every cluster that has health checks: started for endpoints
/// that appear, stopped for those that leave, restarted when the cluster's check settings change.
final class HealthCheckSupervisor: Sendable {
    /// A checker per endpoint, with what it was started with (a change restarts it).
    private let checkers = NIOLockedValueBox<[String: (config: HealthCheckConfig, tls: UpstreamTLSConfig?, checker: HealthChecker)]>([:])
    private let group: any EventLoopGroup
    private let tlsContexts: UpstreamTLSContexts
    private let logger: Logger

    init(group: any EventLoopGroup, tlsContexts: UpstreamTLSContexts, logger: Logger) {
        self.group = group
        self.tlsContexts = tlsContexts
        self.logger = logger
    }

    /// Brings the checkers in line with `snapshot`'s clusters and their current endpoints.
    func reconcile(_ snapshot: RuntimeSnapshot) {
        var wanted: [String: (HealthCheckConfig, Endpoint, ClusterRuntime)] = [:]
        for cluster in snapshot.clusters.values {
            guard let config = cluster.config.healthCheck else { continue }
            for endpoint in cluster.endpoints { wanted[endpoint.stateKey] = (config, endpoint, cluster) }
        }
        var started: [HealthChecker] = []
        var stopped: [(HealthChecker, forget: Bool)] = []
        checkers.withLockedValue { running in
            for (key, entry) in running where wanted[key]?.0 != entry.config || wanted[key]?.2.config.tls != entry.tls {
                // Gone (its state is forgotten with it) or checked differently now (the new checker decides).
                stopped.append((entry.checker, forget: wanted[key] == nil))
                running[key] = nil
            }
            for (key, (config, endpoint, cluster)) in wanted where running[key] == nil {
                let checker = HealthChecker(endpoint: endpoint, cluster: cluster, config: config, eventLoop: group.next(),
                                            tlsContexts: tlsContexts, logger: logger)
                running[key] = (config, cluster.config.tls, checker)
                started.append(checker)
            }
        }
        for (checker, forget) in stopped { checker.stop(forgetVerdict: forget) }
        for checker in started { checker.start() }
    }

    func stopAll() {
        let all = checkers.withLockedValue { running in
            defer { running.removeAll() }
            return running.values.map(\.checker)
        }
        for checker in all { checker.stop(forgetVerdict: false) }
    }
}
