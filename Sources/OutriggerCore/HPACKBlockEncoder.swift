import NIOCore

/// Encodes HTTP/2 header blocks (RFC 7541) for one connection, looking fields up in hash tables instead of scanning
/// the dynamic table field by field as NIOHPACK's encoder does (its case-insensitive scan was the largest single cost
/// of an HTTP/2 request in the profile). The tables are its own (`PlaceTable`, hashed by `FieldHasher`: one pass for a
/// name and its field, eight bytes at a time, where `Dictionary` hashed each string with a seeded SipHash). Fields are
/// handled as bytes, read in place from their strings: the dynamic table keeps its entries' bytes in one array and
/// compares them there, and a field is written with one capacity check. Strings go as plain octets, not
/// Huffman-coded: fewer cycles, a few more bytes.
///
/// - A field in the static table with its value is one index; one in the dynamic table too.
/// - Otherwise it is a literal, its name indexed when either table has it, and it enters the dynamic table — unless
///   the caller says not to, or its value is new with every message (`x-request-id`, trace ids, `date`), where an
///   entry would only push out ones that repeat.
/// - Credentials go never indexed (RFC 7541 §7.1.3): `authorization`, `proxy-authorization`, and a `cookie` shorter
///   than 20 bytes. A connection to an upstream carries many clients' requests: a credential in its table could be
///   guessed a byte at a time from the block sizes, and a proxy after this one must keep it out of its tables too.
/// - The peer's SETTINGS_HEADER_TABLE_SIZE bounds the table: a change is announced at the next block's start (the
///   smallest size since the last block first, when it shrank and grew again; §4.2).
public struct HPACKBlockEncoder {
    /// How a field may enter the dynamic table (NIOHPACK's `HPACKIndexing`, without the import).
    public enum Indexing: Sendable { case indexable, nonIndexable, neverIndexed }

    /// The table size used when the peer allows it (RFC 7541's default, and NIOHPACK's).
    public static let defaultTableSize = 4096

    private var dynamic = DynamicEntries()
    /// Where a field, or a name, is: a dynamic entry's insertion number (its newest), or minus its static index. One
    /// lookup finds either; the static ones are never evicted, and a name in the static table keeps its static index.
    private var byField: PlaceTable
    private var byName: PlaceTable
    /// Held, so that a lookup reads it without a global's once-check.
    private let staticTable = StaticTable.shared
    private var size = 0
    public private(set) var maxSize: Int
    private var pendingSmallest: Int?
    private var pendingSizeUpdate = false
    /// Where each of the last blocks' first fields was found or entered, by its place in its block: a connection's
    /// blocks mostly repeat the one before, and a field is found there by comparing its bytes with one entry's,
    /// without hashing it or probing a table (~150 instructions a field). `Int.min` where none is known.
    private var rememberedPlaces = [Int](repeating: .min, count: HPACKBlockEncoder.rememberedFields)
    private static let rememberedFields = 16
    /// The next field's place in the block being encoded.
    private var fieldInBlock = 0

    public init(maxSize: Int = HPACKBlockEncoder.defaultTableSize) {
        self.maxSize = maxSize
        byField = staticTable.fields
        byName = staticTable.names
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
        fieldInBlock = 0
        guard pendingSizeUpdate else { return }
        let (smallest, maxSize) = (pendingSmallest, maxSize)
        ByteWriter.write(into: &buffer, room: 2 * ByteWriter.maxIntegerBytes) { writer in
            if let smallest, smallest < maxSize { writer.integer(smallest, prefix: 5, bits: 0x20) }
            writer.integer(maxSize, prefix: 5, bits: 0x20)
        }
        pendingSmallest = nil
        pendingSizeUpdate = false
    }

    public mutating func encode(name: String, value: String, indexing: Indexing = .indexable, into buffer: inout ByteBuffer) {
        name.withUTF8Bytes { name in
            value.withUTF8Bytes { value in encode(name: name, value: value, indexing: indexing, lowercasingName: false, into: &buffer) }
        }
    }

    /// The static table's index of `:status` with this code (200, 204, 206, 304, 400, 404 and 500 are there).
    func staticIndex(ofStatus code: UInt) -> Int? {
        staticTable.statusIndexes.first { $0.code == code }?.index
    }

    /// A field from its bytes. With `lowercasingName`, a name with upper-case letters goes lower-cased (HTTP/2's
    /// names are), copied on the stack; most are lower-case already.
    mutating func encode(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, indexing: Indexing = .indexable,
                         lowercasingName: Bool, into buffer: inout ByteBuffer) {
        guard lowercasingName, Self.containsUpperCase(name) else {
            return encodeField(name: name, value: value, indexing: indexing, into: &buffer)
        }
        withUnsafeTemporaryAllocation(byteCount: name.count, alignment: 1) { lowered in
            for (offset, byte) in name.enumerated() { lowered[offset] = Self.isUpperCase(byte) ? byte | 0x20 : byte }
            encodeField(name: UnsafeRawBufferPointer(lowered), value: value, indexing: indexing, into: &buffer)
        }
    }

    private mutating func encodeField(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, indexing asked: Indexing,
                                      into buffer: inout ByteBuffer) {
        let indexing = asked == .indexable && Self.isCredential(name, value) ? .neverIndexed : asked
        let position = fieldInBlock
        fieldInBlock += 1
        // Where this place in the last block's field was: the same field, still in a table, is there (a field is in
        // the tables once at most, so the index is the one the lookup would find).
        if indexing == .indexable, position < Self.rememberedFields {
            let place = rememberedPlaces[position]
            if place != .min, place < 0 ? staticTable.holds(-place - 1, name: name, value: value) : dynamic.holdsLive(place, name: name, value: value) {
                return writeIndex(of: place, into: &buffer)
            }
        }
        let indexed = indexing == .indexable && !Self.isNewEveryMessage(name)
        // A value is hashed only when the field may be in, or enter, the table.
        let (nameHash, fieldHash) = FieldHasher.hashes(name: name, value: indexed ? value : nil)
        if indexed, let place = byField.place(fieldHash, where: { self.holds(place: $0, name: name, value: value) }) {
            remember(place, at: position)
            return writeIndex(of: place, into: &buffer)
        }
        let nameIndex = byName.place(nameHash, where: { self.holds(place: $0, name: name, value: nil) }).map(index(of:)) ?? 0
        ByteWriter.write(into: &buffer, room: 3 * ByteWriter.maxIntegerBytes + name.count + value.count) { writer in
            switch (indexed, indexing) {
            case (true, _): writer.integer(nameIndex, prefix: 6, bits: 0x40)  // literal, incremental indexing
            case (false, .neverIndexed): writer.integer(nameIndex, prefix: 4, bits: 0x10)
            case (false, _): writer.integer(nameIndex, prefix: 4, bits: 0x00)  // literal, without indexing
            }
            if nameIndex == 0 { writer.string(name) }
            writer.string(value)
        }
        if indexed, let number = insert(name: name, value: value, (nameHash, fieldHash)) { remember(number, at: position) }
    }

    @inline(__always)
    private func writeIndex(of place: Int, into buffer: inout ByteBuffer) {
        let index = index(of: place)
        ByteWriter.write(into: &buffer, room: ByteWriter.maxIntegerBytes) { $0.integer(index, prefix: 7, bits: 0x80) }
    }

    private mutating func remember(_ place: Int, at position: Int) {
        if position < Self.rememberedFields { rememberedPlaces[position] = place }
    }

    /// Whether a place in `byField` or `byName` holds this name (and value, when given).
    private func holds(place: Int, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?) -> Bool {
        Self.holds(place: place, name: name, value: value, dynamic, staticTable)
    }

    private static func holds(place: Int, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?,
                              _ dynamic: DynamicEntries, _ staticTable: StaticTable) -> Bool {
        place < 0 ? staticTable.holds(-place - 1, name: name, value: value) : dynamic.holds(place, name: name, value: value)
    }

    // MARK: The dynamic table (RFC 7541 §4)

    /// The index of a place in `byField` or `byName`: a static index, or a dynamic entry's now (the newest is 62, §2.3.3).
    private func index(of place: Int) -> Int {
        place < 0 ? -place : staticTable.count + (dynamic.nextNumber - 1 - place) + 1
    }

    /// - Returns: the entry's insertion number, or nil when it is larger than the table.
    @discardableResult
    private mutating func insert(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, _ hashes: (name: UInt64, field: UInt64)) -> Int? {
        let entrySize = name.count + value.count + 32
        evict(toFit: entrySize, limit: maxSize)
        // An entry larger than the table empties it and is not added (§4.4): the peer's decoder does the same.
        guard entrySize <= maxSize else { return nil }
        let number = dynamic.append(name: name, value: value)
        // The newest copy of a field or name is the one found; a name in the static table keeps its static index.
        // The comparisons read the entries from a copy (the place tables change meanwhile, and are not copied).
        let (dynamic, staticTable) = (dynamic, staticTable)
        byField.set(hashes.field, to: number) { Self.holds(place: $0, name: name, value: value, dynamic, staticTable) }
        byName.set(hashes.name, to: number) { Self.holds(place: $0, name: name, value: nil, dynamic, staticTable) }
        size += entrySize
        return number
    }

    private mutating func evict(toFit entrySize: Int, limit: Int) {
        while size + entrySize > limit, let (number, oldest) = dynamic.evictOldest() {
            size -= oldest.size
            let hashes = dynamic.hashes(of: oldest)
            byField.remove(hashes.field, place: number)
            byName.remove(hashes.name, place: number)
        }
        dynamic.dropEvicted()
    }

    // MARK: Bytes

    private static func isUpperCase(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") }

    /// Whether any byte is `A`–`Z`, read eight at a time: in a word of ASCII bytes, a byte's top bit after adding
    /// 0x3F is set from `A` up, after adding 0x25 from `[` up. A word with a non-ASCII byte (a carry would cross into
    /// the next byte) is read byte by byte.
    private static func containsUpperCase(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let topBits = ones &* 0x80
        var offset = 0
        while offset + 8 <= bytes.count {
            let word = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            if word & topBits != 0 {
                if bytes[offset..<(offset + 8)].contains(where: isUpperCase) { return true }
            } else if (word &+ ones &* 0x3F) & ~(word &+ ones &* 0x25) & topBits != 0 {
                return true
            }
            offset += 8
        }
        return bytes[offset...].contains(where: isUpperCase)
    }

    /// Fields that carry a credential (RFC 7541 §7.1.3: a short cookie's value could be guessed). Told by length first.
    private static func isCredential(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 6: value.count < 20 && HTTP1Syntax.equals(name, "cookie")
        case 13: HTTP1Syntax.equals(name, "authorization")
        case 19: HTTP1Syntax.equals(name, "proxy-authorization")
        default: false
        }
    }

    /// Fields whose value is new with every message: `x-request-id`, trace ids, `date`. Told by length first.
    private static func isNewEveryMessage(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 2: HTTP1Syntax.equals(name, "b3")
        case 4: HTTP1Syntax.equals(name, "date")
        case 10: HTTP1Syntax.equals(name, "tracestate")
        case 11: HTTP1Syntax.equals(name, "traceparent") || HTTP1Syntax.equals(name, "x-b3-spanid")
        case 12: HTTP1Syntax.equals(name, "x-request-id") || HTTP1Syntax.equals(name, "x-b3-traceid")
        case 17: HTTP1Syntax.equals(name, "x-b3-parentspanid")
        default: false
        }
    }
}

/// The dynamic table's entries, oldest first, their names and values in `bytes`. `entries[0]` is insertion number
/// `firstNumber`; those before `liveFrom` are evicted, and go with their bytes now and then.
private struct DynamicEntries {
    private var entries: [TableEntry] = []
    private var bytes: [UInt8] = []
    /// Where `bytes[0]` is among all the bytes ever stored (an entry's `start` counts from the first).
    private var bytesBase = 0
    private var firstNumber = 0
    private var liveFrom = 0

    /// The insertion number the next entry gets.
    var nextNumber: Int { firstNumber + entries.count }

    /// Stores a field; its insertion number.
    mutating func append(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Int {
        entries.append(TableEntry(start: bytesBase + bytes.count, nameCount: name.count, valueCount: value.count))
        bytes.append(contentsOf: name)
        bytes.append(contentsOf: value)
        return nextNumber - 1
    }

    /// Whether entry `number` is still in the table (entered, and not evicted) and is this field.
    func holdsLive(_ number: Int, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Bool {
        number >= firstNumber + liveFrom && number < nextNumber && holds(number, name: name, value: value)
    }

    func holds(_ number: Int, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?) -> Bool {
        let entry = entries[number - firstNumber]
        return bytes.withUnsafeBytes { entry.holds(name: name, value: value, in: $0, from: bytesBase) }
    }

    func hashes(of entry: TableEntry) -> (name: UInt64, field: UInt64) {
        bytes.withUnsafeBytes { FieldHasher.hashes(name: entry.name(in: $0, from: bytesBase), value: entry.value(in: $0, from: bytesBase)) }
    }

    /// The oldest live entry and its number, now evicted; nil when none is left.
    mutating func evictOldest() -> (number: Int, entry: TableEntry)? {
        guard liveFrom < entries.count else { return nil }
        liveFrom += 1
        return (firstNumber + liveFrom - 1, entries[liveFrom - 1])
    }

    /// The evicted entries and their bytes go once they are half the entries, and either many or past a table's
    /// worth of bytes.
    mutating func dropEvicted() {
        let liveStart = liveFrom < entries.count ? entries[liveFrom].start : bytesBase + bytes.count
        guard liveFrom * 2 > entries.count, liveFrom > 32 || liveStart - bytesBase > HPACKBlockEncoder.defaultTableSize else { return }
        bytes.removeFirst(liveStart - bytesBase)
        bytesBase = liveStart
        entries.removeFirst(liveFrom)
        firstNumber += liveFrom
        liveFrom = 0
    }
}

/// A table entry: its name's bytes from `start` in its table's bytes, its value's right after.
private struct TableEntry {
    var start: Int
    var nameCount: Int
    var valueCount: Int

    /// Its size in the table's accounting (RFC 7541 §4.1).
    var size: Int { nameCount + valueCount + 32 }

    /// Its name's bytes in its table's `stored` bytes (which start at `base` among all stored), read in place: the
    /// entry lies within them (a slice's bounds checks cost ~20 instructions a look).
    func name(in stored: UnsafeRawBufferPointer, from base: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: stored.baseAddress.map { $0 + (start - base) }, count: nameCount)
    }

    func value(in stored: UnsafeRawBufferPointer, from base: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: stored.baseAddress.map { $0 + (start - base + nameCount) }, count: valueCount)
    }

    /// Whether it is this name (and value, when given).
    func holds(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?, in stored: UnsafeRawBufferPointer, from base: Int) -> Bool {
        guard name.count == nameCount else { return false }
        if let value {
            guard value.count == valueCount, ByteWords.same(value, self.value(in: stored, from: base)) else { return false }
        }
        return ByteWords.same(name, self.name(in: stored, from: base))
    }
}

/// The static table (RFC 7541 Appendix A), its bytes and its places, built once.
private final class StaticTable: Sendable {
    static let shared = StaticTable()

    /// Entry `i` is static index `i + 1`.
    private let entries: [TableEntry]
    private let bytes: [UInt8]
    /// Fields with a value in the static table, and names by their first index, each as minus its index.
    let fields: PlaceTable
    let names: PlaceTable
    /// The `:status` entries, by code: their index found without hashing.
    let statusIndexes: [(code: UInt, index: Int)]

    private init() {
        var entries: [TableEntry] = []
        var bytes: [UInt8] = []
        for (name, value) in HPACKStaticFields.inOrder {
            entries.append(TableEntry(start: bytes.count, nameCount: name.utf8.count, valueCount: value.utf8.count))
            bytes += name.utf8
            bytes += value.utf8
        }
        var fields = PlaceTable()
        var names = PlaceTable()
        bytes.withUnsafeBytes { stored in
            for (offset, entry) in entries.enumerated() {
                let (name, value) = (entry.name(in: stored, from: 0), entry.value(in: stored, from: 0))
                let hashes = FieldHasher.hashes(name: name, value: value)
                if !value.isEmpty { fields.set(hashes.field, to: -(offset + 1)) { _ in false } }
                // A name's first index stays (a static place is never replaced).
                names.set(hashes.name, to: -(offset + 1)) { entries[-$0 - 1].holds(name: name, value: nil, in: stored, from: 0) }
            }
        }
        (self.entries, self.bytes, self.fields, self.names) = (entries, bytes, fields, names)
        statusIndexes = HPACKStaticFields.inOrder.enumerated().compactMap { offset, field in
            field.0 == ":status" ? UInt(field.1).map { (code: $0, index: offset + 1) } : nil
        }
    }

    var count: Int { entries.count }

    /// Whether static entry `offset` (index `offset + 1`) is this name (and value, when given).
    func holds(_ offset: Int, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?) -> Bool {
        let entry = entries[offset]
        return bytes.withUnsafeBytes { entry.holds(name: name, value: value, in: $0, from: 0) }
    }
}

/// HPACK's integers and string literals (RFC 7541 §5.1, §5.2).
extension ByteWriter {
    /// An integer's most bytes: the prefix's, and nine of 7 bits for the rest of an `Int`.
    static let maxIntegerBytes = 10

    mutating func integer(_ value: Int, prefix: Int, bits: UInt8) {
        let limit = (1 << prefix) - 1
        guard value >= limit else { return byte(bits | UInt8(value)) }
        byte(bits | UInt8(limit))
        var rest = value - limit
        while rest >= 128 {
            byte(UInt8(rest & 0x7F | 0x80))
            rest >>= 7
        }
        byte(UInt8(rest))
    }

    /// A string literal, not Huffman-coded (H = 0).
    mutating func string(_ bytes: UnsafeRawBufferPointer) {
        integer(bytes.count, prefix: 7, bits: 0)
        self.bytes(bytes)
    }
}

/// The tables' hash: a name's bytes, then its value's, eight at a time (a multiply and a fold per word, where FNV-1a
/// took a multiply per byte), each string's length mixed in after it, so "ab" + "c" and "a" + "bc" differ. The tables
/// live in one process: it needs speed and spread in the low bits (the slot), not stability.
private struct FieldHasher {
    private var state: UInt64 = 0x243F_6A88_85A3_08D3

    /// A name's hash, and its field's: the value's bytes hashed on from the name's (0 without a value). Every lookup,
    /// insertion and eviction hashes here, so the tables always agree.
    static func hashes(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?) -> (name: UInt64, field: UInt64) {
        var hasher = FieldHasher()
        hasher.add(name)
        let nameHash = hasher.finished
        guard let value else { return (nameHash, 0) }
        hasher.add(value)
        return (nameHash, hasher.finished)
    }

    private mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset + 8 < bytes.count {
            mix(bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            offset += 8
        }
        mix(Self.lastBytes(bytes, from: offset))
        mix(UInt64(bytes.count))
    }

    /// The 1 to 8 bytes from `offset` to the end in one word, read in at most three loads, not byte by byte; when
    /// the string is 8 bytes or more, the last 8 (overlapping words already mixed: the length, mixed in after, keeps
    /// strings apart).
    private static func lastBytes(_ bytes: UnsafeRawBufferPointer, from offset: Int) -> UInt64 {
        let count = bytes.count
        if count >= 8 { return bytes.loadUnaligned(fromByteOffset: count - 8, as: UInt64.self) }
        let rest = count - offset
        if rest >= 4 {
            let first = bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
            let last = bytes.loadUnaligned(fromByteOffset: count - 4, as: UInt32.self)
            return UInt64(first) | UInt64(last) << 32
        }
        guard rest > 0 else { return 0 }
        return UInt64(bytes[offset]) | UInt64(bytes[offset + rest / 2]) << 8 | UInt64(bytes[count - 1]) << 16
    }

    private mutating func mix(_ word: UInt64) {
        state = (state ^ word) &* 0x9E37_79B9_7F4A_7C15
        state ^= state >> 29
    }

    /// The bits folded down (MurmurHash3's finaliser), so the low ones, which pick a slot, depend on all of them.
    private var finished: UInt64 {
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
