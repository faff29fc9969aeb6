import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS
import OutriggerConfig

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
