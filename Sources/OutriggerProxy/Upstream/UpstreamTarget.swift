import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

extension AdaptiveRecvByteBufferAllocator {
    /// NIO's adaptive sizing, up to 32 KiB a read (not 64 KiB): every connection keeps its grown buffers.
    static let bounded = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 32 * 1024)
}

/// Where and how a pool connects: one endpoint, on one event loop, with its cluster's settings.
struct UpstreamTarget {
    let key: String
    let eventLoop: any EventLoop
    let address: SocketAddress
    let connectTimeout: Duration
    let idleTimeout: TimeAmount
    let stats: ClusterStats
    /// The cluster-wide limits every pool of the cluster counts against.
    let limits: ClusterLimits
    /// TLS to the endpoint, when the cluster has `tls`.
    let tls: (config: UpstreamTLSConfig, contexts: UpstreamTLSContexts)?
    let upstreamProtocol: ClusterConfig.UpstreamProtocol
    let endpointHost: String
    /// The cluster's connection slots and counts, which every pool of the cluster shares.
    var connections: ClusterConnections { ClusterConnections(stats: stats, limit: limits.maxConnections) }

    init(eventLoop: any EventLoop, endpoint: Endpoint, cluster: ClusterConfig, stats: ClusterStats, tlsContexts: UpstreamTLSContexts) {
        self.key = endpoint.poolKey
        self.eventLoop = eventLoop
        self.address = endpoint.address
        self.connectTimeout = cluster.connectTimeout
        self.idleTimeout = .nanoseconds(cluster.pool.idleTimeout.nanoseconds)
        self.stats = stats
        self.limits = cluster.limits
        self.tls = cluster.tls.map { ($0, tlsContexts) }
        self.upstreamProtocol = cluster.upstreamProtocol
        self.endpointHost = endpoint.configured.host
    }

    /// Opens a TCP connection to the endpoint (and, for a TLS cluster, completes and checks the handshake,
    /// within the same connect timeout) and lets `configure` set up its pipeline.
    func connect(configure: @escaping @Sendable (Channel) throws -> Void) -> EventLoopFuture<Channel> {
        let timeout = TimeAmount.nanoseconds(connectTimeout.nanoseconds)
        var settings: UpstreamTLSSettings?
        if let tls {
            do {
                let context = try tls.contexts.context(for: tls.config, upstreamProtocol: upstreamProtocol)
                settings = UpstreamTLSSettings(context: context, tls: tls.config, endpointHost: endpointHost, upstreamProtocol: upstreamProtocol)
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        let established = settings == nil ? nil : eventLoop.makePromise(of: Void.self)
        let tlsSettings = settings.map { NIOLoopBound($0, eventLoop: eventLoop) }
        let connecting = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // What a response body may pin while its client reads slowly: the reads of one burst are written
            // downstream before reading stops, and a channel keeps one receive buffer per read of a burst for
            // its life (NIO's defaults, 4 × up to 64 KiB, held 262 KiB per slow client).
            .channelOption(.maxMessagesPerRead, value: 2)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator.bounded)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsSettings, let established { try tlsSettings.value.addHandlers(to: channel, timeout: timeout, established: established) }
                    try configure(channel)
                }
            }
            .connect(to: address)
        guard let established else { return connecting }
        connecting.whenFailure { established.fail($0) }
        return connecting.flatMap { channel in
            established.futureResult.map { channel }
        }
    }
}
