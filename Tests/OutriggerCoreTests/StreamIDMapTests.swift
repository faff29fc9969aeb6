import OutriggerCore
import Testing

@Suite("Streams by id (StreamIDMap)")
struct StreamIDMapTests {
    /// Random inserts, updates and removals, checked against a Dictionary after every step: the table grows, and its
    /// removals shift runs back, runs that wrap around its end too. Ids from 200, so that they come back: a
    /// connection's own (odd, rising by two: each its own slot), or scattered over 32 bits (slots collide).
    @Test(arguments: [(1, false), (2, false), (3, true), (4, true)])
    func behavesLikeADictionary(seed: UInt64, scattered: Bool) {
        var map = StreamIDMap<Int>()
        var reference: [UInt32: Int] = [:]
        var random = FastRandom(seed: seed)
        func id(_ draw: UInt64) -> UInt32 {
            scattered ? UInt32(truncatingIfNeeded: (draw % 200) &* 0x9E37_79B1) | 1 : UInt32(draw % 200) * 2 + 1
        }
        for step in 0..<20_000 {
            let key = id(random.next())
            switch random.next() % 3 {
            case 0, 1:
                map[key] = step
                reference[key] = step
            default:
                #expect(map.removeValue(forKey: key) == reference.removeValue(forKey: key))
            }
            #expect(map.count == reference.count)
            let probe = id(random.next())
            #expect(map[probe] == reference[probe])
        }
        #expect(Set(map.allKeys) == Set(reference.keys))
        #expect(map.allValues.sorted() == reference.values.sorted())
    }

    @Test func anEmptyMapHasNoStorageAndAnswersEverything() {
        var map = StreamIDMap<Int>()
        #expect(map[1] == nil)
        #expect(map.removeValue(forKey: 1) == nil)
        map[3] = nil
        #expect(map.isEmpty && map.allKeys.isEmpty && map.allValues.isEmpty)
        map[3] = 9
        #expect(map[3] == 9 && map.count == 1)
    }

    @Test func risingIdsAsAConnectionOpensThem() {
        var map = StreamIDMap<UInt32>()
        for id in stride(from: UInt32(1), through: 4_001, by: 2) { map[id] = id }
        #expect(map.count == 2_001)
        for id in stride(from: UInt32(1), through: 4_001, by: 4) { map[id] = nil }
        #expect(map.count == 1_000)
        for id in stride(from: UInt32(1), through: 4_001, by: 2) {
            #expect(map[id] == (id % 4 == 1 ? nil : id))
        }
    }

    @Test func updateEachChangesEveryValueAndStopsAtAnError() {
        struct TooLarge: Error {}
        var map = StreamIDMap<Int>()
        for id in [UInt32(1), 3, 5] { map[id] = Int(id) }
        map.updateEach { _, value in value += 10 }
        #expect([map[1], map[3], map[5]] == [11, 13, 15])
        #expect(throws: TooLarge.self) {
            try map.updateEach { id, _ throws(TooLarge) in if id == 3 { throw TooLarge() } }
        }
        #expect(map[7] == nil)
        map[7] = nil
        #expect(map.count == 3)
    }
}
