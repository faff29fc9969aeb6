import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// Builds the pipeline of an accepted downstream connection: TLS with ALPN, or plaintext with HTTP/2
/// prior knowledge told apart from HTTP/1.1 by the connection preface; then the HTTP/1.1 or HTTP/2
/// `HTTP1DownstreamConnection` and its `ProxyRequestHandler` (HTTP/1.1), or our `HTTP2Codec` and an
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
        // No codec: the connection handler parses requests (`HTTP1RequestParser`) and the exchange writes responses
        // as bytes (`HTTP1ResponseWriter`), framed by it and by LocalReply, as only they know when a response answers
        // HEAD. Pipelined requests are ordered by the exchange itself: HTTPServerPipelineHandler would stop reading
        // during every request, two epoll_ctl calls each.
        let local = locals.state(for: channel.eventLoop)
        let exchange = ProxyRequestHandler(
            listener: ListenerLookup(name: listenerName, configStore: configStore, local: local), configStore: configStore, local: local,
            downstreamProtocol: .http1, scheme: scheme)
        try sync.addHandler(HTTP1DownstreamConnection(exchange: exchange, stats: configStore.stats, listenerStats: settings.stats,
                                                      requestHeadersTimeout: settings.requestHeadersTimeout, idleTimeout: settings.idleTimeout,
                                                      sendTimeout: settings.sendTimeout))
    }

    func configureHTTP2(_ channel: Channel, scheme: String, _ settings: ConnectionSettings) throws {
        var reportResets: HTTP2ConnectionWatcher.ResetReporter?
        if let client = settings.client, settings.rapidReset.maxResetsPerAddress > 0 {
            let limits = settings.rapidReset
            reportResets = { [resets = connections.resets] streams, reset in resets.record(client, streams: streams, resets: reset, limits: limits) }
        }
        let watcher = HTTP2ConnectionWatcher(
            requestHeadersTimeout: settings.requestHeadersTimeout, idleTimeout: settings.idleTimeout, stats: settings.stats,
            reportResets: reportResets)
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(watcher)
        // The whole connection takes nothing (the client stopped reading its socket): reset.
        try sync.addHandler(SendTimeoutHandler(timeout: settings.sendTimeout, stats: settings.stats))
        try sync.addHandler(HTTP2Codec(.server, limits: .downstream, allocator: channel.allocator))
        let local = locals.state(for: channel.eventLoop)
        let listener = ListenerLookup(name: listenerName, configStore: configStore, local: local)
        try sync.addHandler(HTTP2DownstreamConnection(watcher: watcher) { [configStore] in
            ProxyRequestHandler(listener: listener, configStore: configStore, local: local, downstreamProtocol: .http2,
                                scheme: scheme, http2Connection: watcher)
        })
    }

}

extension HTTP2Streams.Limits {
    /// What a downstream connection advertises: 1,024 streams at once, a 1 MiB window per stream, header blocks up to
    /// 64 KiB; and the last 1,024 streams reset are remembered: a proxy resets many at once (a client that leaves
    /// takes all its streams' upstream streams with it), and frames the peer sent before it saw a reset are ignored,
    /// not taken for a protocol error that ends the connection.
    static let downstream = Self(maxConcurrentStreams: 1024, initialWindow: 1 << 20, maxHeaderBlock: 64 * 1024, recentlyResetMemory: 1024)
}
