import NIOCore
import NIOHPACK
@testable import OutriggerCore
import Testing

@Suite("HPACK header blocks decoded (RFC 7541): against the RFC's examples, NIO's encoder and ours")
struct HPACKBlockDecoderTests {
    private static func bytes(_ hex: String) -> ByteBuffer {
        let digits = Array(hex.filter { !$0.isWhitespace })
        return ByteBuffer(bytes: stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...($0 + 1)]), radix: 16)! })
    }

    private static func decoded(_ decoder: inout HPACKBlockDecoder, _ block: ByteBuffer) throws -> [String] {
        var fields: [String] = []
        try decoder.decode(block) { name, value, _ in fields.append("\(name): \(value)") }
        return fields
    }

    private static func failure(_ decoder: inout HPACKBlockDecoder, _ block: ByteBuffer) -> String? {
        do {
            try decoder.decode(block) { _, _, _ in }
            return nil
        } catch {
            return error.description
        }
    }

    // MARK: The Huffman code

    /// The codes worked out from the lengths are the RFC's (Appendix B), for short, long and the longest codes.
    @Test func theCanonicalCodeIsTheRFCs() {
        let expected: [(symbol: Int, bits: UInt32, length: Int)] = [
            (0, 0x1FF8, 13), (1, 0x7F_FFD8, 23), (2, 0xFFF_FFE2, 28), (9, 0xFF_FFEA, 24), (10, 0x3FFF_FFFC, 30),
            (13, 0x3FFF_FFFD, 30), (22, 0x3FFF_FFFE, 30), (32, 0x14, 6), (33, 0x3F8, 10), (37, 0x15, 6), (38, 0xF8, 8),
            (48, 0x0, 5), (49, 0x1, 5), (50, 0x2, 5), (97, 0x3, 5), (99, 0x4, 5), (101, 0x5, 5), (105, 0x6, 5),
            (111, 0x7, 5), (115, 0x8, 5), (116, 0x9, 5), (256, 0x3FFF_FFFF, 30),
        ]
        for (symbol, bits, length) in expected {
            let code = HPACKHuffman.code.code(of: symbol)
            #expect(code.bits == bits && code.length == length, "symbol \(symbol): \(String(code.bits, radix: 16))/\(code.length)")
        }
        #expect(HPACKHuffman.codeLengths.count == 257)
    }

    /// Strings NIO's encoder Huffman-codes — every ASCII byte alone, and random mixes with characters beyond ASCII —
    /// decode to themselves.
    @Test func stringsNIOHuffmanCodesDecodeToThemselves() throws {
        var random = FastRandom(seed: 0x4855_4646)
        let beyondASCII = ["é", "€", "😀", "ß", "\u{80}", "\u{7FF}"]
        var values = (0...127).map { String(UnicodeScalar(UInt8($0))) }
        for _ in 0..<500 {
            values.append(String((0..<Int(random.next() % 40)).map { _ -> Character in
                random.next() % 8 == 0 ? Character(beyondASCII[Int(random.next() % UInt64(beyondASCII.count))])
                    : Character(UnicodeScalar(UInt8(32 + random.next() % 95)))
            }))
        }
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: true)
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        for value in values {
            var block = ByteBuffer()
            try encoder.encode(headers: HPACKHeaders([("x-value", value)]), to: &block)
            #expect(try Self.decoded(&decoder, block) == ["x-value: \(value)"], "\(Array(value.utf8))")
        }
    }

    /// A literal string's last bits: at most 7, all 1s (EOS's first bits); EOS itself is never a symbol.
    @Test func huffmanPaddingAndEOSAreHeldToTheRFC() {
        // A literal without indexing, a new name `x`, then the value: `a` is 00011.
        let cases: [(String, String?)] = [
            ("000178 81 1f", nil),  // `a` and three 1s
            ("000178 81 18", "padding"),  // three 0s
            ("000178 82 1fff", "padding"),  // eleven 1s
            ("000178 84 ffffffff", "EOS"),  // EOS's 30 bits
            ("000178 80", nil),  // empty
        ]
        for (hex, failure) in cases {
            var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
            let found = Self.failure(&decoder, Self.bytes(hex))
            #expect((found == nil) == (failure == nil), "\(hex): \(found ?? "decoded")")
        }
    }

    // MARK: Blocks

    /// RFC 7541 C.4: three requests with Huffman-coded strings, sharing one table; NIO's decoder reads them the same.
    @Test func theRFCsRequestExamplesWithHuffmanCoding() throws {
        let blocks = [
            "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
            "8286 84be 5886 a8eb 1064 9cbf",
            "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
        ]
        let expected = [
            [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com"],
            [":method: GET", ":scheme: http", ":path: /", ":authority: www.example.com", "cache-control: no-cache"],
            [":method: GET", ":scheme: https", ":path: /index.html", ":authority: www.example.com", "custom-key: custom-value"],
        ]
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        var theirs = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        for (hex, fields) in zip(blocks, expected) {
            #expect(try Self.decoded(&decoder, Self.bytes(hex)) == fields)
            var block = Self.bytes(hex)
            #expect(try theirs.decodeHeaders(from: &block).map { "\($0.name): \($0.value)" } == fields)
        }
        #expect(decoder.tableCount == 3)
    }

    /// Blocks from NIO's encoder — indexed, without indexing, never indexed, plain or Huffman-coded, with table size
    /// changes — decode as they were, each field with how it may be indexed.
    @Test func blocksFromNIOsEncoderDecodeAsTheyWere() throws {
        var random = FastRandom(seed: 0xB10C)
        func next(_ bound: Int) -> Int { Int(random.next() % UInt64(bound)) }
        for huffman in [true, false] {
            var encoder = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: huffman)
            var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
            let names = ["x-a", "x-b", "content-type", ":path", "date", "cookie", "accept-encoding", "x-long"]
            for round in 0..<600 {
                var block = ByteBuffer()
                if next(20) == 0 { try encoder.setDynamicTableSize([0, 64, 300, 4096][next(4)]) }
                try encoder.beginEncoding(allocator: ByteBufferAllocator())
                var expected: [String] = []
                for _ in 0..<(1 + next(8)) {
                    let name = names[next(names.count)]
                    let value = name == "x-long" ? String(repeating: "v", count: 10 + next(3000)) : "value-\(next(10))"
                    switch next(4) {
                    case 0: try encoder.appendNonIndexed(header: name, value: value); expected.append("\(name): \(value) nonIndexable")
                    case 1: try encoder.appendNeverIndexed(header: name, value: value); expected.append("\(name): \(value) neverIndexed")
                    default: try encoder.append(header: name, value: value); expected.append("\(name): \(value) indexable")
                    }
                }
                block.writeImmutableBuffer(try encoder.endEncoding())
                var fields: [String] = []
                try decoder.decode(block) { name, value, indexing in fields.append("\(name): \(value) \(indexing)") }
                #expect(fields == expected, "round \(round), Huffman \(huffman)")
            }
        }
    }

    /// Blocks from our own encoder, through evictions and the peer's table size changes, decode as they were.
    @Test func blocksFromOurEncoderStayInStep() throws {
        var random = FastRandom(seed: 0x5EED)
        func next(_ bound: Int) -> Int { Int(random.next() % UInt64(bound)) }
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        let names = ["x-a", "x-b", "content-type", "x-long", ":path", "date", "cookie"]
        for round in 0..<1000 {
            if next(10) == 0 {
                encoder.peerAllows(tableSize: [0, 60, 256, 4096, 100_000][next(5)])
                if next(2) == 0 { encoder.peerAllows(tableSize: [0, 60, 256, 4096][next(4)]) }
            }
            let fields = (0..<(1 + next(8))).map { _ -> (String, String) in
                let name = names[next(names.count)]
                return (name, name == "x-long" ? String(repeating: "v", count: 100 + next(5000)) : "value-\(next(12))")
            }
            var block = ByteBuffer()
            encoder.startBlock(into: &block)
            for (name, value) in fields { encoder.encode(name: name, value: value, into: &block) }
            // Each block twice: the second mostly indexes, some remembered places gone stale.
            var again = ByteBuffer()
            encoder.startBlock(into: &again)
            for (name, value) in fields.reversed() { encoder.encode(name: name, value: value, into: &again) }
            #expect(try Self.decoded(&decoder, block) == fields.map { "\($0.0): \($0.1)" }, "round \(round)")
            #expect(try Self.decoded(&decoder, again) == fields.reversed().map { "\($0.0): \($0.1)" }, "round \(round), again")
        }
    }

    /// An entry larger than the whole table empties it and is not entered, yet its field is decoded (§4.4).
    @Test func anEntryLargerThanTheTableEmptiesIt() throws {
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        #expect(try Self.decoded(&decoder, Self.bytes("4002 7861 0162")) == ["xa: b"])  // literal, indexed, new name
        #expect(decoder.tableCount == 1)
        var large = Self.bytes("4002 7861 7f e11f")  // the value's length: 127 + 97 + 31 × 128 = 4,192 bytes
        large.writeRepeatingByte(UInt8(ascii: "v"), count: 127 + 0x61 + 0x1F * 128)
        #expect(try Self.decoded(&decoder, large).count == 1)
        #expect(decoder.tableCount == 0)
    }

    // MARK: What a peer must not send

    @Test(arguments: [
        ("80", "an index of 0"),
        ("be", "an index past the tables (62, none dynamic)"),
        ("3fe21f", "a table size update to 4,097"),
        ("82 20", "a table size update after a field"),
        ("20 20 20", "three table size updates"),
        ("ff", "a block that ends inside an integer"),
        ("3f ff ff ff ff 0f", "a table size update past 2^32 (an integer too large)"),
        ("3f 80 80 80 80 80 80 80 80 80 00", "an integer of 10 continuation bytes"),
        ("40 05 61", "a string longer than the block"),
        ("00", "a literal without its name"),
        ("0001 78", "a literal without its value"),
    ])
    func malformedBlocksFail(hex: String, why: String) {
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        #expect(Self.failure(&decoder, Self.bytes(hex)) != nil, "\(why)")
    }

    @Test func tableSizeUpdatesWithinTheLimitAreTaken() throws {
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        // To 4,096 (where it is), a field; then an entry, found by its index; then to 0 and back (two updates): the
        // entry went with the size 0.
        #expect(try Self.decoded(&decoder, Self.bytes("3fe11f 82")) == [":method: GET"])
        #expect(try Self.decoded(&decoder, Self.bytes("4002 7861 0162")) == ["xa: b"])
        #expect(try Self.decoded(&decoder, Self.bytes("be")) == ["xa: b"])
        #expect(Self.failure(&decoder, Self.bytes("20 3fe11f be")) != nil, "the entry went with the size 0")
    }

    /// Zero bits may pad an integer out: a size update to 31 in nine continuation bytes is one.
    @Test func anIntegerPaddedWithZeroBitsIsTaken() throws {
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        #expect(try Self.decoded(&decoder, Self.bytes("3f 80 80 80 80 80 80 80 80 00 82")) == [":method: GET"])
    }

    /// Sizes count octets as they came: a value of bytes that are not UTF-8 is a string three times as long (each
    /// byte a U+FFFD), yet two such entries of 1,033 octets each fit the 4,096 of the peer's table.
    @Test func tableSizesCountOctetsNotTheStringsMadeOfThem() throws {
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        for name in ["x", "y"] {
            var block = Self.bytes("40 01")  // literal, indexed, a new name of one byte
            block.writeString(name)
            block.writeBytes([0x7F, 0xE9, 0x06])  // the value's length: 127 + 105 + 6 × 128 = 1,000
            block.writeRepeatingByte(0xFF, count: 1000)
            #expect(try Self.decoded(&decoder, block).count == 1)
        }
        #expect(decoder.tableCount == 2, "both entries fit")
        let older = try Self.decoded(&decoder, Self.bytes("bf"))
        #expect(older.first?.hasPrefix("x: ") == true, "\(older.first?.prefix(8) ?? "none")")
    }

    /// Every byte value's code, including the long codes of bytes beyond ASCII, decodes back: strings Huffman-coded
    /// here from the worked-out code (its codes checked against the RFC's above), every valid UTF-8 lead and
    /// continuation byte among them, and the bytes UTF-8 never has repaired to U+FFFD.
    @Test func everyByteValueDecodes() throws {
        func huffman(_ bytes: [UInt8]) -> [UInt8] {
            var out: [UInt8] = []
            var bits: UInt64 = 0
            var count = 0
            for byte in bytes {
                let code = HPACKHuffman.code.code(of: Int(byte))
                bits = bits << UInt64(code.length) | UInt64(code.bits)
                count += code.length
                while count >= 8 {
                    out.append(UInt8(truncatingIfNeeded: bits >> UInt64(count - 8)))
                    count -= 8
                }
            }
            if count > 0 { out.append(UInt8(truncatingIfNeeded: bits << UInt64(8 - count)) | UInt8((1 << (8 - count)) - 1)) }
            return out
        }
        var strings = (0...0x10FF).compactMap { UnicodeScalar($0).map { String(Character($0)) } }
        strings += ["😀", "\u{10FFFF}", "\u{FFFD}"]
        for string in strings {
            let coded = huffman(Array(string.utf8))
            let decoded = coded.withUnsafeBytes { HPACKHuffman.decode($0) }
            #expect(decoded?.string == string && decoded?.octets == string.utf8.count, "\(Array(string.utf8))")
        }
        for byte in [0xC0, 0xC1, 0xF5, 0xFF, 0x80] as [UInt8] {
            let decoded = huffman([0x61, byte, 0x62]).withUnsafeBytes { HPACKHuffman.decode($0) }
            #expect(decoded?.string == "a\u{FFFD}b" && decoded?.octets == 3, "\(byte)")
        }
    }

    @Test func theHeaderListSizeIsHeldToItsLimit() throws {
        // Each field counts its name, its value and 32 (§4.1): `xa: b` is 35.
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 70)
        #expect(try Self.decoded(&decoder, Self.bytes("0002 7861 0162 0002 7861 0162")).count == 2)
        #expect(Self.failure(&decoder, Self.bytes("0002 7861 0162 0002 7861 0162 0002 7861 0162")) != nil)
    }

    /// A name beyond ASCII is handed out as it came (the HTTP/2 field check answers it), not a failure of the block.
    @Test func aNameBeyondASCIIIsDecoded() throws {
        var decoder = HPACKBlockDecoder(maxHeaderListSize: 1 << 20)
        #expect(try Self.decoded(&decoder, Self.bytes("0002 c3a9 0178")) == ["é: x"])
    }
}
