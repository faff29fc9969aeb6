/// Lowercase hex digits eight at a time, by word arithmetic: no branch or table per digit. Trace ids, span ids and
/// request ids are written with them on every request.
public enum HexDigits {
    /// The 8 lowercase hex digits of `value`, most significant first, as the bytes of a word stored little-endian.
    @inline(__always)
    public static func eight(_ value: UInt32) -> UInt64 {
        // One nibble per byte, the least significant nibble in the lowest byte…
        var spread = UInt64(value)
        spread = (spread | spread << 16) & 0x0000_FFFF_0000_FFFF
        spread = (spread | spread << 8) & 0x00FF_00FF_00FF_00FF
        spread = (spread | spread << 4) & 0x0F0F_0F0F_0F0F_0F0F
        // …then the most significant first, as text reads; a byte's top half is set from 10 up after adding 6.
        let nibbles = spread.byteSwapped
        let letters = ((nibbles &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
        return nibbles &+ 0x3030_3030_3030_3030 &+ letters &* (UInt64(UInt8(ascii: "a")) - UInt64(UInt8(ascii: "0")) - 10)
    }

    /// The 16 digits of `value`, zero-padded, at `offset`.
    @inline(__always)
    public static func write(_ value: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        store(eight(UInt32(truncatingIfNeeded: value >> 32)), into: buffer, at: offset)
        store(eight(UInt32(truncatingIfNeeded: value)), into: buffer, at: offset + 8)
    }

    /// `eight`'s digits at `offset`.
    @inline(__always)
    static func store(_ digits: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        precondition(offset >= 0 && offset + 8 <= buffer.count)
        UnsafeMutableRawBufferPointer(buffer).storeBytes(of: digits.littleEndian, toByteOffset: offset, as: UInt64.self)
    }

    /// The first or the last four of `eight`'s digits at `offset`.
    @inline(__always)
    static func storeHalf(of digits: UInt64, last: Bool, into buffer: UnsafeMutableBufferPointer<UInt8>, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= buffer.count)
        let half = UInt32(truncatingIfNeeded: last ? digits >> 32 : digits)
        UnsafeMutableRawBufferPointer(buffer).storeBytes(of: half.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
}
