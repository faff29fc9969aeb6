/// Integers as decimal digits, written in place from the last digit back, with no `String` in between (the access
/// log's numbers, and the proxy's own numeric fields: `String(value)` takes a generic path, ~390 instructions).
public enum DecimalText {
    /// How many digits `value` has (at least one).
    static func digitCount(_ value: UInt64) -> Int {
        var count = 1
        var rest = value / 10
        while rest > 0 {
            count += 1
            rest /= 10
        }
        return count
    }

    /// `value`'s digits at the end of `digits`, zeros before them: `digits` is filled exactly.
    static func write(_ value: UInt64, into digits: UnsafeMutableBufferPointer<UInt8>) {
        var rest = value
        for index in digits.indices.reversed() {
            digits[index] = UInt8(truncatingIfNeeded: rest % 10) &+ UInt8(ascii: "0")
            rest /= 10
        }
    }

    /// `value` as `String(value)` writes it. Up to 15 digits fit in the string itself, with nothing allocated.
    public static func string(_ value: Int64) -> String {
        guard value >= 0 else { return String(value) }
        let count = digitCount(UInt64(value))
        return String(unsafeUninitializedCapacity: count) { buffer in
            write(UInt64(value), into: buffer)
            return count
        }
    }
}
