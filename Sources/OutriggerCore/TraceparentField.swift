/// A try's `traceparent` kept as its ids, for the HTTP/1.1 encoder to write after the head's fields
/// (`AppendedOwnFields`). Only for a trace that started here without any format
/// having come (`ExchangeTrace.startTry`): the head then has no trace field for it to replace. No string is built
/// for it and no header slot taken: ~0.8k instructions a request on a listener that takes part, by callgrind.
public struct TraceparentField: MadeFieldValue, Equatable, Sendable {
    public let traceID: TraceID
    public let spanID: UInt64
    public let sampled: Bool

    public static let length = 55

    public init(traceID: TraceID, spanID: UInt64, sampled: Bool) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
    }

    /// The version-00 value, `00-<trace id>-<span id>-0<sampled>`.
    @inline(__always)
    public func store(into buffer: UnsafeMutableBufferPointer<UInt8>) {
        buffer[0] = UInt8(ascii: "0")
        buffer[1] = UInt8(ascii: "0")
        buffer[2] = UInt8(ascii: "-")
        HexDigits.write(traceID.high, into: buffer, at: 3)
        HexDigits.write(traceID.low, into: buffer, at: 19)
        buffer[35] = UInt8(ascii: "-")
        HexDigits.write(spanID, into: buffer, at: 36)
        buffer[52] = UInt8(ascii: "-")
        buffer[53] = UInt8(ascii: "0")
        buffer[54] = sampled ? UInt8(ascii: "1") : UInt8(ascii: "0")
    }
}
