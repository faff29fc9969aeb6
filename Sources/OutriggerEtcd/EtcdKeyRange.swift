/// A range of etcd keys, `[key, end)` as etcd's API takes it: one key (no end), every key under a prefix (the end
/// is the prefix with its last byte raised), or what is left of a range after a key already read.
public struct EtcdKeyRange: Sendable, Hashable {
    public var key: [UInt8]
    /// Empty: `key` alone. `[0]`: every key from `key` on.
    public var end: [UInt8]

    public init(key: [UInt8], end: [UInt8]) {
        self.key = key
        self.end = end
    }

    public static func key(_ key: String) -> EtcdKeyRange {
        EtcdKeyRange(key: Array(key.utf8), end: [])
    }

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: String) -> EtcdKeyRange {
        let key = Array(prefix.utf8)
        return EtcdKeyRange(key: key, end: prefixEnd(key))
    }

    /// The first key after every key that starts with `prefix`: the prefix up to its last byte below 0xff, that
    /// byte raised; `[0]` (the end of the keyspace) when every byte is 0xff or the prefix is empty.
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }

    /// A key prefix as given (`/outrigger` or `/outrigger/`) without its trailing slash, for keys under it.
    public static func trimmed(_ prefix: String) -> String {
        prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
    }

    /// `number` in `digits` digits, zero-padded: keys named so sort as their numbers do.
    public static func ordered(_ number: some BinaryInteger, digits: Int) -> String {
        let text = String(number)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    /// The rest of the range after `key` (the last one a page held): from the key's immediate successor.
    public func after(_ key: [UInt8]) -> EtcdKeyRange {
        EtcdKeyRange(key: key + [0], end: end)
    }
}
