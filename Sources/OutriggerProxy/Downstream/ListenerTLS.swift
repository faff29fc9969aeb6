import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import OutriggerConfig

/// A TLS listener's context. Each new connection takes the current one; when the certificate, key or client
/// CA file changes in place (a rotation that keeps the paths), `refreshIfFilesChanged` builds a new context and
/// later connections use it. Files that do not load keep the last good context.
final class ListenerTLS: Sendable {
    let config: TLSConfig
    private let state: NIOLockedValueBox<(context: NIOSSLContext, stamps: [FileStamp?])>

    init(_ config: TLSConfig) throws {
        self.config = config
        let stamps = Self.stamps(config)
        state = NIOLockedValueBox((try Self.makeContext(config), stamps))
    }

    var context: NIOSSLContext { state.withLockedValue { $0.context } }

    /// Reloads the certificate and key when either file changed since the last look. Returns nil when
    /// nothing changed, else whether the new files took effect (with the error when they did not).
    func refreshIfFilesChanged() -> Result<Void, Error>? {
        let now = Self.stamps(config)
        let changed = state.withLockedValue { state -> Bool in
            guard state.stamps != now else { return false }
            state.stamps = now
            return true
        }
        guard changed else { return nil }
        do {
            let context = try Self.makeContext(config)
            state.withLockedValue { $0.context = context }
            return .success(())
        } catch {
            return .failure(error)
        }
    }

    /// A server context: the certificate chain and key, ALPN h2 and http/1.1, at least `minVersion`, and only
    /// the configured TLS 1.2 suites (TLS 1.3's are all AEAD).
    static func makeContext(_ tls: TLSConfig) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(tls.certificate)
        let key = try NIOSSLPrivateKey(file: tls.privateKey, format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.applicationProtocols = ["h2", "http/1.1"]
        configuration.minimumTLSVersion = tls.minVersion == .tls13 ? .tlsv13 : .tlsv12
        configuration.cipherSuites = tls.cipherSuites.joined(separator: ":")
        if let clients = tls.clientCertificates {
            // A client must present a certificate from these CAs (the handshake fails otherwise); which
            // names it must carry is checked once the handshake is done (`admitsPeer`).
            configuration.trustRoots = .certificates(try NIOSSLCertificate.nonEmpty(fromPEMFile: clients.caFile))
            configuration.certificateVerification = .noHostnameVerification
        }
        return try NIOSSLContext(configuration: configuration)
    }

    /// Whether a connection whose handshake just completed may go on: without required client names, yes;
    /// with them, when the client's certificate carries one.
    func admitsPeer(of channel: Channel) -> Bool {
        guard let allowed = config.clientCertificates?.subjectAltNames, !allowed.isEmpty else { return true }
        guard let certificate = try? channel.pipeline.syncOperations.nioSSL_peerCertificate() else { return false }
        return PeerIdentity.carriesOne(of: allowed, certificate)
    }

    private static func stamps(_ tls: TLSConfig) -> [FileStamp?] {
        [FileStamp(path: tls.certificate), FileStamp(path: tls.privateKey), tls.clientCertificates.flatMap { FileStamp(path: $0.caFile) }]
    }
}
