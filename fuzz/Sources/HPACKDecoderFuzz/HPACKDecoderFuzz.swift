import NIOCore
import NIOHPACK
import OutriggerCore

// One input: header blocks for one connection, each a length byte and that many bytes (the eighth takes what is
// left). Each block goes to our decoder and to NIO's, which share no code; checked, and a crash when broken:
// - our decoder never traps, whatever the bytes;
// - both decode a block, or both refuse it — but for where they are known to differ (below);
// - where both decode it, they hand out the same fields, in order, with the same indexing.
// After a refusal the connection ends (as the codec ends it). Known differences, after which the run stops:
// - a literal with an empty name: NIO refuses it, ours hands it out (the HTTP/2 field check refuses it, a stream error);
// - an integer of more than 5 continuation bytes: ours takes up to 9 (zero bits padding a small value) and values up to
//   2^32, NIO up to its own limit;
// - a string that is not UTF-8: ours counts its octets in the table's size, NIO its repaired string's, so the two
//   tables evict differently from then on.

func blocks(_ bytes: UnsafeBufferPointer<UInt8>) -> [ByteBuffer] {
    var blocks: [ByteBuffer] = []
    var offset = 0
    while offset < bytes.count {
        let length = min(Int(bytes[offset]), bytes.count - offset - 1)
        let start = offset + 1
        let end = blocks.count == 7 ? bytes.count : start + length
        blocks.append(ByteBuffer(bytes: UnsafeBufferPointer(rebasing: bytes[start..<end])))
        offset = end
    }
    return blocks
}

/// Our indexing as NIO's, to compare the two.
func asNIOs(_ indexing: HPACKBlockEncoder.Indexing) -> HPACKIndexing {
    switch indexing {
    case .indexable: .indexable
    case .nonIndexable: .nonIndexable
    case .neverIndexed: .neverIndexed
    }
}

/// Whether the block holds an integer of more than 5 continuation bytes (a run of 5 bytes with the top bit set).
func hasLongInteger(_ block: ByteBuffer) -> Bool {
    var run = 0
    for byte in block.readableBytesView {
        run = byte & 0x80 != 0 ? run + 1 : 0
        if run >= 5 { return true }
    }
    return false
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var ours = HPACKBlockDecoder(maxHeaderListSize: 16_384)
    var theirs = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 16_384)
    for block in blocks(UnsafeBufferPointer(start: start, count: count)) {
        var ourFields: [(name: String, value: String, indexing: String)] = []
        var ourFailure: HPACKBlockDecoder.Failure?
        do {
            try ours.decode(block) { name, value, indexing in ourFields.append((name, value, "\(asNIOs(indexing))")) }
        } catch {
            ourFailure = error
        }
        var theirBlock = block
        let decoded = try? theirs.decodeHeaders(from: &theirBlock)
        // Past a known difference the two may part ways for good.
        let notUTF8 = ourFields.contains { $0.name.contains("\u{FFFD}") || $0.value.contains("\u{FFFD}") }
            || decoded.map { $0.contains { $0.name.contains("\u{FFFD}") || $0.value.contains("\u{FFFD}") } } ?? false
        if notUTF8 || hasLongInteger(block) || ourFields.contains(where: { $0.name.isEmpty }) { return 0 }
        switch (ourFailure, decoded) {
        case (.some, .none):
            return 0
        case let (.some(failure), .some(theirFields)):
            fatalError("ours refused (\(failure)) what NIO decoded: \(theirFields.map { "\($0.name): \($0.value)" })")
        case (.none, .none):
            fatalError("ours decoded what NIO refused: \(ourFields.map { "\($0.name): \($0.value)" })")
        case let (.none, .some(theirFields)):
            let mine = ourFields.map { "\(Array($0.name.utf8)) \(Array($0.value.utf8)) \($0.indexing)" }
            let nio = theirFields.map { "\(Array($0.name.utf8)) \(Array($0.value.utf8)) \($0.indexable)" }
            if mine != nio { fatalError("ours \(mine) != NIO's \(nio)") }
        }
    }
    return 0
}
