/// Why the proxy closed (or refused) a downstream connection on its own; a label of
/// `outrigger_downstream_connections_closed_total`.
public enum DownstreamConnectionCloseReason: String, CaseIterable, Sendable {
    /// Accepted while the listener had `maxConnections` open: closed at once.
    case listenerLimit = "listener_limit"
    /// Accepted while the process had its `maxConnections` open on all listeners: closed at once.
    case processLimit = "process_limit"
    /// No TLS handshake, or not enough bytes to tell HTTP/1.1 from HTTP/2, within `handshakeTimeout`.
    case handshakeTimeout = "handshake_timeout"
    /// Nothing in flight for `idleTimeout`.
    case idleTimeout = "idle_timeout"
    /// An HTTP/1.1 request head, or an HTTP/2 header block, unfinished after `requestHeadersTimeout`.
    case requestHeadersTimeout = "request_headers_timeout"
    /// An HTTP/2 client address that reset too many streams (`rapidReset`): its connections get a GOAWAY, and
    /// new ones are closed at accept while it is refused.
    case rapidReset = "rapid_reset"
    /// mTLS: the client's certificate (from the listener's CAs) carries none of `clientCertificates.subjectAltNames`.
    case clientCertificateRejected = "client_certificate_rejected"
    /// The client took no response bytes for `sendTimeout`: reset (HTTP/2: the stream is reset, and counted here).
    case sendTimeout = "send_timeout"
}
