import NIOHTTP1

/// The proxy's own fields that go after a request head's fields, kept as what they are made from: the HTTP/1.1 encoder
/// writes them straight into its buffer (`HTTP1MessageEncoder.encodeHead(_:appending:into:)`), with no string and no
/// header slot for either. Only fields nothing reads or changes on the way: a request id generated here when the
/// route's header rules do not touch it, and the `traceparent` of a trace started here.
public struct AppendedOwnFields: Equatable, Sendable {
    public var requestID: GeneratedRequestID?
    /// The current try's (`ExchangeTrace.startTry`).
    public var traceparent: TraceparentField?

    public init(requestID: GeneratedRequestID? = nil, traceparent: TraceparentField? = nil) {
        self.requestID = requestID
        self.traceparent = traceparent
    }

    public var isEmpty: Bool { requestID == nil && traceparent == nil }

    var encodedLength: Int {
        (requestID == nil ? 0 : GeneratedRequestID.encodedLength) + (traceparent == nil ? 0 : TraceparentField.encodedLength)
    }

    /// Their lines, in the order `add` adds them.
    @inline(__always)
    func write(into line: inout ByteWriter) {
        requestID?.write(into: &line)
        traceparent?.write(into: &line)
    }

    /// As fields at the end of `headers`, for a head sent some other way (HTTP/2, whose encoder takes strings).
    public func add(to headers: inout HTTPHeaders) {
        if let requestID { headers.add(name: OutriggerHeader.requestID, value: requestID.string) }
        if let traceparent { headers.add(name: TracePropagation.traceparent, value: traceparent.value) }
    }
}
