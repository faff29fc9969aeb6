/// Two counts over a sliding window of whole seconds (one bucket per second, reused as time moves on):
/// requests and retries for a retry budget, successes and failures for a breaker.
public struct SlidingWindowCounts: Sendable {
    private var seconds: [UInt64]
    private var first: [Int]
    private var second: [Int]

    public init(windowSeconds: Int) {
        let count = max(windowSeconds, 1)
        seconds = Array(repeating: .max, count: count)
        first = Array(repeating: 0, count: count)
        second = Array(repeating: 0, count: count)
    }

    public mutating func add(first a: Int = 0, second b: Int = 0, now: UInt64) {
        let index = bucket(now)
        first[index] += a
        second[index] += b
    }

    /// Both counts over the window ending at `now`.
    public func totals(now: UInt64) -> (first: Int, second: Int) {
        let current = now / 1_000_000_000
        var a = 0, b = 0
        for index in seconds.indices where seconds[index] != .max && current >= seconds[index] && current - seconds[index] < UInt64(seconds.count) {
            a += first[index]
            b += second[index]
        }
        return (a, b)
    }

    public mutating func clear() {
        for index in seconds.indices { seconds[index] = .max }
    }

    private mutating func bucket(_ now: UInt64) -> Int {
        let current = now / 1_000_000_000
        let index = Int(current % UInt64(seconds.count))
        if seconds[index] != current {
            seconds[index] = current
            first[index] = 0
            second[index] = 0
        }
        return index
    }
}
