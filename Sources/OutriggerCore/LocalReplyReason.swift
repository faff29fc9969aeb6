import NIOHTTP1

/// Why the proxy answered a request itself instead of relaying an upstream response.
///
/// The raw value is the short code sent in `x-outrigger-reason`, written to the access log and used as
/// the `reason` label in stats; README.md lists them all.
public enum LocalReplyReason: String, CaseIterable, Sendable {
    case noRoute = "no_route"
    case noHealthyUpstream = "no_healthy_upstream"
    case overflow
    case connectFailure = "connect_failure"
    case upstreamReset = "upstream_reset"
    case upstreamTimeout = "upstream_timeout"
    case upstreamProtocolError = "upstream_protocol_error"
    case badRequest = "bad_request"
    /// No Host on HTTP/1.1, several, a malformed one, or (HTTP/2) a `host` that disagrees with `:authority`.
    case invalidHost = "invalid_host"
    case headersTooLarge = "headers_too_large"
    case bodyTooLarge = "body_too_large"
    case requestTimeout = "request_timeout"
    case draining
    /// Every endpoint the balancer offered has its circuit breaker open (or half-open with its probes out).
    case breakerOpen = "breaker_open"
    /// The route's fallback answered (its cluster had no endpoint); also marks responses of a fallback cluster.
    case fallback
    /// The overload manager sheds new requests on this listener.
    case overload

    public var status: HTTPResponseStatus {
        switch self {
        case .noRoute: return .notFound
        case .noHealthyUpstream, .overflow, .connectFailure, .draining, .fallback, .breakerOpen, .overload: return .serviceUnavailable
        case .upstreamReset, .upstreamProtocolError: return .badGateway
        case .upstreamTimeout: return .gatewayTimeout
        case .badRequest, .invalidHost: return .badRequest
        case .headersTooLarge: return .requestHeaderFieldsTooLarge
        case .bodyTooLarge: return .payloadTooLarge
        case .requestTimeout: return .requestTimeout
        }
    }

    /// The gRPC status a gRPC client gets instead of an HTTP error it would report as UNKNOWN.
    public var grpcStatus: Int {
        switch self {
        case .noRoute: return 12  // UNIMPLEMENTED
        case .upstreamTimeout, .requestTimeout: return 4  // DEADLINE_EXCEEDED
        case .overflow: return 8  // RESOURCE_EXHAUSTED
        case .badRequest, .invalidHost, .headersTooLarge, .bodyTooLarge: return 13  // INTERNAL
        case .noHealthyUpstream, .connectFailure, .upstreamReset, .upstreamProtocolError, .draining, .fallback, .breakerOpen, .overload:
            return 14  // UNAVAILABLE
        }
    }

    /// One line a person can read, sent as the body of the local reply.
    public var explanation: String {
        switch self {
        case .noRoute: return "no route matches this request"
        case .noHealthyUpstream: return "the cluster has no endpoint to send this request to"
        case .overflow: return "the upstream connection pool is full"
        case .connectFailure: return "could not connect to the upstream"
        case .upstreamReset: return "the upstream closed the connection before a complete response"
        case .upstreamTimeout: return "the upstream did not respond in time"
        case .upstreamProtocolError: return "the upstream sent an invalid response"
        case .badRequest: return "the request is not valid HTTP"
        case .invalidHost: return "the request needs exactly one valid Host (and, over HTTP/2, one that agrees with :authority)"
        case .headersTooLarge: return "the request headers are larger than this listener allows"
        case .bodyTooLarge: return "the request body is larger than this listener allows"
        case .requestTimeout: return "the request did not arrive in time"
        case .draining: return "the proxy is shutting down"
        case .fallback: return "the route's cluster had no endpoint; its fallback answered"
        case .breakerOpen: return "the circuit breakers of the cluster's endpoints are open"
        case .overload: return "the proxy is overloaded and sheds new requests"
        }
    }
}

/// Header names the proxy itself reads or writes.
public enum OutriggerHeader {
    public static let reason = "x-outrigger-reason"
    /// How long the callee may take for this try, in milliseconds: the route timeout left, within the per-try timeout.
    public static let expectedTimeout = "x-outrigger-expected-timeout-ms"
    public static let upstreamServiceTime = upstreamServiceTimeName.description
    /// The same, for a scan that compares bytes in place.
    public static let upstreamServiceTimeName: StaticString = "x-outrigger-upstream-service-time"
    public static let requestID = "x-request-id"
    public static let forwardedFor = "x-forwarded-for"
    public static let forwardedProto = "x-forwarded-proto"
    /// `x-outrigger-trace: 1` from a trusted side: this request is sampled, whatever the ratio. Never forwarded.
    public static let forceTrace = "x-outrigger-trace"
}
