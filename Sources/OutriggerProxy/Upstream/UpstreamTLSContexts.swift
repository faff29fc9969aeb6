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
