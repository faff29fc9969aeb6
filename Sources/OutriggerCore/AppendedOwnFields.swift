/// The proxy's own fields that go after a head's fields, kept as what they are made from (`AppendedOwnFields` for a
/// request, `AppendedResponseFields` for a response): the HTTP/1.1 encoder writes each straight into its buffer and the
/// HPACK encoder encodes each from its bytes (`HTTP1MessageEncoder.encodeHead(_:appending:into:)`,
/// `HPACKBlockEncoder.encode(request:scheme:appending:into:)`), with no header slot and no string for a made value.
public protocol AppendedFieldSet {
    var isEmpty: Bool { get }
    /// The bytes of their HTTP/1.1 lines, `name: value` CR LF each.
    var lineBytes: Int { get }
    /// Each field's name and value as bytes, in the order they go.
    func forEachField(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void)
}

/// A request's: added to the head, the forwarding fields and the expected timeout cost 1.5k instructions a request by
/// callgrind (the block's array and `HTTPHeaders`, each field's copy into the head, generic write and destroy). The
/// forwarding fields, the request id and the expected timeout only for a route without request header rules, which
/// could read or change them; the `traceparent` whatever the route (a try writes it after the rules ran, in the head
/// or here).
public struct AppendedOwnFields: AppendedFieldSet, Equatable, Sendable {
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

    public var lineBytes: Int {
        func line(_ name: String, _ valueLength: Int) -> Int { name.utf8.count + valueLength + 4 }
        var length = 0
        if let forwardedFor { length += line(OutriggerHeader.forwardedFor, forwardedFor.utf8.count) }
        if let forwardedProto { length += line(OutriggerHeader.forwardedProto, forwardedProto.utf8.count) }
        if requestID != nil { length += line(OutriggerHeader.requestID, GeneratedRequestID.length) }
        if let expectedTimeout { length += line(OutriggerHeader.expectedTimeout, expectedTimeout.utf8.count) }
        if traceparent != nil { length += line(TracePropagation.traceparent, TraceparentField.length) }
        return length
    }

    @inline(__always)
    public func forEachField(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) {
        @inline(__always)
        func field(_ name: String, _ value: String) {
            name.withUTF8Bytes { name in value.withUTF8Bytes { body(name, $0) } }
        }
        @inline(__always)
        func field(_ name: String, _ value: some MadeFieldValue) {
            name.withUTF8Bytes { name in value.withBytes { body(name, $0) } }
        }
        if let forwardedFor { field(OutriggerHeader.forwardedFor, forwardedFor) }
        if let forwardedProto { field(OutriggerHeader.forwardedProto, forwardedProto) }
        if let requestID { field(OutriggerHeader.requestID, requestID) }
        if let expectedTimeout { field(OutriggerHeader.expectedTimeout, expectedTimeout) }
        if let traceparent { field(TracePropagation.traceparent, traceparent) }
    }
}
