/// A set of bytes, a bit each (byte b is bit b % 64 of word b / 64), for the per-byte checks of the parsers. Its
/// sets are written out as constants: reading one costs no lazy initialisation (a `static let` table was a
/// `swift_once` check a byte) and no bounds check. `ByteSetTests` checks every byte of each against its rule.
struct ByteSet {
    let words: (UInt64, UInt64, UInt64, UInt64)

    @inline(__always)
    func contains(_ byte: UInt8) -> Bool {
        let word = switch byte >> 6 {
        case 0: words.0
        case 1: words.1
        case 2: words.2
        default: words.3
        }
        return word & (1 << UInt64(byte & 63)) != 0
    }

    /// Whether any of the bytes is in the set.
    @inline(__always)
    func containsAny(of bytes: UnsafeRawBufferPointer) -> Bool {
        for byte in bytes where contains(byte) { return true }
        return false
    }

    /// tchar (RFC 9110 §5.6.2): `A`–`Z`, `a`–`z`, `0`–`9` and ``!#$%&'*+-.^_`|~``.
    static var token: ByteSet { ByteSet(words: (0x03FF_6CFA_0000_0000, 0x57FF_FFFF_C7FF_FFFE, 0, 0)) }
    /// Not tchar, or an upper-case letter (HTTP/2's field names are tchar in lower case).
    static var notLowercaseToken: ByteSet { ByteSet(words: (0xFC00_9305_FFFF_FFFF, 0xA800_0000_3FFF_FFFF, .max, .max)) }
}

/// A byte set as 256 flags, one load a byte: for the parsers' longest per-byte loop, a header name's bytes, where
/// the set's bit test cost ~14 instructions a byte. Made once and never freed; read through a local copy of the
/// table (a `static let` read in the loop is a lazy-initialisation check a byte).
struct ByteTable: @unchecked Sendable {
    private let flags: UnsafePointer<Bool>

    init(_ set: ByteSet) {
        let flags = UnsafeMutablePointer<Bool>.allocate(capacity: 256)
        for byte in 0...255 { flags[byte] = set.contains(UInt8(byte)) }
        self.flags = UnsafePointer(flags)
    }

    @inline(__always)
    func contains(_ byte: UInt8) -> Bool {
        flags[Int(byte)]
    }

    /// tchar (RFC 9110 §5.6.2), as `ByteSet.token`.
    static let token = ByteTable(.token)
}
