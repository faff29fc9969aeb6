import NIOCore

/// Decodes HTTP/2 header blocks (RFC 7541) for one connection, the fields handed out one at a time as they are read.
/// Its dynamic table keeps each entry as the two strings it was decoded into, so a field sent as an index — most of
/// a connection's fields after its first requests — is handed out as those strings, not made again from bytes
/// (NIOHPACK's decoder made both strings of every field it read from its table: the largest cost of an h2c request's
/// head after the proxying itself).
///
/// - An index is the static table's (1–61) or the dynamic table's (62 on, newest first); 0 or past the tables is an error.
/// - A literal's name is an index or a string; a string is plain octets or Huffman-coded (`HPACKHuffman`). With
///   incremental indexing it enters the dynamic table; without or never indexed it does not, and says which.
/// - A table size update may only start a block, two at most (the smallest size since the last block, then the size
///   now), each at most the size this side allows (SETTINGS_HEADER_TABLE_SIZE, which this side leaves at its default,
///   4,096).
/// - A literal's name may be empty: it is handed out, and the HTTP/2 field check refuses the field (NIOHPACK refused
///   the whole block, which ended the connection).
/// - The decoded list's size (RFC 7541 §4.1: names, values and 32 per field) is held to `maxHeaderListSize`. Sizes,
///   the table's too, count octets as they came (Huffman-decoded), not the strings made of them: a byte that is not
///   UTF-8 becomes a 3-byte U+FFFD in its string, and counted so the table would evict what the peer's still holds.
///
/// Any error leaves the table out of step with the peer's encoder for good: the connection must end
/// (COMPRESSION_ERROR, RFC 9113 §4.3).
public struct HPACKBlockDecoder {
    /// Why a block cannot be decoded.
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public let maxHeaderListSize: Int
    private let tableSizeLimit: Int
    /// The size the peer's encoder last set (§6.3), at most `tableSizeLimit`.
    private var maxSize: Int
    private var size = 0
    private var table: DecodedEntries
    /// Held, so that a lookup reads it without a global's once-check.
    private let staticFields = HPACKStaticFields.inOrder

    /// - Parameter tableSizeLimit: the table size this side allows: RFC 7541's default, as it sends no
    ///   SETTINGS_HEADER_TABLE_SIZE.
    public init(maxHeaderListSize: Int, tableSizeLimit: Int = HPACKBlockEncoder.defaultTableSize) {
        self.maxHeaderListSize = maxHeaderListSize
        self.tableSizeLimit = tableSizeLimit
        maxSize = tableSizeLimit
        // Each entry is 32 bytes at least: the table never holds more than this many.
        table = DecodedEntries(capacity: max(1, tableSizeLimit / 32))
    }

    /// The dynamic table's entries now (tests).
    public var tableCount: Int { table.count }

    /// Decodes a whole block, handing out each field as it is read, with how its sender lets it be indexed.
    public mutating func decode(_ block: ByteBuffer, field: (String, String, HPACKBlockEncoder.Indexing) -> Void) throws(Failure) {
        var failure: Failure?
        block.withUnsafeReadableBytes { bytes in
            var reader = Reader(bytes: bytes)
            do throws(Failure) {
                try decode(&reader, field: field)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    private mutating func decode(_ reader: inout Reader, field: (String, String, HPACKBlockEncoder.Indexing) -> Void) throws(Failure) {
        var listSize = 0
        var sawField = false
        var sizeUpdates = 0
        while let first = reader.peek() {
            let name: Literal
            let value: Literal
            let indexing: HPACKBlockEncoder.Indexing
            if first & 0x80 != 0 {
                // An indexed field (§6.1).
                (name, value) = try entry(at: reader.integer(prefix: 7))
                indexing = .indexable
            } else if first & 0xC0 == 0x40 {
                // A literal with incremental indexing (§6.2.1).
                name = try literalName(&reader, prefix: 6)
                value = try reader.string()
                insert(name: name, value: value)
                indexing = .indexable
            } else if first & 0xE0 == 0x20 {
                // A table size update (§6.3), only before the block's first field, and two at most: the smallest
                // size since the last block, then the size now (§4.2).
                guard !sawField else { throw Failure(description: "a table size update after a field") }
                sizeUpdates += 1
                guard sizeUpdates <= 2 else { throw Failure(description: "more than two table size updates") }
                let newSize = try reader.integer(prefix: 5)
                guard newSize <= tableSizeLimit else {
                    throw Failure(description: "a table size update to \(newSize), past the \(tableSizeLimit) allowed")
                }
                maxSize = newSize
                evict(toFit: 0)
                continue
            } else {
                // A literal without indexing (0000), or never indexed (0001) (§6.2.2, §6.2.3).
                indexing = first & 0x10 != 0 ? .neverIndexed : .nonIndexable
                name = try literalName(&reader, prefix: 4)
                value = try reader.string()
            }
            sawField = true
            listSize += name.octets + value.octets + 32
            guard listSize <= maxHeaderListSize else {
                throw Failure(description: "a header list past \(maxHeaderListSize) bytes")
            }
            field(name.string, value.string, indexing)
        }
    }

    private func literalName(_ reader: inout Reader, prefix: Int) throws(Failure) -> Literal {
        let index = try reader.integer(prefix: prefix)
        return index == 0 ? try reader.string() : try entry(at: index).name
    }

    /// The field at an index: the static table's, then the dynamic table's, newest first (§2.3.3).
    private func entry(at index: Int) throws(Failure) -> (name: Literal, value: Literal) {
        if index >= 1, index <= staticFields.count {
            // ASCII: its octets are its UTF-8.
            let (name, value) = staticFields[index - 1]
            return (Literal(string: name, octets: name.utf8.count), Literal(string: value, octets: value.utf8.count))
        }
        let dynamicIndex = index - staticFields.count - 1
        guard index >= 1, dynamicIndex < table.count else {
            throw Failure(description: "the index \(index), past the tables' \(staticFields.count + table.count) entries")
        }
        return table.entry(newestFirst: dynamicIndex)
    }

    // MARK: The dynamic table (§4)

    private mutating func insert(name: Literal, value: Literal) {
        let entrySize = name.octets + value.octets + 32
        evict(toFit: entrySize)
        // An entry larger than the table empties it and is not added (§4.4).
        guard entrySize <= maxSize else { return }
        table.append(name: name, value: value)
        size += entrySize
    }

    private mutating func evict(toFit entrySize: Int) {
        while size + entrySize > maxSize, let evicted = table.removeOldest() {
            size -= evicted
        }
    }
}

/// A string as decoded, and its length in octets as it came (before invalid UTF-8 was repaired).
private struct Literal {
    let string: String
    let octets: Int
}

/// The decoder's dynamic table: a ring of decoded entries, newest last, of at most `capacity` (a table's size over
/// the smallest entry's).
private struct DecodedEntries {
    private var names: [Literal]
    private var values: [Literal]
    /// Where the oldest entry is, and how many there are.
    private var oldest = 0
    private(set) var count = 0

    init(capacity: Int) {
        names = Array(repeating: Literal(string: "", octets: 0), count: capacity)
        values = Array(repeating: Literal(string: "", octets: 0), count: capacity)
    }

    /// The entry `offset` places from the newest (0 is the newest).
    func entry(newestFirst offset: Int) -> (name: Literal, value: Literal) {
        let slot = (oldest + count - 1 - offset) % names.count
        return (names[slot], values[slot])
    }

    /// Adds an entry; the table's size accounting has made room (an entry is 32 bytes at least, so a slot is free).
    mutating func append(name: Literal, value: Literal) {
        let slot = (oldest + count) % names.count
        names[slot] = name
        values[slot] = value
        count += 1
    }

    /// Removes the oldest entry. - Returns: its size, or nil when the table is empty.
    mutating func removeOldest() -> Int? {
        guard count > 0 else { return nil }
        let size = names[oldest].octets + values[oldest].octets + 32
        // The strings go now, not when the slot is used again.
        names[oldest] = Literal(string: "", octets: 0)
        values[oldest] = Literal(string: "", octets: 0)
        oldest = (oldest + 1) % names.count
        count -= 1
        return size
    }
}

/// A header block's bytes, read front to back: HPACK's integers and string literals (§5.1, §5.2).
private struct Reader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    func peek() -> UInt8? {
        offset < bytes.count ? bytes[offset] : nil
    }

    /// An integer with an N-bit prefix, its continuation bytes 7 bits each, least significant first. Past 2^32 it is
    /// an error (no length, index or table size is that large); zero bits may pad it out to 9 continuation bytes.
    mutating func integer(prefix: Int) throws(HPACKBlockDecoder.Failure) -> Int {
        guard offset < bytes.count else { throw HPACKBlockDecoder.Failure(description: "a block that ends inside an integer") }
        let limit = (1 << prefix) - 1
        var value = Int(bytes[offset]) & limit
        offset += 1
        guard value == limit else { return value }
        var shift = 0
        while true {
            guard offset < bytes.count else { throw HPACKBlockDecoder.Failure(description: "a block that ends inside an integer") }
            let byte = bytes[offset]
            offset += 1
            value += Int(byte & 0x7F) << shift
            guard value <= 1 << 32 else { throw HPACKBlockDecoder.Failure(description: "an integer past 2^32") }
            if byte & 0x80 == 0 { return value }
            shift += 7
            guard shift < 63 else { throw HPACKBlockDecoder.Failure(description: "an integer of more than 9 continuation bytes") }
        }
    }

    /// A string literal: its length, then its octets, plain or Huffman-coded.
    mutating func string() throws(HPACKBlockDecoder.Failure) -> Literal {
        guard let first = peek() else { throw HPACKBlockDecoder.Failure(description: "a block that ends before a string") }
        let length = try integer(prefix: 7)
        guard length <= bytes.count - offset else {
            throw HPACKBlockDecoder.Failure(description: "a string of \(length) bytes where \(bytes.count - offset) are left")
        }
        let octets = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])
        offset += length
        guard first & 0x80 != 0 else { return Literal(string: String(utf8Bytes: octets), octets: length) }
        guard let decoded = HPACKHuffman.decode(octets) else {
            throw HPACKBlockDecoder.Failure(description: "a Huffman-coded string that is not one (an EOS, or padding that is not the EOS's first bits)")
        }
        return Literal(string: decoded.string, octets: decoded.octets)
    }
}
