import NIOHTTP1

/// What the sidecar reads of a request's fields before it routes and forwards it, gathered in one pass over them:
/// the head's size, its `host`, `content-length`, `connection`, `upgrade`, `expect` and `content-type`, and whether any override
/// header (`x-outrigger-…`) or trace header came. Each was a scan of its own — two over every field (the size, the hosts), six by
/// name — about 2,000 instructions a request by callgrind; the one pass reads each name once, in place, told apart
/// by its length first.
public struct RequestHeadFacts: Equatable, Sendable {
    /// The request line and the fields as they were on the wire (near enough for a limit).
    public let size: Int
    /// The first `host` field's value.
    public let host: String?
    /// Whether the request's Host is one a proxy may route by and forward (RFC 9112 §3.2, RFC 9113 §8.3.1):
    /// exactly one on HTTP/1.1 (none is allowed on HTTP/1.0), every value the same on HTTP/2 (where it came
    /// from `:authority` or a `host` field), and each a valid `uri-host[:port]`. Otherwise routing could use
    /// one value while the upstream reads another.
    public let hasValidHost: Bool
    /// The first `content-length` field's value, when it is a number.
    public let contentLength: Int?
    /// The first `upgrade` field's value.
    private let upgrade: String?
    /// `expect: 100-continue` (the first `expect` field's value, in any case).
    public let expectsContinue: Bool
    /// A gRPC call: the first `content-type` is `application/grpc` or `application/grpc+proto` etc.
    public let isGRPC: Bool
    /// What `ProxyHeaders.prepareUpstreamRequest` would otherwise look for: a hop-by-hop field (none: nothing to
    /// remove), a `content-length`, the forwarding fields and `x-request-id`; whether the last transfer coding is
    /// `chunked`, as NIO's `canonicalForm` lists them (empty elements skipped).
    public let hasHopByHopFields: Bool
    public let hasContentLength: Bool
    public let lastTransferCodingIsChunked: Bool
    public let hasForwardedFor: Bool
    public let hasForwardedProto: Bool
    public let hasRequestID: Bool
    /// A field named `x-outrigger-…`, in any case: an override header, or one the sidecar never forwards.
    public let hasOverrideFields: Bool
    /// A field `TracePropagation.scan` reads: a trace header (W3C, B3), `baggage`, the force header. Without one,
    /// a request's trace needs no scan (most requests at a mesh's edge).
    public let hasTraceFields: Bool
    /// Whether the request lets its connection carry another one. The HTTP/1.1 parser stops at an upgrade request
    /// (`connection: upgrade` with `upgrade`, or CONNECT): unless it becomes a tunnel, the connection closes after
    /// it. The `connection` options are read as NIO's `isKeepAlive` reads them — `close` closes, `keep-alive` keeps,
    /// two of them (even the same twice) close, neither is the version's default — but split at every comma byte, as
    /// the HTTP/1.1 parser splits them: NIO split by `Character`, and a comma followed by a combining mark
    /// (obs-text) did not end an option, so the handler kept a connection the parser had closed.
    public let keepsConnection: Bool
    /// A `connection` option `upgrade`.
    private let connectionUpgrade: Bool

    public init(_ head: borrowing HTTPRequestHead) {
        var size = head.method.rawValue.utf8.count + head.uri.utf8.count + 12
        var host: String?, upgrade: String?, contentLength: Int?
        var hosts = 0, hostsValid = true
        var closeOptions = 0, keepAliveOptions = 0, connectionUpgrade = false
        var sawExpect = false, expectsContinue = false, hasOverrideFields = false, hasTraceFields = false
        var sawContentType = false, isGRPC = false, hasHopByHopFields = false, hasContentLength = false
        var lastTransferCodingIsChunked = false, hasForwardedFor = false, hasForwardedProto = false, hasRequestID = false
        for (name, value) in head.headers {
            size += name.utf8.count + value.utf8.count + 4
            name.withUTF8Bytes { name in
                if HTTP1Syntax.startsIgnoringCase(name, with: "x-outrigger-") { hasOverrideFields = true }
                if !hasTraceFields, TracePropagation.isTraceField(name) { hasTraceFields = true }
                // A hop-by-hop name: the three read below are marked in their cases, the others in `default`.
                switch name.count {
                case 4 where HTTP1Syntax.equalsIgnoringCase(name, "host"):
                    hosts += 1
                    guard hostsValid else { return }
                    if let host {
                        hostsValid = head.version.major >= 2 && value == host
                    } else {
                        host = value
                    }
                    if hostsValid { hostsValid = ProxyHeaders.isValidHost(value) }
                case 6 where !sawExpect && HTTP1Syntax.equalsIgnoringCase(name, "expect"):
                    sawExpect = true
                    value.withUTF8Bytes { expectsContinue = HTTP1Syntax.equalsIgnoringCase($0, "100-continue") }
                case 7 where HTTP1Syntax.equalsIgnoringCase(name, "upgrade"):
                    hasHopByHopFields = true
                    if upgrade == nil { upgrade = value }
                case 10 where HTTP1Syntax.equalsIgnoringCase(name, "connection"):
                    hasHopByHopFields = true
                    value.withUTF8Bytes { options in
                        HTTP1Syntax.forEachListElement(options) { option in
                            switch HTTP1Syntax.connectionOption(option) {
                            case .close: closeOptions += 1
                            case .keepAlive: keepAliveOptions += 1
                            case .upgrade: connectionUpgrade = true
                            case nil: break
                            }
                        }
                    }
                case 12 where HTTP1Syntax.equalsIgnoringCase(name, "content-type"):
                    guard !sawContentType else { return }
                    sawContentType = true
                    isGRPC = value.hasPrefix("application/grpc")
                case 12 where HTTP1Syntax.equalsIgnoringCase(name, "x-request-id"):
                    hasRequestID = true
                case 14 where HTTP1Syntax.equalsIgnoringCase(name, "content-length"):
                    guard !hasContentLength else { return }
                    hasContentLength = true
                    contentLength = Int(value)
                case 15 where HTTP1Syntax.equalsIgnoringCase(name, "x-forwarded-for"):
                    hasForwardedFor = true
                case 17 where HTTP1Syntax.equalsIgnoringCase(name, "transfer-encoding"):
                    hasHopByHopFields = true
                    value.withUTF8Bytes { codings in
                        if let last = Self.lastListElement(codings) { lastTransferCodingIsChunked = HTTP1Syntax.equalsIgnoringCase(last, "chunked") }
                    }
                case 17 where HTTP1Syntax.equalsIgnoringCase(name, "x-forwarded-proto"):
                    hasForwardedProto = true
                default:
                    if ProxyHeaders.isConnectionSpecific(name) { hasHopByHopFields = true }
                }
            }
        }
        let keepAlive: Bool
        switch (closeOptions, keepAliveOptions) {
        case (0, 0): keepAlive = head.version.major == 1 && head.version.minor >= 1
        case (0, 1): keepAlive = true
        default: keepAlive = false
        }
        self.size = size
        self.host = host
        self.hasValidHost = hostsValid && (hosts > 0 || head.version.major != 1 || head.version.minor == 0)
        self.contentLength = contentLength
        self.upgrade = upgrade
        self.expectsContinue = expectsContinue
        self.hasOverrideFields = hasOverrideFields
        self.hasTraceFields = hasTraceFields
        self.isGRPC = isGRPC
        self.hasHopByHopFields = hasHopByHopFields
        self.hasContentLength = hasContentLength
        self.lastTransferCodingIsChunked = lastTransferCodingIsChunked
        self.hasForwardedFor = hasForwardedFor
        self.hasForwardedProto = hasForwardedProto
        self.hasRequestID = hasRequestID
        self.connectionUpgrade = connectionUpgrade
        self.keepsConnection = keepAlive && !(head.method.isCONNECT || (upgrade != nil && connectionUpgrade))
    }

    /// A list's last element that is not empty before it is trimmed, trimmed (as NIO's `canonicalForm` splits a value:
    /// `"a,"` ends with `a`, `"a, "` with an empty element), or nil when every element is empty.
    static func lastListElement(_ list: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var end = list.count
        while end > 0 {
            let start = (list[..<end].lastIndex(of: UInt8(ascii: ",")) ?? -1) + 1
            if start < end { return UnsafeRawBufferPointer(rebasing: HTTP1Syntax.trimmingWhitespace(list[start..<end])) }
            end = start - 1
        }
        return nil
    }

    /// The `upgrade` protocol of a request that can be tunnelled (HTTP/1.1 on both sides; never `h2c`, RFC 9113
    /// §3.1), or nil.
    public func tunnelableUpgrade(http1BothSides: Bool) -> String? {
        guard http1BothSides, connectionUpgrade, let upgrade, !HTTP1Syntax.equalsIgnoringCase(upgrade, "h2c") else { return nil }
        return upgrade
    }
}
