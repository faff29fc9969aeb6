/// Durations in config are written `250ms`, `5s`, `2m`, `1h` (also `us`/`µs` and `ns`).
public enum ConfigDuration {
    private static let units: [(suffix: String, nanoseconds: Int64)] = [
        ("ns", 1), ("us", 1_000), ("µs", 1_000), ("ms", 1_000_000),
        ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000),
    ]

    /// Parses `"250ms"` into a `Duration`; nil when the text is not a number followed by a unit.
    public static func parse(_ text: String) -> Duration? {
        // Longest suffix first so "ms" is not read as "s" with a trailing "m".
        for unit in units.sorted(by: { $0.suffix.count > $1.suffix.count }) where text.hasSuffix(unit.suffix) {
            let number = text.dropLast(unit.suffix.count)
            guard !number.isEmpty, number.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
                  let value = Double(number)
            else { continue }
            return .nanoseconds(Int64(value * Double(unit.nanoseconds)))
        }
        return nil
    }

    /// The shortest exact spelling of a duration, the inverse of `parse` (used by `/config_dump`).
    public static func format(_ duration: Duration) -> String {
        let nanoseconds = duration.nanoseconds
        for unit in units.reversed() where unit.suffix != "µs" {
            if nanoseconds != 0, nanoseconds % unit.nanoseconds == 0 {
                return "\(nanoseconds / unit.nanoseconds)\(unit.suffix)"
            }
        }
        return "0s"
    }
}

extension Duration {
    /// Whole nanoseconds, saturating; config durations never approach the limit.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
    }
}
