/// An `x-request-id` generated here: a random version-4 UUID, kept as its 128 bits until its text is needed. Sent after
/// the head's fields (`AppendedOwnFields`), it is written by the HTTP/1.1 encoder straight from them: no 36-byte string
/// and no header slot on a request that came without an id (~1.0k instructions, by callgrind); the access log and a
/// sampled span ask for its text.
public struct GeneratedRequestID: MadeFieldValue, Equatable, Sendable {
    /// The UUID's bits, version and variant set.
    public let high: UInt64
    public let low: UInt64

    public static let length = 36

    public init(random: inout FastRandom) {
        high = (random.next() & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000  // version 4
        low = (random.next() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // RFC 4122 variant
    }

    /// The canonical text form, 8-4-4-4-12 lowercase hex digits: `high`'s 16 digits in groups of 8, 4 and 4, then
    /// `low`'s in groups of 4 and 12, made eight at a time.
    @inline(__always)
    public func store(into buffer: UnsafeMutableBufferPointer<UInt8>) {
        HexDigits.store(HexDigits.eight(UInt32(truncatingIfNeeded: high >> 32)), into: buffer, at: 0)
        let highLast = HexDigits.eight(UInt32(truncatingIfNeeded: high))
        HexDigits.storeHalf(of: highLast, last: false, into: buffer, at: 9)
        HexDigits.storeHalf(of: highLast, last: true, into: buffer, at: 14)
        let lowFirst = HexDigits.eight(UInt32(truncatingIfNeeded: low >> 32))
        HexDigits.storeHalf(of: lowFirst, last: false, into: buffer, at: 19)
        HexDigits.storeHalf(of: lowFirst, last: true, into: buffer, at: 24)
        HexDigits.store(HexDigits.eight(UInt32(truncatingIfNeeded: low)), into: buffer, at: 28)
        buffer[8] = UInt8(ascii: "-")
        buffer[13] = UInt8(ascii: "-")
        buffer[18] = UInt8(ascii: "-")
        buffer[23] = UInt8(ascii: "-")
    }
}
