/// Byte tests eight bytes at a time, for the checks every field value gets: a word of bytes tested with a few
/// instructions, where a `ByteSet` test costs ~14 a byte. Each test says exactly whether any of the word's bytes is
/// one it looks for (the borrows of the subtraction reach only bytes above one that is).
enum ByteWords {
    static let ones: UInt64 = 0x0101_0101_0101_0101
    static let highs: UInt64 = 0x8080_8080_8080_8080

    /// Whether any byte of `word` is below `limit` (at most 0x80; bytes of 0x80 and up never are).
    @inline(__always)
    static func hasByte(below limit: UInt8, in word: UInt64) -> Bool {
        (word &- ones &* UInt64(limit)) & ~word & highs != 0
    }

    /// Whether any byte of `word` is `byte`.
    @inline(__always)
    static func hasByte(_ byte: UInt8, in word: UInt64) -> Bool {
        let differences = word ^ (ones &* UInt64(byte))
        return (differences &- ones) & ~differences & highs != 0
    }

    /// Whether `test` is true of any of the bytes' words: eight at a time, the last eight read again where they overlap
    /// the word before. Fewer than eight go in one word, some read twice (a test for any byte does not mind): four to
    /// seven as their first four and last four; one to three as the first, middle and last, the rest `filler` (a byte
    /// the test does not look for), where a byte loop cost ~8 instructions a byte.
    @inline(__always)
    static func any(of bytes: UnsafeRawBufferPointer, filler: UInt8, _ test: (UInt64) -> Bool) -> Bool {
        let count = bytes.count
        guard count >= 8 else {
            if count >= 4 {
                return test(UInt64(bytes.loadUnaligned(as: UInt32.self)) | UInt64(bytes.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)) << 32)
            }
            let filled = ones &* UInt64(filler)
            guard count > 0 else { return test(filled) }
            return test(filled & ~0xFF_FFFF | UInt64(bytes[0]) | UInt64(bytes[count / 2]) << 8 | UInt64(bytes[count - 1]) << 16)
        }
        var offset = 0
        while offset + 8 <= bytes.count {
            if test(bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) { return true }
            offset += 8
        }
        return offset < bytes.count && test(bytes.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self))
    }

    /// Whether two buffers hold the same bytes: eight at a time (the last eight read again where they overlap the word
    /// before), four at a time below eight, byte by byte below four.
    @inline(__always)
    static func same(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> Bool {
        let count = left.count
        guard count == right.count else { return false }
        if count >= 8 {
            var offset = 0
            while offset + 8 < count {
                guard left.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == right.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
                else { return false }
                offset += 8
            }
            return left.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) == right.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self)
        }
        if count >= 4 {
            return left.loadUnaligned(as: UInt32.self) == right.loadUnaligned(as: UInt32.self)
                && left.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self) == right.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)
        }
        for index in 0..<count where left[index] != right[index] { return false }
        return true
    }
}
