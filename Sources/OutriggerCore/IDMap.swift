/// Values by integer id, for lookups on a hot path: open addressing with linear probing over a power-of-two table,
/// the id itself as the hash (shifted by `idStep`'s bits: ids that rise by a fixed step fill consecutive slots),
/// deletion by shifting the run after the hole back. `Dictionary` and `Set` hash each id with a seeded SipHash:
/// ~110–180 instructions a lookup. Id 0 is never a key. Inlinable: used from another module, unspecialized generic
/// code cost more than the hashing it saves.
///
/// - HTTP/2 streams by id (`StreamIDMap`): ten lookups a proxied HTTP/2 request; a connection's ids rise by two, and
///   0 is the connection itself.
/// - An HTTP/1.1 pool's connections by id: a lease and a release each look one up.
public struct IDMap<Key: FixedWidthInteger, Value> {
    @usableFromInline var keys: [Key]
    @usableFromInline var values: [Value?]
    @usableFromInline var stored = 0
    /// log2 of the step the ids rise by.
    @usableFromInline let stepShift: Int

    /// How many keys it holds.
    @inlinable
    public var count: Int { stored }

    /// Empty, without storage until the first key (an idle connection's table costs nothing). `idsRiseBy`: the step
    /// between consecutive ids, a power of two.
    @inlinable
    public init(idsRiseBy step: Int) {
        precondition(step > 0 && step & (step - 1) == 0, "a power of two")
        keys = []
        values = []
        stepShift = step.trailingZeroBitCount
    }

    @inlinable
    public var isEmpty: Bool { stored == 0 }

    @inlinable
    var mask: Int { keys.count - 1 }

    @inlinable @inline(__always)
    func home(_ key: Key) -> Int { Int(truncatingIfNeeded: key >> stepShift) & mask }

    /// The slot holding `key`, or the empty slot where it would go.
    @inlinable @inline(__always)
    func slot(of key: Key) -> (index: Int, found: Bool) {
        var index = home(key)
        while true {
            let occupant = keys[index]
            if occupant == key { return (index, true) }
            if occupant == 0 { return (index, false) }
            index = (index + 1) & mask
        }
    }

    @inlinable
    public subscript(key: Key) -> Value? {
        get {
            guard !keys.isEmpty else { return nil }
            let (index, found) = slot(of: key)
            return found ? values[index] : nil
        }
        set {
            precondition(key != 0, "0 is never a key")
            if keys.isEmpty {
                guard newValue != nil else { return }
                grow()
            }
            let (index, found) = slot(of: key)
            switch (found, newValue) {
            case (true, let value?): values[index] = value
            case (true, nil): remove(at: index)
            case (false, let value?): insert(key, value, at: index)
            case (false, nil): break
            }
        }
    }

    /// - Returns: the value removed, if `key` was there.
    @inlinable @discardableResult
    public mutating func removeValue(forKey key: Key) -> Value? {
        // 0 would match an empty slot: it is never a key.
        guard key != 0, !keys.isEmpty else { return nil }
        let (index, found) = slot(of: key)
        guard found else { return nil }
        let value = values[index]
        remove(at: index)
        return value
    }

    /// Changes every value in place (in no particular order); stops at the first error.
    @inlinable
    public mutating func updateEach<Failure: Error>(_ body: (Key, inout Value) throws(Failure) -> Void) throws(Failure) {
        for index in keys.indices where keys[index] != 0 {
            try body(keys[index], &values[index]!)
        }
    }

    /// The keys, in no particular order.
    @inlinable
    public var allKeys: [Key] { keys.filter { $0 != 0 } }

    /// The values, in no particular order.
    @inlinable
    public var allValues: [Value] { values.compactMap { $0 } }

    @inlinable
    mutating func insert(_ key: Key, _ value: Value, at index: Int) {
        // At most half full: probes stay short.
        if (stored + 1) * 2 > keys.count {
            grow()
            self[key] = value
            return
        }
        keys[index] = key
        values[index] = value
        stored += 1
    }

    @inlinable
    mutating func grow() {
        let oldKeys = keys
        var oldValues = values
        let capacity = max(8, oldKeys.count * 2)
        keys = Array(repeating: 0, count: capacity)
        values = Array(repeating: nil, count: capacity)
        stored = 0
        for index in oldKeys.indices where oldKeys[index] != 0 {
            let (slot, _) = slot(of: oldKeys[index])
            keys[slot] = oldKeys[index]
            values[slot] = oldValues[index].take()
            stored += 1
        }
    }

    /// Empties `index` and moves back the entries after it that probed past it (no tombstones: lookups never slow).
    @inlinable
    mutating func remove(at index: Int) {
        var hole = index
        var next = (index + 1) & mask
        while keys[next] != 0 {
            let wanted = home(keys[next])
            // The entry at `next` may fill the hole when its home is not in (hole, next] cyclically.
            let distanceToNext = (next - wanted) & mask
            let distanceToHole = (hole - wanted) & mask
            if distanceToHole < distanceToNext {
                keys[hole] = keys[next]
                values[hole] = values[next].take()
                hole = next
            }
            next = (next + 1) & mask
        }
        keys[hole] = 0
        values[hole] = nil
        stored -= 1
    }
}

extension IDMap: Sendable where Key: Sendable, Value: Sendable {}

/// HTTP/2 streams by id.
public typealias StreamIDMap<Value> = IDMap<UInt32, Value>

extension IDMap where Key == UInt32 {
    /// A connection's streams: their ids rise by two.
    @inlinable
    public init() {
        self.init(idsRiseBy: 2)
    }
}
