import Foundation
import Logging
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// Opening the sidecar's listening sockets: its listeners and its admin.
extension Sidecar {
    func bindListeners(for config: SidecarConfig) async throws {
        for listener in config.listeners {
            // At start the command line announces each listener with its address: logged once, not twice.
            let bound = try await bind(listener, logLevel: .debug)
            state.withLockedValue { $0.listeners[listener.name] = bound }
        }
    }

    func bind(_ listener: ListenerConfig, logLevel: Logger.Level = .info) async throws -> BoundListener {
        let tls = try listener.tls.map(ListenerTLS.init)
        let pipeline = DownstreamPipeline(
            listenerName: listener.name, configStore: configStore, locals: locals,
            tls: tls, connections: connections
        )
        let channel: Channel
        do {
            channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer(AcceptPause.install)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A connection keeps one receive buffer per read of a burst for its life (see UpstreamTarget).
            .childChannelOption(.maxMessagesPerRead, value: 4)
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator.bounded)
            // Unwritable (upstream reading paused) past 32 KiB waiting, not NIO's 64 KiB: what a slow reader pins.
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 16 * 1024, high: 32 * 1024))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try pipeline.configure(channel) }
            }
            .bind(host: listener.address.host, port: listener.address.port)
            .get()
        } catch {
            throw BindError(what: "listener '\(listener.name)'", address: listener.address, underlying: error)
        }
        logger.log(level: logLevel, "listening", metadata: ["listener": "\(listener.name)", "address": "\(listener.address.host):\(channel.localAddress?.port ?? listener.address.port)",
                                                           "tls": "\(listener.tls != nil)"])
        return BoundListener(config: listener, channel: channel, tls: tls)
    }

    func bindAdmin(_ admin: AdminConfig?, logLevel: Logger.Level = .info) async throws {
        guard let admin else { return }
        var token: String?
        if let file = admin.tokenFile {
            token = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if !admin.isLoopback {
            let changes = token == nil ? "changes (POST /endpoints/drain) are refused until admin.tokenFile is set" : "changes need its token"
            logger.warning("the admin listens on \(admin.address), beyond loopback: anyone who can connect reads /config_dump and /stats; \(changes)")
        }
        let server = AdminServer(sidecar: SidecarState(configStore: configStore, accessLogs: accessLogs, spans: spans, isDraining: { [weak self] in self?.isDraining ?? true },
                                                       extensions: { [weak self] in self?.adminExtension.withLockedValue { $0?() } ?? nil },
                                                       mutationGuard: AdminMutationGuard(token: token, loopback: admin.isLoopback)))
        let channel: Channel
        do {
            let address = try SocketAddress.makeAddressResolvingHost(admin.address.host, port: admin.address.port)
            channel = try await server.bind(to: address, group: group)
        } catch {
            throw BindError(what: "the admin", address: admin.address, underlying: error)
        }
        state.withLockedValue { $0.admin = (admin, channel) }
        logger.log(level: logLevel, "admin listening", metadata: ["address": "\(admin.address.host):\(channel.localAddress?.port ?? admin.address.port)"])
    }
}
