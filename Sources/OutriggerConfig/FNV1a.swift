/// FNV-1a, 64 bits: the content hash behind resource digests, xDS versions and the decode memo's keys, and the
/// HPACK encoder's table lookups (inlinable: a request's header fields are hashed in another module).
@frozen
public struct FNV1a: Sendable {
    @usableFromInline var state: UInt64 = 0xcbf2_9ce4_8422_2325

    @inlinable public init() {}

    @inlinable public var value: UInt64 { state }

    @inlinable public mutating func add(_ bytes: some Sequence<UInt8>) {
        for byte in bytes { add(byte: byte) }
    }

    @inlinable public mutating func add(byte: UInt8) {
        state = (state ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
    }

    /// A string's UTF-8 bytes, read in place (a small string's from a copy on the stack).
    @inlinable public mutating func add(utf8Of string: String) {
        var string = string
        string.withUTF8 { bytes in
            for byte in bytes { add(byte: byte) }
        }
    }

    @inlinable public static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hasher = FNV1a()
        hasher.add(bytes)
        return hasher.value
    }
}
