@testable import OutriggerCore
import Testing

@Suite("Values by id (IDMap): HTTP/2 streams, a pool's connections")
struct IDMapTests {
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
        #expect(map.keys.isEmpty && map.values.isEmpty, "no storage")
        map[3] = 9
        #expect(map[3] == 9 && map.count == 1)
        #expect(map.removeValue(forKey: 0) == nil && map[0] == nil && map.count == 1, "0 is never a key")
    }

    /// Ids whose home is the last slot of an eight-slot table run on at its start; removing the first shifts the
    /// others back across the end.
    @Test func aRunThatWrapsAroundTheEndShiftsBackAcrossIt() {
        var map = StreamIDMap<UInt32>()
        for id in [UInt32(15), 31, 47] { map[id] = id }  // homes: 7, 15 & 7, 23 & 7
        #expect(map.keys.count == 8)
        #expect(map.keys[7] == 15 && map.keys[0] == 31 && map.keys[1] == 47)
        map[15] = nil
        #expect(map.keys[7] == 31 && map.keys[0] == 47 && map.keys[1] == 0)
        #expect(map[31] == 31 && map[47] == 47 && map[15] == nil && map.count == 2)
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

    /// A pool's connection ids: `Int`, rising by one (or more: waiters take ids from the same counter), past 32 bits
    /// in a long-lived process. Consecutive ids each have a slot of their own.
    @Test(arguments: [Int(1), 1 << 40])
    func connectionIdsRisingByOne(base: Int) {
        var map = IDMap<Int, Int>(idsRiseBy: 1)
        var reference: [Int: Int] = [:]
        var random = FastRandom(seed: 5)
        for step in 0..<5_000 {
            let key = base + Int(random.next() % 300)
            if random.next() % 3 == 0 {
                #expect(map.removeValue(forKey: key) == reference.removeValue(forKey: key))
            } else {
                map[key] = step
                reference[key] = step
            }
            #expect(map.count == reference.count && map[key] == reference[key])
        }
        #expect(Set(map.allKeys) == Set(reference.keys))
        var consecutive = IDMap<Int, Int>(idsRiseBy: 1)
        for id in base..<(base + 4) { consecutive[id] = id }
        for id in base..<(base + 4) { #expect(consecutive.keys[id & 7] == id, "\(id) in its own slot, its home") }
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
