import NIOCore

/// Encodes HTTP/2 header blocks (RFC 7541) for one connection, looking fields up in hash tables instead of scanning
/// the dynamic table field by field as NIOHPACK's encoder does (its case-insensitive scan was the largest single cost
/// of an HTTP/2 request in the profile). Strings go as plain octets, not Huffman-coded: fewer cycles, a few more bytes.
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

    private struct Field: Hashable {
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
        let field = Field(name: name, value: value)
        let indexed = indexing == .indexable && !Self.isNewEveryMessage(name)
        if indexed, let place = byField[field] {
            Self.writeInteger(index(of: place), prefix: 7, bits: 0x80, into: &buffer)
            return
        }
        let nameIndex = byName[name].map(index(of:)) ?? 0
        switch (indexed, indexing) {
        case (true, _): Self.writeInteger(nameIndex, prefix: 6, bits: 0x40, into: &buffer)  // literal, incremental indexing
        case (false, .neverIndexed): Self.writeInteger(nameIndex, prefix: 4, bits: 0x10, into: &buffer)
        case (false, _): Self.writeInteger(nameIndex, prefix: 4, bits: 0x00, into: &buffer)  // literal, without indexing
        }
        if nameIndex == 0 { Self.writeString(name, into: &buffer) }
        Self.writeString(value, into: &buffer)
        if indexed { insert(field) }
    }

    // MARK: The dynamic table (RFC 7541 §4)

    /// The index of a place in `byField` or `byName`: a static index, or a dynamic entry's now (the newest is 62, §2.3.3).
    private func index(of place: Int) -> Int {
        place < 0 ? -place : Self.staticCount + (firstNumber + entries.count - 1 - place) + 1
    }

    private mutating func insert(_ field: Field) {
        let entrySize = field.name.utf8.count + field.value.utf8.count + 32
        evict(toFit: entrySize, limit: maxSize)
        // An entry larger than the table empties it and is not added (§4.4): the peer's decoder does the same.
        guard entrySize <= maxSize else { return }
        let number = firstNumber + entries.count
        entries.append(field)
        byField[field] = number
        if let staticPlace = byName.updateValue(number, forKey: field.name), staticPlace < 0 { byName[field.name] = staticPlace }
        size += entrySize
    }

    private mutating func evict(toFit entrySize: Int, limit: Int) {
        while size + entrySize > limit, liveFrom < entries.count {
            let oldest = entries[liveFrom]
            let number = firstNumber + liveFrom
            size -= oldest.name.utf8.count + oldest.value.utf8.count + 32
            if byField[oldest] == number { byField[oldest] = nil }
            if byName[oldest.name] == number { byName[oldest.name] = nil }
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

    private static let newEveryMessage: Set<String> = ["x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid",
                                                       "x-b3-spanid", "x-b3-parentspanid", "date"]

    /// Most names are ruled out by their first byte, without hashing.
    private static func isNewEveryMessage(_ name: String) -> Bool {
        switch name.utf8.first {
        case UInt8(ascii: "x"), UInt8(ascii: "t"), UInt8(ascii: "b"), UInt8(ascii: "d"): newEveryMessage.contains(name)
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

    /// Fields with a value in the static table, and names by their first index, each as minus its index.
    private static let staticFields: [Field: Int] = {
        var fields: [Field: Int] = [:]
        for (offset, (name, value)) in staticTable.enumerated() where !value.isEmpty {
            fields[Field(name: name, value: value)] = -(offset + 1)
        }
        return fields
    }()

    private static let staticNames: [String: Int] = {
        var names: [String: Int] = [:]
        for (offset, (name, _)) in staticTable.enumerated() where names[name] == nil { names[name] = -(offset + 1) }
        return names
    }()
}
