/// xoshiro256** — a fast, seedable generator for per-event-loop use on the request path (request ids,
/// weighted picks). Not for secrets. Seeded from the system generator in production and fixed in tests.
public struct FastRandom: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        // SplitMix64 expands the seed so that nearby seeds give unrelated streams.
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    public init() {
        var system = SystemRandomNumberGenerator()
        self.init(seed: system.next())
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = rotate(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotate(state.3, 45)
        return result
    }

    @inline(__always)
    private func rotate(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// A random (version 4) UUID in its canonical text form, for `x-request-id`.
    public mutating func uuidString() -> String {
        var high = next()
        var low = next()
        high = (high & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000  // version 4
        low = (low & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000  // RFC 4122 variant
        // `high`'s 16 digits in groups of 8, 4 and 4, then `low`'s in groups of 4 and 12, made eight at a time.
        return String(unsafeUninitializedCapacity: 36) { buffer in
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
            return 36
        }
    }
}
