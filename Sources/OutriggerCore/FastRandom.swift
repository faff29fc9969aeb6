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
        // Written from the end: 12 digits of `low`, a dash, 4 more, a dash, then `high`'s 16 in groups of 4, 4 and 8.
        return String(unsafeUninitializedCapacity: 36) { buffer in
            var position = 35
            func put(_ value: UInt64, digits: Int) {
                var value = value
                for _ in 0..<digits {
                    let nibble = UInt8(truncatingIfNeeded: value) & 0xF
                    buffer[position] = nibble &+ (nibble < 10 ? UInt8(ascii: "0") : UInt8(ascii: "a") &- 10)
                    value >>= 4
                    position &-= 1
                }
                if position >= 0 {
                    buffer[position] = UInt8(ascii: "-")
                    position &-= 1
                }
            }
            put(low, digits: 12)
            put(low >> 48, digits: 4)
            put(high, digits: 4)
            put(high >> 16, digits: 4)
            put(high >> 32, digits: 8)
            return 36
        }
    }
}
