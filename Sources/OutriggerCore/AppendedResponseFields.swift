import NIOCore

/// The proxy's own fields that go after a response head's fields, kept as what they are made from, as
/// `AppendedOwnFields` for requests: the HTTP/1.1 encoder writes them straight into its buffer and the HPACK encoder
/// encodes them from their bytes (`HTTP1MessageEncoder.encodeHead(_:appending:into:)`,
/// `HPACKBlockEncoder.encode(response:appending:into:)`), with no header slot. Added to the head, the service time
/// cost 0.8k instructions a response on HTTP/1.1 and 1.1k on h2c by callgrind (its block's `HTTPHeaders`, the field's
/// copy, generic write and destroy). Only for a route without response header rules: nothing on the way reads or
/// changes them.
public struct AppendedResponseFields: Equatable, Sendable {
    /// `x-outrigger-upstream-service-time`: how long the upstream took to answer, in milliseconds.
    public var upstreamServiceMilliseconds: Int64?

    public init(upstreamServiceMilliseconds: Int64? = nil) {
        self.upstreamServiceMilliseconds = upstreamServiceMilliseconds
    }

    public var isEmpty: Bool { upstreamServiceMilliseconds == nil }

    /// Each field's name and value as bytes, in order (the value's digits made on the stack).
    @inline(__always)
    func forEachField(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Void) {
        guard let milliseconds = upstreamServiceMilliseconds else { return }
        let value = UInt64(max(milliseconds, 0))
        let count = DecimalText.digitCount(value)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: count) { digits in
            DecimalText.write(value, into: digits)
            let name = OutriggerHeader.upstreamServiceTimeName
            body(UnsafeRawBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount), UnsafeRawBufferPointer(digits))
        }
    }

    /// Their lines, `name: value` CR LF each.
    func write(into buffer: inout ByteBuffer) {
        forEachField { name, value in
            ByteWriter.write(into: &buffer, room: name.count + value.count + 4) { line in
                line.bytes(name)
                line.byte(UInt8(ascii: ":"))
                line.byte(UInt8(ascii: " "))
                line.bytes(value)
                line.lineEnd()
            }
        }
    }
}
