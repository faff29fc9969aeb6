import NIOCore

/// Encodes HTTP/2 header blocks (RFC 7541) for one connection, looking fields up in hash tables instead of scanning
/// the dynamic table field by field as NIOHPACK's encoder does (its case-insensitive scan was the largest single cost
/// of an HTTP/2 request in the profile). The tables are its own (`PlaceTable`, hashed by `FieldHasher`: one pass for a
/// name and its field, eight bytes at a time, where `Dictionary` hashed each string with a seeded SipHash). Strings go
/// as plain octets, not Huffman-coded: fewer cycles, a few more bytes.
///
/// - A field in the static table with its value is one index; one in the dynamic table too.
/// - Otherwise it is a literal, its name indexed when either table has it, and it enters the dynamic table — unless
///   the caller says not to, or its value is new with every message (`x-request-id`, trace ids, `date`), where an
///   entry would only push out ones that repeat.
/// - The peer's SETTINGS_HEADER_TABLE_SIZE bounds the table: a change is announced at the next block's start (the
///   smallest size since the last block first, when it shrank and grew again; §4.2).
public struct HPACKBlockEncoder {
    /// How a field may enter the dynamic table (NIOHPACK's `HPACKIndexing`, without the import).
    public enum Indexing: Sendable { case indexable, nonIndexable, neverIndexed }

    /// The table size used when the peer allows it (RFC 7541's default, and NIOHPACK's).
    public static let defaultTableSize = 4096

    private struct Field {
        var name: String
        var value: String
    }

    private var entries: [Field] = []
    /// `entries[0]`'s insertion number; `entries.count` past it is the next one's.
    private var firstNumber = 0
    private var liveFrom = 0
    /// Where a field, or a name, is: a dynamic entry's insertion number (its newest), or minus its static index. One
    /// lookup finds either; the static ones are never evicted, and a name in the static table keeps its static index.
    private var byField = HPACKBlockEncoder.staticFields
    private var byName = HPACKBlockEncoder.staticNames
    private var size = 0
    public private(set) var maxSize: Int
    private var pendingSmallest: Int?
    private var pendingSizeUpdate = false

    public init(maxSize: Int = HPACKBlockEncoder.defaultTableSize) {
        self.maxSize = maxSize
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE: the table is at most this, or the default if that is smaller.
    public mutating func peerAllows(tableSize: Int) {
        let newSize = min(tableSize, Self.defaultTableSize)
        pendingSmallest = min(pendingSmallest ?? newSize, newSize)
        pendingSizeUpdate = true
        maxSize = newSize
        evict(toFit: 0, limit: min(maxSize, pendingSmallest ?? maxSize))
    }

    /// Starts a header block: a table size change not yet announced is, first.
    public mutating func startBlock(into buffer: inout ByteBuffer) {
        guard pendingSizeUpdate else { return }
        if let smallest = pendingSmallest, smallest < maxSize {
            Self.writeInteger(smallest, prefix: 5, bits: 0x20, into: &buffer)
        }
        Self.writeInteger(maxSize, prefix: 5, bits: 0x20, into: &buffer)
        pendingSmallest = nil
        pendingSizeUpdate = false
    }

    public mutating func encode(name: String, value: String, indexing: Indexing = .indexable, into buffer: inout ByteBuffer) {
        let indexed = indexing == .indexable && !Self.isNewEveryMessage(name)
        // A value is hashed only when the field may be in, or enter, the table.
        let (nameHash, fieldHash) = Self.hashes(name: name, value: indexed ? value : nil)
        if indexed {
            if let place = byField.place(fieldHash, where: { let other = self.field(at: $0); return other.value == value && other.name == name }) {
                Self.writeInteger(index(of: place), prefix: 7, bits: 0x80, into: &buffer)
                return
            }
        }
        let nameIndex = byName.place(nameHash, where: { self.field(at: $0).name == name }).map(index(of:)) ?? 0
        switch (indexed, indexing) {
        case (true, _): Self.writeInteger(nameIndex, prefix: 6, bits: 0x40, into: &buffer)  // literal, incremental indexing
        case (false, .neverIndexed): Self.writeInteger(nameIndex, prefix: 4, bits: 0x10, into: &buffer)
        case (false, _): Self.writeInteger(nameIndex, prefix: 4, bits: 0x00, into: &buffer)  // literal, without indexing
        }
        if nameIndex == 0 { Self.writeString(name, into: &buffer) }
        Self.writeString(value, into: &buffer)
        if indexed { insert(Field(name: name, value: value), (nameHash, fieldHash)) }
    }

    /// A name's hash, and its field's: the value's bytes hashed on from the name's (0 without a value). Every lookup,
    /// insertion and eviction hashes here, so the tables always agree.
    private static func hashes(name: String, value: String?) -> (name: UInt64, field: UInt64) {
        var hasher = FieldHasher()
        hasher.add(utf8Of: name)
        let nameHash = hasher.finished
        guard let value else { return (nameHash, 0) }
        hasher.add(utf8Of: value)
        return (nameHash, hasher.finished)
    }

    private static func hashes(of field: Field) -> (name: UInt64, field: UInt64) {
        hashes(name: field.name, value: field.value)
    }

    /// The field at a place in `byField` or `byName`: a static one (minus its index), or a dynamic entry's number.
    private func field(at place: Int) -> Field {
        Self.field(at: place, entries, firstNumber)
    }

    private static func field(at place: Int, _ entries: [Field], _ firstNumber: Int) -> Field {
        place < 0 ? staticFieldsInOrder[-place - 1] : entries[place - firstNumber]
    }

    // MARK: The dynamic table (RFC 7541 §4)

    /// The index of a place in `byField` or `byName`: a static index, or a dynamic entry's now (the newest is 62, §2.3.3).
    private func index(of place: Int) -> Int {
        place < 0 ? -place : Self.staticCount + (firstNumber + entries.count - 1 - place) + 1
    }

    private mutating func insert(_ field: Field, _ hashes: (name: UInt64, field: UInt64)) {
        let entrySize = field.name.utf8.count + field.value.utf8.count + 32
        evict(toFit: entrySize, limit: maxSize)
        // An entry larger than the table empties it and is not added (§4.4): the peer's decoder does the same.
        guard entrySize <= maxSize else { return }
        let number = firstNumber + entries.count
        entries.append(field)
        // The newest copy of a field or name is the one found; a name in the static table keeps its static index.
        // The tables' comparisons read the entries from copies (the tables change meanwhile, and are not copied).
        let (entries, firstNumber) = (entries, firstNumber)
        byField.set(hashes.field, to: number) {
            let other = Self.field(at: $0, entries, firstNumber)
            return other.value == field.value && other.name == field.name
        }
        byName.set(hashes.name, to: number) { Self.field(at: $0, entries, firstNumber).name == field.name }
        size += entrySize
    }

    private mutating func evict(toFit entrySize: Int, limit: Int) {
        while size + entrySize > limit, liveFrom < entries.count {
            let oldest = entries[liveFrom]
            let number = firstNumber + liveFrom
            size -= oldest.name.utf8.count + oldest.value.utf8.count + 32
            let hashes = Self.hashes(of: oldest)
            byField.remove(hashes.field, place: number)
            byName.remove(hashes.name, place: number)
            liveFrom += 1
        }
        // The evicted slots go once they are half the array.
        if liveFrom > 32, liveFrom * 2 > entries.count {
            entries.removeFirst(liveFrom)
            firstNumber += liveFrom
            liveFrom = 0
        }
    }

    // MARK: Wire forms (RFC 7541 §5)

    private static func writeInteger(_ value: Int, prefix: Int, bits: UInt8, into buffer: inout ByteBuffer) {
        let limit = (1 << prefix) - 1
        if value < limit {
            buffer.writeInteger(bits | UInt8(value))
            return
        }
        buffer.writeInteger(bits | UInt8(limit))
        var rest = value - limit
        while rest >= 128 {
            buffer.writeInteger(UInt8(rest & 0x7F | 0x80))
            rest >>= 7
        }
        buffer.writeInteger(UInt8(rest))
    }

    /// A string literal, not Huffman-coded (H = 0).
    private static func writeString(_ string: String, into buffer: inout ByteBuffer) {
        writeInteger(string.utf8.count, prefix: 7, bits: 0, into: &buffer)
        buffer.writeString(string)
    }

    // MARK: The static table (RFC 7541 Appendix A)

    /// Fields whose value is new with every message: `x-request-id`, trace ids, `date`. Told by length first, without
    /// hashing.
    private static func isNewEveryMessage(_ name: String) -> Bool {
        switch name.utf8.count {
        case 2: name == "b3"
        case 4: name == "date"
        case 10: name == "tracestate"
        case 11: name == "traceparent" || name == "x-b3-spanid"
        case 12: name == "x-request-id" || name == "x-b3-traceid"
        case 17: name == "x-b3-parentspanid"
        default: false
        }
    }

    private static let staticTable: [(String, String)] = [
        (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
        (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
        (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
        ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
        ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""), ("cache-control", ""),
        ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
        ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""), ("date", ""),
        ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""), ("if-match", ""),
        ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""), ("if-unmodified-since", ""),
        ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""), ("proxy-authenticate", ""),
        ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""),
        ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
        ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
    ]
    static let staticCount = staticTable.count

    private static let staticFieldsInOrder = staticTable.map { Field(name: $0.0, value: $0.1) }

    /// Fields with a value in the static table, and names by their first index, each as minus its index.
    private static let staticFields: PlaceTable = {
        var fields = PlaceTable()
        for (offset, field) in staticFieldsInOrder.enumerated() where !field.value.isEmpty {
            fields.set(hashes(of: field).field, to: -(offset + 1)) { _ in false }
        }
        return fields
    }()

    private static let staticNames: PlaceTable = {
        var names = PlaceTable()
        for (offset, field) in staticFieldsInOrder.enumerated() {
            // A name's first index stays (a static place is never replaced).
            names.set(hashes(of: field).name, to: -(offset + 1)) { staticFieldsInOrder[-$0 - 1].name == field.name }
        }
        return names
    }()
}

/// The tables' hash: a name's bytes, then its value's, eight at a time (a multiply and a fold per word, where FNV-1a
/// took a multiply per byte), each string's length mixed in after it, so "ab" + "c" and "a" + "bc" differ. The tables
/// live in one process: it needs speed and spread in the low bits (the slot), not stability.
private struct FieldHasher {
    private var state: UInt64 = 0x243F_6A88_85A3_08D3

    mutating func add(utf8Of string: String) {
        var string = string
        string.withUTF8 { add(UnsafeRawBufferPointer($0)) }
    }

    private mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset + 8 <= bytes.count {
            mix(bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            offset += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while offset < bytes.count {
            tail |= UInt64(bytes[offset]) << shift
            shift += 8
            offset += 1
        }
        mix(tail)
        mix(UInt64(bytes.count))
    }

    private mutating func mix(_ word: UInt64) {
        state = (state ^ word) &* 0x9E37_79B9_7F4A_7C15
        state ^= state >> 29
    }

    /// The bits folded down (MurmurHash3's finaliser), so the low ones, which pick a slot, depend on all of them.
    var finished: UInt64 {
        var hash = state
        hash ^= hash >> 33
        hash = hash &* 0xFF51_AFD7_ED55_8CCD
        hash ^= hash >> 33
        return hash
    }
}

/// Where fields (or names) are, by their hash: open addressing with linear probing, a fixed 512 slots. It never fills:
/// a table of at most 4,096 bytes holds at most 128 entries (32 bytes each at least), beside 61 static ones. Equal
/// hashes are told apart by the caller, who knows what is at a place.
private struct PlaceTable {
    private static let capacity = 512
    private var hashes = [UInt64](repeating: 0, count: PlaceTable.capacity)
    private var places = [Int](repeating: 0, count: PlaceTable.capacity)

    /// 0 marks an empty slot.
    private static func key(_ hash: UInt64) -> UInt64 { hash == 0 ? 1 : hash }

    func place(_ hash: UInt64, where matches: (Int) -> Bool) -> Int? {
        let key = Self.key(hash)
        var slot = Int(truncatingIfNeeded: key) & (Self.capacity - 1)
        while hashes[slot] != 0 {
            if hashes[slot] == key, matches(places[slot]) { return places[slot] }
            slot = (slot + 1) & (Self.capacity - 1)
        }
        return nil
    }

    /// The matching slot's place becomes `place`, unless it is a static one (negative), which stays; with none, a new
    /// slot holds it.
    mutating func set(_ hash: UInt64, to place: Int, replacing matches: (Int) -> Bool) {
        let key = Self.key(hash)
        var slot = Int(truncatingIfNeeded: key) & (Self.capacity - 1)
        while hashes[slot] != 0 {
            if hashes[slot] == key, matches(places[slot]) {
                if places[slot] >= 0 { places[slot] = place }
                return
            }
            slot = (slot + 1) & (Self.capacity - 1)
        }
        hashes[slot] = key
        places[slot] = place
    }

    /// The slot holding exactly `place` empties; the slots after it in its run move back, so no search stops early.
    mutating func remove(_ hash: UInt64, place: Int) {
        let key = Self.key(hash)
        var slot = Int(truncatingIfNeeded: key) & (Self.capacity - 1)
        while hashes[slot] != 0 {
            if hashes[slot] == key, places[slot] == place { break }
            slot = (slot + 1) & (Self.capacity - 1)
        }
        guard hashes[slot] != 0 else { return }
        var hole = slot
        var next = (hole + 1) & (Self.capacity - 1)
        while hashes[next] != 0 {
            let home = Int(truncatingIfNeeded: hashes[next]) & (Self.capacity - 1)
            // Moves back when its home is not in (hole, next], going round the end.
            let distanceFromHome = (next - home) & (Self.capacity - 1)
            let distanceFromHole = (next - hole) & (Self.capacity - 1)
            if distanceFromHome >= distanceFromHole {
                hashes[hole] = hashes[next]
                places[hole] = places[next]
                hole = next
            }
            next = (next + 1) & (Self.capacity - 1)
        }
        hashes[hole] = 0
    }
}
