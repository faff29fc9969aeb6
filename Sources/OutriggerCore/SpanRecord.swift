/// One finished span, as exported (OTLP, Zipkin) and shown by the admin's `/traces`: a request's server span, or
/// one of its tries' client spans. The event loop only stores what it knows (`Details`: retained strings and
/// numbers); the name and the attributes — OpenTelemetry's HTTP semantic conventions, plus ours (`outrigger.*`) —
/// are made where the span is read, off the loop.
public final class SpanRecord: Sendable {
    public enum Kind: String, Sendable {
        case server
        case client
    }

    public enum Details: Sendable, Equatable {
        case server(ServerSpanFacts)
        case client(TrySpan, method: String, cluster: String)
    }

    public let traceID: TraceID
    public let spanID: UInt64
    /// 0 at a trace's root.
    public let parentSpanID: UInt64
    public let traceState: String?
    public let startUnixNanoseconds: UInt64
    public let endUnixNanoseconds: UInt64
    /// A class's one reference: a span is copied (into the loop's batch, the recent ring, the export queue, a batch)
    /// with one retain, not one per string it holds.
    public let details: Details

    public init(traceID: TraceID, spanID: UInt64, parentSpanID: UInt64, traceState: String? = nil,
                startUnixNanoseconds: UInt64, endUnixNanoseconds: UInt64, details: Details) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.traceState = traceState
        self.startUnixNanoseconds = startUnixNanoseconds
        self.endUnixNanoseconds = max(endUnixNanoseconds, startUnixNanoseconds)
        self.details = details
    }

    public var durationNanoseconds: UInt64 { endUnixNanoseconds - startUnixNanoseconds }

    public var kind: Kind {
        if case .server = details { return .server }
        return .client
    }

    /// `METHOD route` for a server span, `METHOD cluster` for a try.
    public var name: String {
        switch details {
        case .server(let facts): facts.route.isEmpty ? facts.method : "\(facts.method) \(facts.route)"
        case .client(_, let method, let cluster): "\(method) \(cluster)"
        }
    }

    /// Why the span is an error (OpenTelemetry's status ERROR and its message); nil: unset. A server span is an
    /// error for a 5xx or an end without a response (the client left), not for a 4xx (the client's); a try for a
    /// failure or any 4xx or 5xx answer (OpenTelemetry's rules for server and client spans).
    public var error: String? {
        switch details {
        case .server(let facts):
            if facts.status >= 500 { return facts.reason ?? "HTTP \(facts.status)" }
            return facts.status == 0 ? facts.reason ?? "no response" : nil
        case .client(let ended, _, _):
            return ended.failure ?? (ended.status >= 400 ? "HTTP \(ended.status)" : nil)
        }
    }

    public var attributes: [SpanAttribute] {
        var attributes: [SpanAttribute] = []
        forEachAttribute { attributes.append(SpanAttribute($0, $1)) }
        return attributes
    }

    /// Each attribute in turn, without an array of them (the encoders' way).
    public func forEachAttribute(_ body: (String, SpanAttribute.Value) -> Void) {
        switch details {
        case .server(let facts):
            body("http.request.method", .string(facts.method))
            body("url.path", .string(String(ProxyHeaders.path(of: facts.target))))
            body("url.scheme", .string(facts.scheme))
            body("server.address", .string(facts.host))
            body("network.protocol.version", .string(facts.protocolVersion))
            body("outrigger.listener", .string(facts.listener))
            if !facts.route.isEmpty { body("outrigger.route", .string(facts.route)) }
            if !facts.cluster.isEmpty { body("outrigger.cluster", .string(facts.cluster)) }
            body("outrigger.attempts", .int(Int64(facts.tries)))
            body("http.request.body.size", .int(Int64(facts.requestBodyBytes)))
            body("http.response.body.size", .int(Int64(facts.responseBodyBytes)))
            if facts.status > 0 { body("http.response.status_code", .int(Int64(facts.status))) }
            if let reason = facts.reason { body("outrigger.reason", .string(reason)) }
            if let client = facts.clientAddress { body("client.address", .string(client)) }
            if let id = facts.requestID { body("outrigger.request_id", .string(id)) }
        case .client(let ended, let method, let cluster):
            body("http.request.method", .string(method))
            body("outrigger.cluster", .string(cluster))
            body("outrigger.endpoint", .string(ended.endpoint))
            body("outrigger.attempt", .int(Int64(ended.attempt)))
            if let (host, port) = Self.split(ended.endpoint) {
                body("server.address", .string(host))
                body("server.port", .int(Int64(port)))
            }
            if ended.attempt > 1 { body("http.request.resend_count", .int(Int64(ended.attempt - 1))) }
            if let cause = ended.cause { body("outrigger.retry_reason", .string(cause)) }
            if ended.status > 0 { body("http.response.status_code", .int(Int64(ended.status))) }
            if let failure = ended.failure { body("error.type", .string(failure)) }
        }
    }

    public func attribute(_ key: String) -> SpanAttribute.Value? {
        attributes.first { $0.key == key }?.value
    }

    /// `IP:port` or `[IPv6]:port` as host and port.
    private static func split(_ endpoint: String) -> (String, Int)? {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]) else { return nil }
        var host = endpoint[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (String(host), port)
    }
}

public struct SpanAttribute: Sendable, Equatable {
    public enum Value: Sendable, Equatable, CustomStringConvertible {
        case string(String)
        case int(Int64)

        public var description: String {
            switch self {
            case .string(let value): value
            case .int(let value): String(value)
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
public struct ServerSpanFacts: Sendable, Equatable {
    public var method: String
    public var target: String
    public var host: String
    public var scheme: String
    /// `1.1` or `2`.
    public var protocolVersion: String
    public var status: Int
    public var listener: String
    /// Empty for a request answered before it was routed.
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
    /// The request's server span. Times are uptime nanoseconds, `epochOffset` turns them into Unix time.
    public func serverSpan(_ facts: ServerSpanFacts, epochOffset: UInt64) -> SpanRecord {
        SpanRecord(traceID: traceID, spanID: serverSpanID, parentSpanID: parentSpanID ?? 0, traceState: traceState,
                   startUnixNanoseconds: facts.startedAt &+ epochOffset, endUnixNanoseconds: facts.endedAt &+ epochOffset, details: .server(facts))
    }

    /// An ended try's client span, a child of the server span.
    public func clientSpan(_ ended: TrySpan, method: String, cluster: String, epochOffset: UInt64) -> SpanRecord {
        SpanRecord(traceID: traceID, spanID: ended.spanID, parentSpanID: serverSpanID, startUnixNanoseconds: ended.startedAt &+ epochOffset,
                   endUnixNanoseconds: ended.endedAt &+ epochOffset, details: .client(ended, method: method, cluster: cluster))
    }
}
