import OutriggerCore
import Testing

@Suite("Request ids (FastRandom.uuidString)")
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
            #expect(random.uuidString() == expected)
        }
    }

    private static func hex(_ word: UInt64) -> String {
        let digits = String(word, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
