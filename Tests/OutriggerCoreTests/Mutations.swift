import OutriggerCore

/// Seeded mutations of valid messages for the parsers' differential tests: one to three bytes changed, inserted or
/// removed, a run repeated, or the tail reversed. The same seed gives the same sequence on every run.
struct Mutations {
    private let seeds: [[UInt8]]
    private var random: FastRandom
    private static let interesting: [UInt8] = Array(":; ,\t\r\n0129afAF-\u{0}\u{7f}".utf8) + [0x80, 0xff]

    init(seeds: [String], seed: UInt64) {
        self.seeds = seeds.map { Array($0.utf8) }
        random = FastRandom(seed: seed)
    }

    mutating func next() -> [UInt8] {
        var bytes = seeds[pick(seeds.count)]
        for _ in 0...pick(3) {
            let at = pick(bytes.count + 1)
            switch pick(5) {
            case 0 where at < bytes.count: bytes[at] = Self.interesting[pick(Self.interesting.count)]
            case 1: bytes.insert(Self.interesting[pick(Self.interesting.count)], at: at)
            case 2 where at < bytes.count: bytes.remove(at: at)
            case 3 where at < bytes.count:
                let end = min(bytes.count, at + pick(24))
                bytes.insert(contentsOf: bytes[at..<end], at: at)
            default: bytes[at...].reverse()
            }
        }
        return bytes
    }

    private mutating func pick(_ count: Int) -> Int {
        Int(random.next() % UInt64(count))
    }
}
