import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

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
