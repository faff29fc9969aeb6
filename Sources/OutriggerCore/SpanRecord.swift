/// One finished span, as exported (OTLP, Zipkin) and shown by the admin's `/traces`: a request's server span, or
/// one of its tries' client spans. Attributes follow OpenTelemetry's HTTP semantic conventions, plus ours
/// (`outrigger.*`).
public struct SpanRecord: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case server
        case client
    }

    public var traceID: TraceID
    public var spanID: UInt64
    /// 0 at a trace's root.
    public var parentSpanID: UInt64
    public var traceState: String?
    public var kind: Kind
    public var name: String
    public var startUnixNanoseconds: UInt64
    public var endUnixNanoseconds: UInt64
    public var attributes: [SpanAttribute]
    /// Why the span is an error (OpenTelemetry's status ERROR and its message); nil: unset.
    public var error: String?

    public init(traceID: TraceID, spanID: UInt64, parentSpanID: UInt64, traceState: String? = nil, kind: Kind, name: String,
                startUnixNanoseconds: UInt64, endUnixNanoseconds: UInt64, attributes: [SpanAttribute], error: String? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.kind = kind
        self.name = name
        self.startUnixNanoseconds = startUnixNanoseconds
        self.endUnixNanoseconds = max(endUnixNanoseconds, startUnixNanoseconds)
        self.attributes = attributes
        self.error = error
    }

    public var durationNanoseconds: UInt64 { endUnixNanoseconds - startUnixNanoseconds }

    public func attribute(_ key: String) -> SpanAttribute.Value? {
        attributes.first { $0.key == key }?.value
    }
}

public struct SpanAttribute: Sendable, Equatable {
    public enum Value: Sendable, Equatable, CustomStringConvertible {
        case string(String)
        case int(Int64)
        case bool(Bool)

        public var description: String {
            switch self {
            case .string(let value): value
            case .int(let value): String(value)
            case .bool(let value): value ? "true" : "false"
            }
        }
    }

    public var key: String
    public var value: Value

    public init(_ key: String, _ value: Value) {
        self.key = key
        self.value = value
    }

    public init(_ key: String, _ value: String) { self.init(key, .string(value)) }
    public init(_ key: String, _ value: Int) { self.init(key, .int(Int64(value))) }
}

/// A try's client span while it runs, and once it ended (`endedAt` set).
public struct TrySpan: Sendable, Equatable {
    public let spanID: UInt64
    /// 1 for the first try.
    public let attempt: Int
    /// Uptime nanoseconds.
    public let startedAt: UInt64
    /// Where it went (`IP:port`).
    public let endpoint: String
    /// Why it was started: nil for the first try; the retry condition that matched, or `hedge`.
    public let cause: String?
    /// The upstream's response status, once its head arrived (0: none).
    public var status = 0
    /// Why it failed (a local reply reason, `per_try_timeout`, …); nil when it got a response or is running.
    public var failure: String?
    public var endedAt: UInt64 = 0

    public init(spanID: UInt64, attempt: Int, startedAt: UInt64, endpoint: String, cause: String?) {
        self.spanID = spanID
        self.attempt = attempt
        self.startedAt = startedAt
        self.endpoint = endpoint
        self.cause = cause
    }
}

/// What a request's server span says, gathered by the shell at the request's one end.
public struct ServerSpanFacts: Sendable {
    public var method: String
    public var target: String
    public var host: String
    public var scheme: String
    /// `1.1` or `2`.
    public var protocolVersion: String
    public var status: Int
    public var listener: String
    public var route: String
    public var cluster: String
    /// Why the proxy answered, or why the exchange ended early (the access log's reason); nil when relayed.
    public var reason: String?
    public var tries: Int
    public var requestBodyBytes: Int
    public var responseBodyBytes: Int
    public var clientAddress: String?
    public var requestID: String?
    /// Uptime nanoseconds.
    public var startedAt: UInt64
    public var endedAt: UInt64

    public init(method: String, target: String, host: String, scheme: String, protocolVersion: String, status: Int, listener: String,
                route: String, cluster: String, reason: String?, tries: Int, requestBodyBytes: Int, responseBodyBytes: Int,
                clientAddress: String?, requestID: String?, startedAt: UInt64, endedAt: UInt64) {
        self.method = method
        self.target = target
        self.host = host
        self.scheme = scheme
        self.protocolVersion = protocolVersion
        self.status = status
        self.listener = listener
        self.route = route
        self.cluster = cluster
        self.reason = reason
        self.tries = tries
        self.requestBodyBytes = requestBodyBytes
        self.responseBodyBytes = responseBodyBytes
        self.clientAddress = clientAddress
        self.requestID = requestID
        self.startedAt = startedAt
        self.endedAt = endedAt
    }
}

extension ExchangeTrace {
    /// The request's server span. Times are uptime nanoseconds, `epochOffset` turns them into Unix time. A 5xx, or
    /// an end without a response (the client left), is an error; a 4xx is the client's and is not (OpenTelemetry's
    /// rule for server spans).
    public func serverSpan(_ facts: ServerSpanFacts, epochOffset: UInt64) -> SpanRecord {
        var attributes = [
            SpanAttribute("http.request.method", facts.method),
            SpanAttribute("url.path", String(ProxyHeaders.path(of: facts.target))),
            SpanAttribute("url.scheme", facts.scheme),
            SpanAttribute("server.address", facts.host),
            SpanAttribute("network.protocol.version", facts.protocolVersion),
            SpanAttribute("outrigger.listener", facts.listener),
            SpanAttribute("outrigger.route", facts.route),
            SpanAttribute("outrigger.cluster", facts.cluster),
            SpanAttribute("outrigger.attempts", facts.tries),
            SpanAttribute("http.request.body.size", facts.requestBodyBytes),
            SpanAttribute("http.response.body.size", facts.responseBodyBytes),
        ]
        if facts.status > 0 { attributes.append(SpanAttribute("http.response.status_code", facts.status)) }
        if let reason = facts.reason { attributes.append(SpanAttribute("outrigger.reason", reason)) }
        if let client = facts.clientAddress { attributes.append(SpanAttribute("client.address", client)) }
        if let id = facts.requestID { attributes.append(SpanAttribute("outrigger.request_id", id)) }
        let error: String? = facts.status >= 500 ? (facts.reason ?? "HTTP \(facts.status)") : (facts.status == 0 ? facts.reason ?? "no response" : nil)
        return SpanRecord(traceID: traceID, spanID: serverSpanID, parentSpanID: parentSpanID ?? 0, traceState: traceState, kind: .server,
                          name: "\(facts.method) \(facts.route)", startUnixNanoseconds: facts.startedAt &+ epochOffset,
                          endUnixNanoseconds: facts.endedAt &+ epochOffset, attributes: attributes, error: error)
    }

    /// An ended try's client span, a child of the server span. A failure, or a 4xx or 5xx answer, is an error
    /// (OpenTelemetry's rule for client spans).
    public func clientSpan(_ ended: TrySpan, method: String, cluster: String, epochOffset: UInt64) -> SpanRecord {
        var attributes = [
            SpanAttribute("http.request.method", method),
            SpanAttribute("outrigger.cluster", cluster),
            SpanAttribute("outrigger.endpoint", ended.endpoint),
            SpanAttribute("outrigger.attempt", ended.attempt),
        ]
        if let (host, port) = Self.split(ended.endpoint) {
            attributes.append(SpanAttribute("server.address", host))
            attributes.append(SpanAttribute("server.port", port))
        }
        if ended.attempt > 1 { attributes.append(SpanAttribute("http.request.resend_count", ended.attempt - 1)) }
        if let cause = ended.cause { attributes.append(SpanAttribute("outrigger.retry_reason", cause)) }
        if ended.status > 0 { attributes.append(SpanAttribute("http.response.status_code", ended.status)) }
        if let failure = ended.failure { attributes.append(SpanAttribute("error.type", failure)) }
        let error = ended.failure ?? (ended.status >= 400 ? "HTTP \(ended.status)" : nil)
        return SpanRecord(traceID: traceID, spanID: ended.spanID, parentSpanID: serverSpanID, kind: .client, name: "\(method) \(cluster)",
                          startUnixNanoseconds: ended.startedAt &+ epochOffset, endUnixNanoseconds: ended.endedAt &+ epochOffset,
                          attributes: attributes, error: error)
    }

    /// `IP:port` or `[IPv6]:port` as host and port.
    private static func split(_ endpoint: String) -> (String, Int)? {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else { return nil }
        var host = endpoint[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (String(host), port)
    }
}
