import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import OutriggerConfig

/// The client TLS contexts of the clusters that speak TLS to their endpoints: one per distinct settings and
/// protocol, built when a config is loaded (so a CA, certificate or key that does not load refuses the
/// config, naming the cluster) and rebuilt when one of its files changes in place (a rotation that keeps the
/// paths); a rotation that does not load keeps the last good context.
final class UpstreamTLSContexts: Sendable {
    struct Key: Hashable, Sendable {
        let tls: UpstreamTLSConfig
        let upstreamProtocol: ClusterConfig.UpstreamProtocol
    }

    private struct Entry {
        var context: NIOSSLContext
        var stamps: [FileStamp?]
    }

    private let entries = NIOLockedValueBox<[Key: Entry]>([:])

    /// Builds what `clusters` need and is not built yet, and forgets what no cluster of theirs uses.
    func prepare(_ clusters: [ClusterConfig]) throws {
        let used = Set(clusters.compactMap { cluster in cluster.tls.map { Key(tls: $0, upstreamProtocol: cluster.upstreamProtocol) } })
        entries.withLockedValue { entries in entries = entries.filter { used.contains($0.key) } }
        for cluster in clusters {
            guard let tls = cluster.tls else { continue }
            let key = Key(tls: tls, upstreamProtocol: cluster.upstreamProtocol)
            do {
                _ = try context(for: tls, upstreamProtocol: key.upstreamProtocol)
            } catch {
                throw UpstreamTLSError(cluster: cluster.name, underlying: error)
            }
        }
    }

    /// The context for a cluster's settings (prepared with its config; built now if not).
    func context(for tls: UpstreamTLSConfig, upstreamProtocol: ClusterConfig.UpstreamProtocol) throws -> NIOSSLContext {
        let key = Key(tls: tls, upstreamProtocol: upstreamProtocol)
        if let entry = entries.withLockedValue({ $0[key] }) { return entry.context }
        let entry = Entry(context: try Self.makeContext(key), stamps: Self.stamps(tls))
        entries.withLockedValue { $0[key] = entry }
        return entry.context
    }

    /// Rebuilds every context whose files changed since the last look; the settings whose new files did not
    /// load, with why (they keep their last good context).
    func refreshIfFilesChanged() -> [(UpstreamTLSConfig, Error)] {
        let changed = entries.withLockedValue { entries in
            entries.compactMap { key, entry -> (Key, [FileStamp?])? in
                let now = Self.stamps(key.tls)
                return now == entry.stamps ? nil : (key, now)
            }
        }
        var failures: [(UpstreamTLSConfig, Error)] = []
        for (key, stamps) in changed {
            do {
                let context = try Self.makeContext(key)
                entries.withLockedValue { $0[key] = Entry(context: context, stamps: stamps) }
            } catch {
                entries.withLockedValue { $0[key]?.stamps = stamps }
                failures.append((key.tls, error))
            }
        }
        return failures
    }

    /// A client context: ALPN offering the cluster's protocol, at least `minVersion`, the listener's default
    /// TLS 1.2 suites, the CA bundle as the only roots when given, the client certificate when given.
    static func makeContext(_ key: Key) throws -> NIOSSLContext {
        let tls = key.tls
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.applicationProtocols = [key.upstreamProtocol == .http2 ? "h2" : "http/1.1"]
        configuration.minimumTLSVersion = tls.minVersion == .tls13 ? .tlsv13 : .tlsv12
        configuration.cipherSuites = TLSConfig.defaultCipherSuites.joined(separator: ":")
        if let caFile = tls.caFile {
            configuration.trustRoots = .certificates(try NIOSSLCertificate.nonEmpty(fromPEMFile: caFile))
        }
        if tls.insecureSkipVerify {
            configuration.certificateVerification = .none
        } else if !tls.subjectAltNames.isEmpty {
            // The identity is the SAN checked after the handshake (`UpstreamTLSHandshake`), not the host name.
            configuration.certificateVerification = .noHostnameVerification
        }
        if let certificate = tls.certificate, let key = tls.privateKey {
            configuration.certificateChain = try NIOSSLCertificate.nonEmpty(fromPEMFile: certificate).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        }
        return try NIOSSLContext(configuration: configuration)
    }

    private static func stamps(_ tls: UpstreamTLSConfig) -> [FileStamp?] {
        [tls.caFile, tls.certificate, tls.privateKey].map { $0.flatMap(FileStamp.init(path:)) }
    }
}

struct UpstreamTLSError: Error, CustomStringConvertible {
    let cluster: String
    let underlying: Error
    var description: String { "cluster '\(cluster)': its tls files do not load: \(underlying)" }
}

extension NIOSSLCertificate {
    /// The certificates of a PEM file, which must hold at least one (an empty file is an error, not no CA).
    static func nonEmpty(fromPEMFile file: String) throws -> [NIOSSLCertificate] {
        let certificates = try fromPEMFile(file)
        guard !certificates.isEmpty else { throw PEMFileError(file: file) }
        return certificates
    }
}

struct PEMFileError: Error, CustomStringConvertible {
    let file: String
    var description: String { "'\(file)' holds no PEM certificate" }
}

/// What an upstream connection's TLS must establish before it is used: the handshake done within the
/// connect timeout, the cluster's protocol (when ALPN chose one) and, when the cluster names them, one of the
/// subject alternative names on the upstream's certificate.
struct UpstreamTLSSettings {
    let context: NIOSSLContext
    /// SNI (and the name verified, without `subjectAltNames`); nil for an IP address.
    let serverName: String?
    let subjectAltNames: [String]
    let upstreamProtocol: ClusterConfig.UpstreamProtocol

    init(context: NIOSSLContext, tls: UpstreamTLSConfig, endpointHost: String, upstreamProtocol: ClusterConfig.UpstreamProtocol) {
        self.context = context
        let name = tls.sni ?? endpointHost
        self.serverName = name.isIPAddress ? nil : name
        self.subjectAltNames = tls.subjectAltNames
        self.upstreamProtocol = upstreamProtocol
    }

    /// Adds the TLS handler and the handshake watcher; `established` completes when the connection may be used.
    func addHandlers(to channel: Channel, timeout: TimeAmount, established: EventLoopPromise<Void>) throws {
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverName))
        try channel.pipeline.syncOperations.addHandler(UpstreamTLSHandshake(settings: self, timeout: timeout, promise: established))
    }
}

/// Watches an upstream connection's TLS handshake, then takes itself out: fails the connection (closed) when
/// the handshake fails or takes longer than the connect timeout, when ALPN chose another protocol than the
/// cluster's, or when the certificate carries none of the required subject alternative names.
final class UpstreamTLSHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let settings: UpstreamTLSSettings
    private let timeout: TimeAmount
    private var promise: EventLoopPromise<Void>?
    private var timer: Scheduled<Void>?

    init(settings: UpstreamTLSSettings, timeout: TimeAmount, promise: EventLoopPromise<Void>) {
        self.settings = settings
        self.timeout = timeout
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            self?.fail(UpstreamTLSFailure("no TLS handshake within the connect timeout"), context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        promise?.fail(UpstreamTLSFailure("connection closed during the TLS handshake"))
        promise = nil
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case TLSUserEvent.handshakeCompleted(let negotiated) = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let expected = settings.upstreamProtocol == .http2 ? "h2" : "http/1.1"
        if let negotiated, negotiated != expected {
            fail(UpstreamTLSFailure("the upstream chose \(negotiated) by ALPN; the cluster speaks \(expected)"), context: context)
            return
        }
        if !settings.subjectAltNames.isEmpty {
            let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate()
            guard let certificate, PeerIdentity.carriesOne(of: settings.subjectAltNames, certificate) else {
                fail(UpstreamTLSFailure("the upstream's certificate carries none of \(settings.subjectAltNames)"), context: context)
                return
            }
        }
        timer?.cancel()
        let promise = self.promise
        self.promise = nil
        context.fireUserInboundEventTriggered(event)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        promise?.succeed(())
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if promise != nil {
            fail(error, context: context)
        } else {
            context.fireErrorCaught(error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(UpstreamTLSFailure("connection closed during the TLS handshake"), context: context)
        context.fireChannelInactive()
    }

    private func fail(_ error: Error, context: ChannelHandlerContext) {
        guard let promise else { return }
        self.promise = nil
        timer?.cancel()
        promise.fail(error)
        context.close(promise: nil)
    }
}

struct UpstreamTLSFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Who a peer's certificate says it is: its subject alternative names (URIs such as SPIFFE ids, and DNS names).
enum PeerIdentity {
    static func names(of certificate: NIOSSLCertificate) -> [String] {
        certificate._subjectAlternativeNames().compactMap { name in
            guard name.nameType == .uri || name.nameType == .dnsName else { return nil }
            return String(decoding: name.contents, as: UTF8.self)
        }
    }

    /// Whether the certificate carries one of `allowed` (compared exactly; DNS names without case).
    static func carriesOne(of allowed: [String], _ certificate: NIOSSLCertificate) -> Bool {
        let names = Self.names(of: certificate)
        return allowed.contains { wanted in names.contains { $0 == wanted || $0.lowercased() == wanted.lowercased() && !wanted.contains("://") } }
    }
}

extension String {
    /// An IPv4 or IPv6 address literal (which TLS cannot send as SNI).
    var isIPAddress: Bool {
        (try? SocketAddress(ipAddress: self, port: 0)) != nil
    }
}
