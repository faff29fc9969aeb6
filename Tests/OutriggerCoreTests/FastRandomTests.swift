import OutriggerCore
import Testing

@Suite("Request ids (GeneratedRequestID)")
struct FastRandomTests {
    /// The canonical form of a version 4 UUID made of the generator's next two words, spelled out the plain way.
    @Test(arguments: [UInt64(1), 2, 0xDEAD_BEEF, .max])
    func aVersion4UUIDOfTheNextTwoWords(seed: UInt64) {
        var random = FastRandom(seed: seed)
        var words = FastRandom(seed: seed)
        for _ in 0..<100 {
            let high = (words.next() & 0xFFFF_FFFF_FFFF_0FFF) | 0x4000
            let low = (words.next() & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000
            let hex = Array(Self.hex(high) + Self.hex(low))
            let expected = [hex[0..<8], hex[8..<12], hex[12..<16], hex[16..<20], hex[20..<32]].map { String($0) }.joined(separator: "-")
            #expect(GeneratedRequestID(random: &random).text == expected)
        }
    }

    /// Eight digits at a time, against `String(radix:)`: every nibble value in every place, and random words.
    @Test func hexDigitsEightAtATime() {
        var random = FastRandom(seed: 9)
        var words: [UInt64] = [0, 1, .max, 0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210, 0x9A9A_9A9A_A9A9_A9A9]
        for nibble in UInt64(0)...15 { words.append((0..<16).reduce(0) { word, _ in word << 4 | nibble }) }
        for _ in 0..<1000 { words.append(random.next()) }
        for word in words {
            let written = String(unsafeUninitializedCapacity: 18) { buffer in
                buffer[0] = UInt8(ascii: "<")
                HexDigits.write(word, into: buffer, at: 1)
                buffer[17] = UInt8(ascii: ">")
                return 18
            }
            #expect(written == "<" + Self.hex(word) + ">", "\(word)")
        }
    }

    private static func hex(_ word: UInt64) -> String {
        let digits = String(word, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
