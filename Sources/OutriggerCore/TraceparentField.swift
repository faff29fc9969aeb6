/// A try's `traceparent` kept as its ids, for the HTTP/1.1 encoder to write after the head's fields
/// (`AppendedOwnFields`). Only for a trace that started here without any format
/// having come (`ExchangeTrace.startTry`): the head then has no trace field for it to replace. No string is built
/// for it and no header slot taken: ~0.8k instructions a request on a listener that takes part, by callgrind.
public struct TraceparentField: Equatable, Sendable {
    public let traceID: TraceID
    public let spanID: UInt64
    public let sampled: Bool

    private static let name: StaticString = "traceparent: "
    /// `traceparent: ` (13 bytes), the version-00 value (55) and CR LF.
    static let encodedLength = 70

    public init(traceID: TraceID, spanID: UInt64, sampled: Bool) {
        self.traceID = traceID
        self.spanID = spanID
        self.sampled = sampled
    }

    /// The field's value, for a head sent some other way (HTTP/2, whose encoder takes strings), or written into one.
    public var value: String {
        String(unsafeUninitializedCapacity: 55) { buffer in
            store(into: buffer)
            return 55
        }
    }

    /// The whole field line: `traceparent: ` and the value, CR LF.
    @inline(__always)
    func write(into line: inout ByteWriter) {
        Self.name.withUTF8Buffer { line.bytes(UnsafeRawBufferPointer($0)) }
        line.fill(55) { store(into: $0) }
        line.lineEnd()
    }

    /// The version-00 value, `00-<trace id>-<span id>-0<sampled>`, at the buffer's start (55 bytes).
    @inline(__always)
    private func store(into buffer: UnsafeMutableBufferPointer<UInt8>) {
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
