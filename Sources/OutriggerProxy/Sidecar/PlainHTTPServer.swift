import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerCore

/// A small HTTP/1.1 server for admin pages: each request's head is answered by `respond` with a status, a
/// content type and a body (bodies of requests are ignored). Used by the sidecar's and the control plane's admin.
/// Under the same defences as a listener: at most `maxConnections` open (more are closed at once), a request
/// head within 10 s of its first byte (→ 408), an idle connection closed after a minute, and accepting paused
/// while the process is out of file descriptors.
public enum PlainHTTPServer {
    public typealias Respond = @Sendable (HTTPRequestHead) -> (HTTPResponseStatus, String, String)

    public static let maxConnections = 64
    public static let requestHeadersTimeout: Duration = .seconds(10)
    public static let idleTimeout: Duration = .seconds(60)

    public static func bind(to address: SocketAddress, group: any EventLoopGroup, respond: @escaping Respond) async throws -> Channel {
        let open = Gauge()
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer(AcceptPause.install)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard open.increment(below: maxConnections) else {
                        channel.close(promise: nil)
                        return
                    }
                    channel.closeFuture.whenComplete { _ in open.decrement() }
                    let timeouts = DownstreamTimeoutWatcher(requestHeadersTimeout: requestHeadersTimeout, idleTimeout: idleTimeout)
                    try channel.pipeline.syncOperations.addHandler(timeouts)
                    // Each request is answered as its end is read, so pipelined ones stay in order without NIO's
                    // pipelining handler (which would also refuse the 408 written with no request in flight).
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(PlainHTTPHandler(respond: respond, timeouts: timeouts))
                }
            }
            .bind(to: address)
            .get()
    }

    /// The path of a request target, without its query.
    public static func path(of uri: String) -> String { String(ProxyHeaders.path(of: uri)) }

    /// Pretty JSON with sorted keys, and a final newline.
    public static func json(_ object: Any) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]) else { return "{}" }
        return (String(data: data, encoding: .utf8) ?? "{}") + "\n"
    }
}

private final class PlainHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: PlainHTTPServer.Respond
    private let timeouts: DownstreamTimeoutWatcher
    private var head: HTTPRequestHead?

    init(respond: @escaping PlainHTTPServer.Respond, timeouts: DownstreamTimeoutWatcher) {
        self.respond = respond
        self.timeouts = timeouts
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is RequestHeadersTimedOut else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: "0")
        headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .requestTimeout, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            timeouts.headReceived()
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, contentType, body) = respond(head)
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: contentType)
            headers.add(name: "content-length", value: String(body.utf8.count))
            headers.add(name: "cache-control", value: "no-store")
            if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            if head.method != .HEAD {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            }
            let keepAlive = head.isKeepAlive
            timeouts.responseEnded()
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                if !keepAlive { context.close(promise: nil) }
            }
        }
    }
}
