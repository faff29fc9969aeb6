import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerConfig

/// POSTs span batches to the collector over one kept-alive HTTP/1.1 connection, one request at a time (the
/// exporter waits for each answer). Touched only on the exporter's thread. A failed, timed-out or closed
/// connection is opened again for the next request.
final class SpanPoster: @unchecked Sendable {
    // @unchecked: everything mutable below is touched on `eventLoop` only (the exporter's one thread).
    let eventLoop: any EventLoop
    private var connection: (channel: any Channel, address: HostPort)?
    /// The request in flight's answer and its deadline: completed once, by the response, the end of the connection
    /// it went out on, or the deadline, whichever comes first.
    private var answering: EventLoopPromise<Int>?
    private var sentOn: (any Channel)?
    private var deadline: Scheduled<Void>?
    /// The last request's body, kept to be written over by the next (by then the connection let go of it).
    private var lastBody: ByteBuffer?

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// A buffer for the next body: the last one's storage, already grown to a batch's size.
    func reusableBody() -> ByteBuffer {
        defer { lastBody = nil }
        return lastBody ?? ByteBufferAllocator().buffer(capacity: 0)
    }

    /// Resolves to the collector's response status; 0 when no answer came (connection failed or closed, timeout).
    func post(_ body: ByteBuffer, contentType: String, to address: HostPort, path: String, timeout: Duration) -> EventLoopFuture<Int> {
        let promise = eventLoop.makePromise(of: Int.self)
        answering = promise
        lastBody = body
        deadline = eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) { [self] in
            // The connection goes first: the next batch, sent from the answer's callback, must not go out on it.
            close()
            finish(0)
        }
        connected(to: address, timeout: timeout).whenComplete { [self] result in
            guard answering?.futureResult === promise.futureResult else { return }  // the deadline came first
            guard case .success(let channel) = result else { return finish(0) }
            sentOn = channel
            var headers = HTTPHeaders()
            headers.add(name: "host", value: address.description)
            headers.add(name: "content-type", value: contentType)
            headers.add(name: "content-length", value: String(body.readableBytes))
            headers.add(name: "user-agent", value: "outrigger")
            channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)), promise: nil)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        return promise.futureResult
    }

    func close() {
        connection?.channel.close(promise: nil)
        connection = nil
    }

    /// The request in flight is answered with `status` (0: no answer); nothing when none is in flight. From a
    /// connection (`channel`), an answer counts only for the request sent on it, and a connection that cannot carry
    /// another request is let go first — so the next batch, sent from the promise's callback, opens a new one.
    private func finish(_ status: Int, from channel: (any Channel)? = nil, reusable: Bool = true) {
        if let channel, !reusable, connection?.channel === channel { connection = nil }
        if let channel, channel !== sentOn { return }
        guard let promise = answering else { return }
        answering = nil
        sentOn = nil
        deadline?.cancel()
        deadline = nil
        promise.succeed(status)
    }

    private func connected(to address: HostPort, timeout: Duration) -> EventLoopFuture<any Channel> {
        if let connection, connection.address == address, connection.channel.isActive {
            return eventLoop.makeSucceededFuture(connection.channel)
        }
        close()
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(timeout.nanoseconds))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(SpanResponseHandler { status, reusable in
                        self.finish(status, from: channel, reusable: reusable)
                    })
                }
            }
            .connect(host: address.host, port: address.port)
            .map { [self] channel in
                connection = (channel, address)
                return channel
            }
    }
}

/// Tells the poster the response status once the response has ended (its body is not needed), and whether the
/// connection can carry another request; or 0, once, when the connection fails or ends first. A response asking to
/// close the connection closes it.
private final class SpanResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let answered: (_ status: Int, _ reusable: Bool) -> Void
    private var status = 0
    private var closeAfter = false
    /// The connection said its last: nothing more is reported.
    private var done = false

    init(answered: @escaping (_ status: Int, _ reusable: Bool) -> Void) {
        self.answered = answered
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            closeAfter = !head.isKeepAlive
        case .body:
            break
        case .end:
            guard !done else { return }
            done = closeAfter
            answered(status, !closeAfter)
            if closeAfter { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            answered(0, false)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            answered(0, false)
        }
        context.close(promise: nil)
    }
}
