import NIOHTTP1

/// The proxy's own fields that go after a request head's fields, kept as what they are made from: the HTTP/1.1 encoder
/// writes them straight into its buffer (`HTTP1MessageEncoder.encodeHead(_:appending:into:)`), with no header slot for
/// any and no string for the ids. Added to the head, the forwarding fields and the expected timeout cost 1.5k
/// instructions a request by callgrind (the block's array and `HTTPHeaders`, each field's copy into the head, generic
/// write and destroy). The forwarding fields, the request id and the expected timeout only for a route without request
/// header rules, which could read or change them; the `traceparent` whatever the route (a try writes it after the
/// rules ran, in the head or here).
public struct AppendedOwnFields: Equatable, Sendable {
    /// `x-forwarded-for`: the client's address, when none came.
    public var forwardedFor: String?
    /// `x-forwarded-proto`, when none came.
    public var forwardedProto: String?
    /// `x-request-id`, generated here.
    public var requestID: GeneratedRequestID?
    /// The current try's `x-outrigger-expected-timeout-ms`, when no caller's can be in the head.
    public var expectedTimeout: String?
    /// The current try's `traceparent`, of a trace started here (`ExchangeTrace.startTry`).
    public var traceparent: TraceparentField?

    public init(forwardedFor: String? = nil, forwardedProto: String? = nil, requestID: GeneratedRequestID? = nil,
                expectedTimeout: String? = nil, traceparent: TraceparentField? = nil) {
        self.forwardedFor = forwardedFor
        self.forwardedProto = forwardedProto
        self.requestID = requestID
        self.expectedTimeout = expectedTimeout
        self.traceparent = traceparent
    }

    public var isEmpty: Bool {
        forwardedFor == nil && forwardedProto == nil && requestID == nil && expectedTimeout == nil && traceparent == nil
    }

    /// The bytes `write` writes.
    var encodedLength: Int {
        var length = 0
        if let forwardedFor { length += Self.lineLength(OutriggerHeader.forwardedFor, forwardedFor) }
        if let forwardedProto { length += Self.lineLength(OutriggerHeader.forwardedProto, forwardedProto) }
        if requestID != nil { length += GeneratedRequestID.encodedLength }
        if let expectedTimeout { length += Self.lineLength(OutriggerHeader.expectedTimeout, expectedTimeout) }
        if traceparent != nil { length += TraceparentField.encodedLength }
        return length
    }

    /// Their lines, in the order `add` adds them.
    @inline(__always)
    func write(into line: inout ByteWriter) {
        if let forwardedFor { Self.write(OutriggerHeader.forwardedFor, forwardedFor, into: &line) }
        if let forwardedProto { Self.write(OutriggerHeader.forwardedProto, forwardedProto, into: &line) }
        requestID?.write(into: &line)
        if let expectedTimeout { Self.write(OutriggerHeader.expectedTimeout, expectedTimeout, into: &line) }
        traceparent?.write(into: &line)
    }

    /// `name: value` CR LF.
    private static func lineLength(_ name: String, _ value: String) -> Int { name.utf8.count + value.utf8.count + 4 }

    @inline(__always)
    private static func write(_ name: String, _ value: String, into line: inout ByteWriter) {
        name.withUTF8Bytes { line.bytes($0) }
        line.byte(UInt8(ascii: ":"))
        line.byte(UInt8(ascii: " "))
        value.withUTF8Bytes { line.bytes($0) }
        line.lineEnd()
    }

    /// As fields at the end of `headers`, for a head sent some other way (HTTP/2, whose encoder takes strings).
    public func add(to headers: inout HTTPHeaders) {
        if let forwardedFor { headers.add(name: OutriggerHeader.forwardedFor, value: forwardedFor) }
        if let forwardedProto { headers.add(name: OutriggerHeader.forwardedProto, value: forwardedProto) }
        if let requestID { headers.add(name: OutriggerHeader.requestID, value: requestID.string) }
        if let expectedTimeout { headers.add(name: OutriggerHeader.expectedTimeout, value: expectedTimeout) }
        if let traceparent { headers.add(name: TracePropagation.traceparent, value: traceparent.value) }
    }
}
