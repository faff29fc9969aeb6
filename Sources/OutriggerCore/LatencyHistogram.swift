import Atomics

/// Request durations, in two shapes: Prometheus' fixed `le` buckets, and fine log-linear buckets
/// (8 per power of two of microseconds, ≤ 12.5 % error) from which p50/p90/p99/p99.9 are read.
///
/// Sharded by event loop so that recording takes no locked instruction: each loop is the one writer of its own
/// shard and adds with a plain load and store; anything else that records (a thread outside the loops, a test)
/// shares shard 0 with atomic read-modify-writes. Readers sum the shards with atomic loads, so a snapshot taken
/// while loops record is at most a few samples behind, never torn within a counter.
public final class LatencyHistogram: @unchecked Sendable {
    private typealias Storage = UnsafeAtomic<Int>.Storage
    // @unchecked: `slots` is written only as described above (one writer per loop shard, atomics on shard 0) and
    // read only with atomic loads; it is allocated in init and freed in deinit.

    /// Upper bounds in seconds of the Prometheus buckets (`+Inf` is implied).
    /// Up to 120 s, so that half of a long route timeout (the latency alert's threshold) is still below the top bucket.
    public static let prometheusBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
    private static let subBucketBits = 3
    /// Samples above this (2^40 µs, about 12.7 days) count in the last fine bucket.
    private static let largestFineValue: UInt64 = (1 << 40) - 1
    static let fineBucketCount = fineIndex(largestFineValue) + 1

    /// One shard's slots: the sum in microseconds, the Prometheus buckets (`+Inf` last), the fine buckets (the
    /// count is the buckets' sum); padded to whole cache lines so that two loops never write the same line.
    private static let sumSlot = 0
    private static let coarseSlots = 1
    private static let fineSlots = coarseSlots + prometheusBounds.count + 1
    private static let slotsPerCacheLine = 64 / MemoryLayout<Storage>.stride
    private static let shardStride = (fineSlots + fineBucketCount + slotsPerCacheLine - 1) / slotsPerCacheLine * slotsPerCacheLine

    private typealias Slot = UnsafeMutablePointer<Storage>
    private let slots: Slot
    private let loopShards: Int
    /// The tables and the shard layout `record` reads, held: a `static let` read is a once-check each time, and the
    /// tables' arrays a bounds check (5 records a request, ~80 instructions each).
    private let coarseIndexOfFine = BucketTables.shared.coarseIndexOfFine
    private let boundsMicros = BucketTables.shared.boundsMicros
    private let boundCount = LatencyHistogram.prometheusBounds.count
    private let shardStride = LatencyHistogram.shardStride
    private let fineSlots = LatencyHistogram.fineSlots

    /// `loops`: how many event loops record with `record(microseconds:loop:)`, each into a shard of its own.
    public init(loops: Int = 0) {
        loopShards = max(loops, 0)
        let count = (loopShards + 1) * Self.shardStride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Storage>.stride, alignment: 64)
        slots = raw.bindMemory(to: Storage.self, capacity: count)
        slots.initialize(repeating: Storage(0), count: count)
    }

    deinit {
        slots.deinitialize(count: (loopShards + 1) * Self.shardStride)
        slots.deallocate()
    }

    /// Records one sample on event loop `loop` (its index in the group), the only writer of that loop's shard.
    @inline(__always)
    public func record(microseconds: UInt64, loop: Int) {
        guard loop >= 0 && loop < loopShards else { return record(microseconds: microseconds) }
        let shard = slots + (loop + 1) * shardStride
        let (coarse, fine) = buckets(of: microseconds)
        Self.addAsOnlyWriter(shard + Self.sumSlot, Int(clamping: microseconds))
        Self.addAsOnlyWriter(shard + Self.coarseSlots + coarse, 1)
        Self.addAsOnlyWriter(shard + fineSlots + fine, 1)
    }

    /// Records one sample from anywhere (into the shared shard, with atomic read-modify-writes).
    public func record(microseconds: UInt64) {
        let (coarse, fine) = buckets(of: microseconds)
        UnsafeAtomic<Int>(at: slots + Self.sumSlot).wrappingIncrement(by: Int(clamping: microseconds), ordering: .relaxed)
        UnsafeAtomic<Int>(at: slots + Self.coarseSlots + coarse).wrappingIncrement(ordering: .relaxed)
        UnsafeAtomic<Int>(at: slots + fineSlots + fine).wrappingIncrement(ordering: .relaxed)
    }

    @inline(__always)
    private static func addAsOnlyWriter(_ slot: Slot, _ amount: Int) {
        let value = UnsafeAtomic<Int>(at: slot)
        value.store(value.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    /// The Prometheus bucket and the fine bucket of a sample: the fine one by bit arithmetic, the Prometheus one
    /// from the fine one's table entry, moved up past any bound that falls inside the fine bucket.
    @inline(__always)
    private func buckets(of microseconds: UInt64) -> (coarse: Int, fine: Int) {
        let fine = Self.fineIndex(min(microseconds, Self.largestFineValue))
        var coarse = coarseIndexOfFine[fine]
        while coarse < boundCount && microseconds > boundsMicros[coarse] { coarse += 1 }
        return (coarse, fine)
    }

    static func fineIndex(_ value: UInt64) -> Int {
        if value < (1 << subBucketBits) { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount
        let subBucket = Int((value >> UInt64(magnitude - subBucketBits)) & ((1 << subBucketBits) - 1))
        return ((magnitude - subBucketBits + 1) << subBucketBits) + subBucket
    }

    /// The largest value that lands in fine bucket `index`.
    static func fineUpperBound(_ index: Int) -> UInt64 {
        if index < (1 << subBucketBits) { return UInt64(index) }
        let magnitude = (index >> subBucketBits) + subBucketBits - 1
        let subBucket = UInt64(index & ((1 << subBucketBits) - 1))
        let base = UInt64(1) << UInt64(magnitude)
        let width = UInt64(1) << UInt64(magnitude - subBucketBits)
        return base + (subBucket + 1) * width - 1
    }

    public struct Snapshot: Sendable {
        public var count: Int
        public var sumSeconds: Double
        /// Cumulative counts at each `prometheusBounds` entry, then `+Inf`.
        public var cumulativeBuckets: [Int]
        fileprivate var fine: [Int]

        /// The value (in seconds) below which `quantile` of the samples fall; 0 with no samples.
        public func quantile(_ quantile: Double) -> Double {
            // The fine buckets' own total: read while loops record, it may differ from `count` by a sample or two.
            let total = fine.reduce(0, +)
            guard total > 0 else { return 0 }
            let rank = Int((quantile * Double(total)).rounded(.up))
            var seen = 0
            for (index, bucketCount) in fine.enumerated() {
                seen += bucketCount
                if seen >= max(rank, 1) { return Double(LatencyHistogram.fineUpperBound(index)) / 1_000_000 }
            }
            return Double(LatencyHistogram.fineUpperBound(fine.count - 1)) / 1_000_000
        }
    }

    /// Every shard summed. The count is the Prometheus buckets' sum, so they always add up to it.
    public func snapshot() -> Snapshot {
        var coarse = [Int](repeating: 0, count: Self.prometheusBounds.count + 1)
        var fine = [Int](repeating: 0, count: Self.fineBucketCount)
        var sumMicros = 0
        for shardIndex in 0...loopShards {
            let shard = slots + shardIndex * Self.shardStride
            sumMicros &+= UnsafeAtomic<Int>(at: shard + Self.sumSlot).load(ordering: .relaxed)
            for index in coarse.indices { coarse[index] &+= UnsafeAtomic<Int>(at: shard + Self.coarseSlots + index).load(ordering: .relaxed) }
            for index in fine.indices { fine[index] &+= UnsafeAtomic<Int>(at: shard + Self.fineSlots + index).load(ordering: .relaxed) }
        }
        var running = 0
        let cumulative = coarse.map { bucket -> Int in
            running += bucket
            return running
        }
        return Snapshot(count: running, sumSeconds: Double(sumMicros) / 1_000_000, cumulativeBuckets: cumulative, fine: fine)
    }
}

/// `LatencyHistogram`'s tables as buffers, made once and never freed: the Prometheus bounds in microseconds, and the
/// Prometheus bucket of each fine bucket's smallest value (where `record` starts looking).
private struct BucketTables: @unchecked Sendable {
    // @unchecked: written once in init, then only read.
    static let shared = BucketTables()

    let boundsMicros: UnsafePointer<UInt64>
    let coarseIndexOfFine: UnsafePointer<Int>

    private init() {
        let bounds = LatencyHistogram.prometheusBounds.map { UInt64($0 * 1_000_000) }
        let coarse = (0..<LatencyHistogram.fineBucketCount).map { index in
            let smallest = index == 0 ? 0 : LatencyHistogram.fineUpperBound(index - 1) + 1
            return bounds.firstIndex { smallest <= $0 } ?? bounds.count
        }
        let boundsBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: bounds.count)
        boundsBuffer.initialize(from: bounds, count: bounds.count)
        let coarseBuffer = UnsafeMutablePointer<Int>.allocate(capacity: coarse.count)
        coarseBuffer.initialize(from: coarse, count: coarse.count)
        (boundsMicros, coarseIndexOfFine) = (UnsafePointer(boundsBuffer), UnsafePointer(coarseBuffer))
    }
}
