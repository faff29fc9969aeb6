/// A try's `traceparent` kept as its ids, for the HTTP/1.1 encoder to write after the head's fields
/// (`AppendedOwnFields`). Only for a trace that started here without any format
/// having come (`ExchangeTrace.startTry`): the head then has no trace field for it to replace. No string is built
/// for it and no header slot taken: ~600 instructions a request on a listener that takes part, by callgrind.
public struct TraceparentField: Equatable, Sendable {
    public let traceID: TraceID
    public let spanID: UInt64
    public let sampled: Bool

    private static let prefix: StaticString = "traceparent: 00-"
    /// `traceparent: ` (13 bytes), the version-00 value (55) and CR LF.
    static let encodedLength = 70

    public init(traceID: TraceID, spanID: UInt64, sampled: Bool) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
    }

    /// The field's value, for a head sent some other way (HTTP/2, whose encoder takes strings).
    public var value: String { TraceHex.traceparent(high: traceID.high, low: traceID.low, span: spanID, sampled: sampled) }

    /// The whole field line: `traceparent: 00-<trace id>-<span id>-0<sampled>` CR LF.
    @inline(__always)
    func write(into line: inout ByteWriter) {
        Self.prefix.withUTF8Buffer { line.bytes(UnsafeRawBufferPointer($0)) }
        line.hex(traceID.high)
        line.hex(traceID.low)
        line.byte(UInt8(ascii: "-"))
        line.hex(spanID)
        line.byte(UInt8(ascii: "-"))
        line.byte(UInt8(ascii: "0"))
        line.byte(sampled ? UInt8(ascii: "1") : UInt8(ascii: "0"))
        line.lineEnd()
    }
}
