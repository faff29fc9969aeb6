import NIOCore
import NIOHPACK
import OutriggerCore

// One input: header blocks for one connection, each a length byte and that many bytes (the last takes what is left).
// Each block goes to our decoder and to NIO's, which share no code; checked, and a crash when broken:
// - our decoder never traps, whatever the bytes;
// - where both decode a block, they decode the same fields, in order, with the same indexing;
// - where either fails, the connection ends there (as the codec ends it): the tables are out of step from then on.
// NIO's decoder is not held to ours where one refuses what the other takes (its limits differ: integers, padding).

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

func label(_ indexing: HPACKBlockEncoder.Indexing) -> String {
    switch indexing {
    case .indexable: "indexable"
    case .nonIndexable: "nonIndexable"
    case .neverIndexed: "neverIndexed"
    }
}

func label(_ indexing: HPACKIndexing) -> String {
    switch indexing {
    case .indexable: "indexable"
    case .nonIndexable: "nonIndexable"
    case .neverIndexed: "neverIndexed"
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var ours = HPACKBlockDecoder(maxHeaderListSize: 16_384)
    var theirs = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 16_384)
    for block in blocks(UnsafeBufferPointer(start: start, count: count)) {
        var ourFields: [String] = []
        do {
            try ours.decode(block) { name, value, indexing in ourFields.append("\(Array(name.utf8)) \(Array(value.utf8)) \(label(indexing))") }
        } catch {
            return 0
        }
        var theirBlock = block
        guard let decoded = try? theirs.decodeHeaders(from: &theirBlock) else { return 0 }
        let theirFields = decoded.map { "\(Array($0.name.utf8)) \(Array($0.value.utf8)) \(label($0.indexable))" }
        if ourFields != theirFields { fatalError("ours \(ourFields) != NIO's \(theirFields)") }
    }
    return 0
}
