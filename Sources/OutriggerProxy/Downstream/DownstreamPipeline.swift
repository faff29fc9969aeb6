import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// Builds the pipeline of an accepted downstream connection: TLS with ALPN, or plaintext with HTTP/2
/// prior knowledge told apart from HTTP/1.1 by the connection preface; then the HTTP/1.1 or HTTP/2
/// codecs and a `ProxyRequestHandler` per connection (HTTP/1.1), or NIO's HTTP/2 handler and an
/// `HTTP2DownstreamConnection` that gives each stream a `ProxyRequestHandler` (HTTP/2).
struct DownstreamPipeline: Sendable {
    let listenerName: String
    let configStore: ConfigStore
    let locals: EventLoopLocals
    let tls: ListenerTLS?
    let connections: ConnectionTracker

    func configure(_ channel: Channel) throws {
        let sync = channel.pipeline.syncOperations
        let listenerStats = configStore.stats.listener(listenerName)
        let snapshot = configStore.snapshot
        let listener = snapshot.listeners[listenerName]?.config
        let client = ClientResetGuard.Client(listener: listenerName, address: channel.remoteAddress)
        guard connections.admit(channel, client: client, listenerStats: listenerStats, processStats: configStore.stats,
                                listenerLimit: listener?.maxConnections, processLimit: snapshot.config.maxConnections ?? connections.defaultProcessLimit)
        else { return }
        let handshake = HandshakeTimeoutHandler(timeout: listener?.handshakeTimeout ?? ListenerConfig.defaultHandshakeTimeout, stats: listenerStats)
        try sync.addHandler(handshake)
        // Read once per connection; the protocol's pipeline is built from them once it is known.
        let settings = ConnectionSettings(
            stats: listenerStats,
            requestHeadersTimeout: listener?.requestHeadersTimeout ?? ListenerConfig.defaultRequestHeadersTimeout,
            idleTimeout: listener?.idleTimeout ?? ListenerConfig.defaultIdleTimeout,
            sendTimeout: listener?.sendTimeout ?? ListenerConfig.defaultSendTimeout,
            client: client,
            rapidReset: listener?.rapidReset ?? RapidResetConfig())
        if let tls {
            try sync.addHandler(NIOSSLServerHandler(context: tls.context))
            try sync.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    handshake.protocolChosen()
                    guard tls.admitsPeer(of: channel) else {
                        listenerStats.recordClose(.clientCertificateRejected)
                        channel.close(promise: nil)
                        return
                    }
                    switch result {
                    case .negotiated("h2"): try self.configureHTTP2(channel, scheme: "https", settings)
                    default: try self.configureHTTP1(channel, scheme: "https", settings)
                    }
                }
            })
        } else {
            try sync.addHandler(PrefaceSniffer { channel, isHTTP2 in
                handshake.protocolChosen()
                if isHTTP2 { try self.configureHTTP2(channel, scheme: "http", settings) } else { try self.configureHTTP1(channel, scheme: "http", settings) }
            })
        }
    }

    /// What a connection's protocol pipeline takes from its listener, read once at accept.
    struct ConnectionSettings {
        let stats: ListenerStats
        let requestHeadersTimeout: Duration
        let idleTimeout: Duration
        let sendTimeout: Duration
        /// Who the connection's stream resets count against, and the limits they count under.
        let client: ClientResetGuard.Client?
        let rapidReset: RapidResetConfig
    }

    func configureHTTP1(_ channel: Channel, scheme: String, _ settings: ConnectionSettings) throws {
        let sync = channel.pipeline.syncOperations
        let timeouts = DownstreamTimeoutWatcher(requestHeadersTimeout: settings.requestHeadersTimeout, idleTimeout: settings.idleTimeout,
                                                stats: settings.stats)
        // Nearest the socket: it sees raw bytes come in (its 408 is written by ProxyRequestHandler).
        try sync.addHandler(timeouts)
        try sync.addHandler(SendTimeoutHandler(timeout: settings.sendTimeout, stats: settings.stats))
        // No response encoder: ProxyRequestHandler writes bytes (`HTTP1ResponseWriter`), framed by it and by
        // LocalReply, as only they know when a response answers HEAD.
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        // Pipelined requests are ordered by ProxyRequestHandler itself: HTTPServerPipelineHandler would
        // stop reading during every request, two epoll_ctl calls each.
        let protocolErrors = HTTP1ProtocolErrorHandler(stats: configStore.stats)
        try sync.addHandler(protocolErrors)
        try sync.addHandler(ProxyRequestHandler(
            listenerName: listenerName, configStore: configStore, local: locals.state(for: channel.eventLoop),
            downstreamProtocol: .http1, scheme: scheme, timeouts: timeouts, protocolErrors: protocolErrors))
    }

    func configureHTTP2(_ channel: Channel, scheme: String, _ settings: ConnectionSettings) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration.proxyConnection
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 1024),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 64 * 1024),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
        ]
        var reportResets: HTTP2ConnectionWatcher.ResetReporter?
        if let client = settings.client, settings.rapidReset.maxResetsPerAddress > 0 {
            let limits = settings.rapidReset
            reportResets = { [resets = connections.resets] streams, reset in resets.record(client, streams: streams, resets: reset, limits: limits) }
        }
        let watcher = HTTP2ConnectionWatcher(
            requestHeadersTimeout: settings.requestHeadersTimeout, idleTimeout: settings.idleTimeout, stats: settings.stats,
            reportResets: reportResets)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(FlushCoalescer())
        try sync.addHandler(HTTP2ConnectionErrorCloser())
        try sync.addHandler(watcher)
        // The whole connection takes nothing (the client stopped reading its socket): reset.
        try sync.addHandler(SendTimeoutHandler(timeout: settings.sendTimeout, stats: settings.stats))
        try sync.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connection, streamConfiguration: .init()))
        let local = locals.state(for: channel.eventLoop)
        try sync.addHandler(HTTP2DownstreamConnection(watcher: watcher) { [listenerName, configStore] in
            ProxyRequestHandler(listenerName: listenerName, configStore: configStore, local: local, downstreamProtocol: .http2,
                                scheme: scheme, http2Connection: watcher)
        })
    }

}

/// Per-event-loop state, found by event loop. Built once at start; each value is touched only on its loop.
final class EventLoopLocals: Sendable {
    /// `@unchecked`: each state is created before its loop serves traffic and is used only on that loop
    /// afterwards (asserted in debug builds).
    private struct Owned: @unchecked Sendable {
        let state: LoopLocalState
        let eventLoop: any EventLoop
    }

    private let states: [ObjectIdentifier: Owned]

    init(group: any EventLoopGroup, accessLogs: AccessLogSinks, tlsContexts: UpstreamTLSContexts) {
        var states: [ObjectIdentifier: Owned] = [:]
        let loops = Array(group.makeIterator())
        for (index, loop) in loops.enumerated() {
            let state = LoopLocalState(eventLoop: loop, loopIndex: index, loopCount: loops.count, accessLogs: accessLogs, tlsContexts: tlsContexts)
            states[ObjectIdentifier(loop)] = Owned(state: state, eventLoop: loop)
        }
        self.states = states
    }

    func state(for loop: any EventLoop) -> LoopLocalState {
        loop.assertInEventLoop()
        return states[ObjectIdentifier(loop)]!.state
    }

    func forEach(_ body: @escaping @Sendable (LoopLocalState) -> Void) {
        for owned in states.values {
            owned.eventLoop.execute { body(owned.state) }
        }
    }

    /// Runs `body` on every loop with its state, and returns when all have.
    func forEachAndWait(_ body: @escaping @Sendable (LoopLocalState) -> Void) async {
        for owned in states.values {
            try? await owned.eventLoop.submit { body(owned.state) }.get()
        }
    }
}

/// Tells HTTP/2 prior knowledge (RFC 9113 §3.3: the client starts with the connection preface) from
/// HTTP/1.1 on a plaintext listener by the first bytes, then hands over to the chosen pipeline.
public final class PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private var buffered: ByteBuffer?
    private let configure: (Channel, _ isHTTP2: Bool) throws -> Void

    /// - Parameter configure: adds the HTTP/2 or HTTP/1.1 handlers after the sniffer, which then removes itself.
    public init(configure: @escaping (Channel, _ isHTTP2: Bool) throws -> Void) {
        self.configure = configure
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = self.buffered {
            buffered.writeBuffer(&incoming)
            self.buffered = buffered
        } else {
            self.buffered = incoming
        }
        let bytes = self.buffered!.readableBytesView
        let compared = min(bytes.count, Self.preface.count)
        let matches = bytes.prefix(compared).elementsEqual(Self.preface.prefix(compared))
        guard !matches || compared == Self.preface.count else { return }  // need more bytes to decide
        do {
            try configure(context.channel, matches)
        } catch {
            context.close(promise: nil)
            return
        }
        let data = self.buffered!
        self.buffered = nil
        context.fireChannelRead(wrapInboundOut(data))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Tells `ProxyRequestHandler` that the last pipelined request it queued is broken and will not be sent.
struct DropLastQueuedRequest {}

extension NIOHTTP2Handler.ConnectionConfiguration {
    /// NIO's defaults, but remembering the last 1,024 streams this side reset (not 32): a proxy resets many
    /// at once (a client that leaves takes all its streams' upstream streams with it), and frames the peer
    /// sent before it saw a reset must be ignored, not taken for a protocol error that ends the connection.
    static var proxyConnection: Self {
        var configuration = Self()
        configuration.maximumRecentlyResetStreams = 1024
        return configuration
    }
}

/// Tells `ProxyRequestHandler` that a request the parser rejected was answered (400 or 431), for its access log.
struct ProtocolErrorAnswered {
    let reason: LocalReplyReason
}

/// RFC 9113 §5.4.1: after sending GOAWAY for a connection error, an endpoint MUST close the connection.
/// NIO's HTTP/2 handler sends the GOAWAY; this handler, between it and the socket, follows the frames it
/// writes (header, then payload length) and closes the connection once a GOAWAY with an error is out.
final class HTTP2ConnectionErrorCloser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private var scanner = HTTP2FrameHeaderScanner()
    private var closing = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closing else {
            context.write(data, promise: promise)
            return
        }
        switch unwrapOutboundIn(data) {
        case .byteBuffer(let buffer):
            if scanForGoAwayWithError(buffer) {
                closing = true
                let written = context.eventLoop.makePromise(of: Void.self)
                written.futureResult.cascade(to: promise)
                context.writeAndFlush(data, promise: written)
                written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            }
        case .fileRegion(let region):
            scanner.skip(region.readableBytes)
        }
        context.write(data, promise: promise)
    }

    /// Walks the frame headers in `buffer`; true when one is a GOAWAY whose error code is not NO_ERROR.
    private func scanForGoAwayWithError(_ buffer: ByteBuffer) -> Bool {
        var found = false
        scanner.scan(buffer) { frame, payload in
            // NIO writes a GOAWAY's header and payload together: last stream id, then the error code.
            if frame.type == HTTP2FrameHeaderScanner.FrameHeader.goAway, let code = buffer.getInteger(at: payload + 4, as: UInt32.self), code != 0 {
                found = true
            }
        }
        return found
    }
}

/// Answers HTTP/1.1 the parser rejected: 400 (431 for oversized headers) with a reason, then closes.
/// Sits between the decoder and `ProxyRequestHandler`, counting the requests read; the responses written are
/// counted by the handler's `HTTP1ResponseWriter`, so a broken pipelined request is answered only after the
/// responses owed before it.
final class HTTP1ProtocolErrorHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// `ProxyRequestHandler`'s writer, while that handler is in the pipeline.
    var responses: HTTP1ResponseWriter?
    /// Request heads read.
    private var requestsRead = 0
    /// A request head was read and its end not yet.
    private var requestOpen = false
    private var failed = false
    private let stats: ProxyStats

    init(stats: ProxyStats) {
        self.stats = stats
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        switch unwrapInboundIn(data) {
        case .head:
            requestsRead += 1
            requestOpen = true
        case .body: break
        case .end: requestOpen = false
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTPParserError, let responses else {
            context.close(promise: nil)
            return
        }
        guard !failed else { return }
        failed = true
        let reason: LocalReplyReason = parserError == .headerOverflow ? .headersTooLarge : .badRequest
        let outstanding = requestsRead - responses.responsesEnded
        if outstanding > 1 || (!requestOpen && outstanding > 0) {
            // A later pipelined request is broken: answer the earlier ones first, then this one.
            var owed = requestsRead
            if requestOpen {
                // Its head and some body wait in the request handler's queue: they are never forwarded.
                owed -= 1
                context.fireUserInboundEventTriggered(DropLastQueuedRequest())
            }
            responses.whenResponsesEnded(owed) { [self] in writeReply(reason, context: context) }
            return
        }
        // The broken bytes belong to the request being read: the request handler lets go of it.
        context.fireErrorCaught(error)
        if responses.responseStarted {
            context.close(promise: nil)
        } else {
            writeReply(reason, context: context)
        }
    }

    private func writeReply(_ reason: LocalReplyReason, context: ChannelHandlerContext) {
        guard let responses else { return }
        stats.recordLocalReply(reason)
        context.fireUserInboundEventTriggered(ProtocolErrorAnswered(reason: reason))
        LocalReply.write(reason, version: .http1_1, isGRPC: false, isHEAD: false, closeConnection: true, to: .http1(responses), eventLoop: context.eventLoop)
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Flushes a connection at most once per event-loop tick. An HTTP/2 connection's streams are answered by
/// different upstream connections, each of whose read events would flush the whole connection — one
/// `write` system call per response. Deferred to the tick's task phase (after every ready socket has been
/// read), the responses that came in together leave in one write.
public final class FlushCoalescer: ChannelOutboundHandler {
    public typealias OutboundIn = NIOAny
    public typealias OutboundOut = NIOAny

    private var flushPending = false

    public init() {}

    public func flush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        context.eventLoop.assumeIsolated().execute {
            self.flushNow(context: context)
        }
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // What was written before a close goes out first (a GOAWAY, the last responses), flush asked for or not
        // yet: a close can come from inside NIO's HTTP/2 handler, between its writes and its flush.
        flushPending = false
        context.flush()
        context.close(mode: mode, promise: promise)
    }

    private func flushNow(context: ChannelHandlerContext) {
        guard flushPending else { return }
        flushPending = false
        context.flush()
    }
}
