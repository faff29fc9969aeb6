/// One finished span, as exported (OTLP, Zipkin) and shown by the admin's `/traces`: a request's server span, or
/// one of its tries' client spans. The event loop only stores what it knows (`Details`: retained strings and
/// numbers); the name and the attributes — OpenTelemetry's HTTP semantic conventions, plus ours (`outrigger.*`) —
/// are made where the span is read, off the loop. A value: the loop's hand-over array holds spans inline (no
/// allocation per span), and that array is shared whole by the recent ring and the export queue, never copied span
/// by span.
public struct SpanRecord: Sendable {
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

    @inline(__always)
    public var kind: Kind {
        if case .server = details { return .server }
        return .client
    }

    /// `METHOD route` for a server span (`METHOD` alone for a request answered before it was routed), `METHOD
    /// cluster` for a try.
    public var name: String {
        switch details {
        case .server(let facts): Self.secondWord(facts).map { "\(facts.method) \($0)" } ?? facts.method
        case .client(_, let method, let cluster): "\(method) \(cluster)"
        }
    }

    /// Why the span is an error (OpenTelemetry's status ERROR and its message); nil: unset. A server span is an
    /// error for a 5xx or an end without a response (the client left), not for a 4xx (the client's); a try for a
    /// failure or any 4xx or 5xx answer (OpenTelemetry's rules for server and client spans).
    @inline(__always)
    public var error: String? {
        switch details {
        case .server(let facts): Self.error(facts)
        case .client(let ended, _, _): Self.error(ended)
        }
    }

    public var attributes: [SpanAttribute] {
        var list = SpanAttributeList()
        writeAttributes(into: &list)
        return list.attributes
    }

    /// Each attribute in turn into `writer`: keys are static, and values are parts of the strings the span holds
    /// (the path of the target, the host of the endpoint), so that an encoder makes no string per attribute.
    @inline(__always)
    public func writeAttributes<Writer: SpanAttributeWriter>(into writer: inout Writer) {
        switch details {
        case .server(let facts): Self.writeAttributes(facts, into: &writer)
        case .client(let ended, let method, let cluster): Self.writeAttributes(ended, method: method, cluster: cluster, into: &writer)
        }
    }

    /// All that the details say — the name's two words, the attributes, the error if any — from one look at them:
    /// each look copies the details out, retaining every string they hold, so an encoder looks once.
    @inline(__always)
    public func describe<Writer: SpanDescriptionWriter>(into writer: inout Writer) {
        switch details {
        case .server(let facts):
            writer.name(facts.method, Self.secondWord(facts))
            Self.writeAttributes(facts, into: &writer)
            if let error = Self.error(facts) { writer.error(error) }
        case .client(let ended, let method, let cluster):
            writer.name(method, cluster)
            Self.writeAttributes(ended, method: method, cluster: cluster, into: &writer)
            if let error = Self.error(ended) { writer.error(error) }
        }
    }

    @inline(__always)
    private static func secondWord(_ facts: ServerSpanFacts) -> String? {
        facts.route.isEmpty ? nil : facts.route
    }

    @inline(__always)
    private static func error(_ facts: ServerSpanFacts) -> String? {
        if facts.status >= 500 { return facts.reason ?? "HTTP \(facts.status)" }
        return facts.status == 0 ? facts.reason ?? "no response" : nil
    }

    @inline(__always)
    private static func error(_ ended: TrySpan) -> String? {
        ended.failure ?? (ended.status >= 400 ? "HTTP \(ended.status)" : nil)
    }

    @inline(__always)
    private static func writeAttributes<Writer: SpanAttributeWriter>(_ facts: ServerSpanFacts, into writer: inout Writer) {
        writer.string("http.request.method", facts.method)
        writer.string("url.path", ProxyHeaders.path(of: facts.target))
        writer.string("url.scheme", facts.scheme)
        writer.string("server.address", facts.host)
        writer.string("network.protocol.version", facts.protocolVersion)
        writer.string("outrigger.listener", facts.listener)
        if !facts.route.isEmpty { writer.string("outrigger.route", facts.route) }
        if !facts.cluster.isEmpty { writer.string("outrigger.cluster", facts.cluster) }
        writer.int("outrigger.attempts", Int64(facts.tries))
        writer.int("http.request.body.size", Int64(facts.requestBodyBytes))
        writer.int("http.response.body.size", Int64(facts.responseBodyBytes))
        if facts.status > 0 { writer.int("http.response.status_code", Int64(facts.status)) }
        if let reason = facts.reason { writer.string("outrigger.reason", reason) }
        if let client = facts.clientAddress { writer.string("client.address", client) }
        if let id = facts.requestID { writer.string("outrigger.request_id", id) }
    }

    @inline(__always)
    private static func writeAttributes<Writer: SpanAttributeWriter>(_ ended: TrySpan, method: String, cluster: String, into writer: inout Writer) {
        writer.string("http.request.method", method)
        writer.string("outrigger.cluster", cluster)
        writer.string("outrigger.endpoint", ended.endpoint)
        writer.int("outrigger.attempt", Int64(ended.attempt))
        if let (host, port) = Self.split(ended.endpoint) {
            writer.string("server.address", host)
            writer.int("server.port", Int64(port))
        }
        if ended.attempt > 1 { writer.int("http.request.resend_count", Int64(ended.attempt - 1)) }
        if let cause = ended.cause { writer.string("outrigger.retry_reason", cause) }
        if ended.status > 0 { writer.int("http.response.status_code", Int64(ended.status)) }
        if let failure = ended.failure { writer.string("error.type", failure) }
    }

    public func attribute(_ key: String) -> SpanAttribute.Value? {
        attributes.first { $0.key == key }?.value
    }

    /// `IP:port` or `[IPv6]:port` as host and port.
    private static func split(_ endpoint: String) -> (Substring, Int)? {
        // The bytes read once, from the end: the port's one to five digits, then the colon.
        var endpoint = endpoint
        let found: (colon: Int, port: Int, bracketed: Bool)? = endpoint.withUTF8 { bytes in
            var index = bytes.count - 1
            var port = 0
            var scale = 1
            while index >= 0, bytes[index] != UInt8(ascii: ":") {
                let digit = bytes[index] &- UInt8(ascii: "0")
                guard digit <= 9, scale <= 10_000 else { return nil }
                port += Int(digit) * scale
                scale *= 10
                index -= 1
            }
            guard index >= 0, scale > 1 else { return nil }
            return (index, port, index >= 2 && bytes[0] == UInt8(ascii: "[") && bytes[index - 1] == UInt8(ascii: "]"))
        }
        guard let found else { return nil }
        let utf8 = endpoint.utf8
        let start = found.bracketed ? utf8.index(after: utf8.startIndex) : utf8.startIndex
        let end = utf8.index(utf8.startIndex, offsetBy: found.bracketed ? found.colon - 1 : found.colon)
        return (endpoint[start..<end], found.port)
    }
}

/// Where a span's attributes are written, one at a time (the OTLP and Zipkin encoders, or a list).
public protocol SpanAttributeWriter {
    mutating func string(_ key: StaticString, _ value: Substring)
    /// A whole string's value (most are): an encoder reads it in place, with no `Substring` made.
    mutating func string(_ key: StaticString, _ value: String)
    mutating func int(_ key: StaticString, _ value: Int64)
}

extension SpanAttributeWriter {
    public mutating func string(_ key: StaticString, _ value: String) {
        string(key, value[...])
    }
}

/// Where all of a span's details are written (`SpanRecord.describe`): its name's two words, its attributes, its error.
public protocol SpanDescriptionWriter: SpanAttributeWriter {
    mutating func name(_ first: String, _ second: String?)
    mutating func error(_ message: String)
}

/// A span's attributes as a list (the admin's `/traces`, tests).
struct SpanAttributeList: SpanAttributeWriter {
    var attributes: [SpanAttribute] = []

    mutating func string(_ key: StaticString, _ value: Substring) {
        attributes.append(SpanAttribute(key.description, .string(String(value))))
    }

    mutating func int(_ key: StaticString, _ value: Int64) {
        attributes.append(SpanAttribute(key.description, .int(value)))
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
    /// Takes `facts` (`consuming`): they move into the span, not copied.
    public func serverSpan(_ facts: consuming ServerSpanFacts, epochOffset: UInt64) -> SpanRecord {
        let (start, end) = (facts.startedAt &+ epochOffset, facts.endedAt &+ epochOffset)
        return SpanRecord(traceID: traceID, spanID: serverSpanID, parentSpanID: parentSpanID ?? 0, traceState: traceState,
                          startUnixNanoseconds: start, endUnixNanoseconds: end, details: .server(consume facts))
    }

    /// An ended try's client span, a child of the server span; `ended` moves into it.
    public func clientSpan(_ ended: consuming TrySpan, method: String, cluster: String, epochOffset: UInt64) -> SpanRecord {
        let (spanID, start, end) = (ended.spanID, ended.startedAt &+ epochOffset, ended.endedAt &+ epochOffset)
        return SpanRecord(traceID: traceID, spanID: spanID, parentSpanID: serverSpanID, startUnixNanoseconds: start, endUnixNanoseconds: end,
                          details: .client(consume ended, method: method, cluster: cluster))
    }
}
