@testable import OutriggerCore
import Testing

@Suite("Field value bytes read eight at a time: HTTP/1.1's rule, HTTP/2's, a pseudo-field's")
struct FieldValueBytesTests {
    static func isForbiddenInHTTP2(_ byte: UInt8) -> Bool { byte == 0 || byte == 0x0A || byte == 0x0D }
    static func isSpaceOrControl(_ byte: UInt8) -> Bool { byte <= 0x20 || byte == 0x7F }

    /// The HTTP/2 checks of the bytes, and of a string made of them, against their rules spelled out, read a byte at a
    /// time.
    static func expectHTTP2Checks(_ bytes: [UInt8], _ comment: Comment) {
        bytes.withUnsafeBytes { raw in
            #expect(HTTP2FieldCheck.hasNULCROrLF(raw) == bytes.contains(where: isForbiddenInHTTP2), comment)
            #expect(HTTP2FieldCheck.hasSpaceOrControl(raw) == bytes.contains(where: isSpaceOrControl), comment)
        }
        // A string made of them, read in place by the check: as a regular field's value and as a pseudo-field's.
        let string = String(decoding: bytes, as: UTF8.self)
        var regular = HTTP2FieldCheck(.request)
        regular.add(name: "x-value", value: string)
        #expect((regular.malformed != nil) == string.utf8.contains(where: isForbiddenInHTTP2), comment)
        #expect(regular.everyRegularValueFitsHTTP1 == string.utf8.allSatisfy(HTTP1Syntax.isFieldValueByte), comment)
        var pseudo = HTTP2FieldCheck(.request)
        pseudo.add(name: ":path", value: string)
        #expect((pseudo.malformed != nil) == string.utf8.contains(where: isSpaceOrControl), comment)
    }

    /// Every byte value at every place of buffers shorter than, as long as and longer than a word: the same answer as
    /// the byte-by-byte rule.
    @Test func everyByteAtEveryPlace() {
        for length in [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17] {
            for place in 0..<length {
                for value in 0...255 {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    bytes[place] = UInt8(value)
                    let expected = HTTP1Syntax.isFieldValueByte(UInt8(value))
                    bytes.withUnsafeBytes { #expect(HTTP1Syntax.areFieldValueBytes($0) == expected, "\(value) at \(place) of \(length)") }
                    Self.expectHTTP2Checks(bytes, "\(value) at \(place) of \(length)")
                }
            }
        }
        Self.expectHTTP2Checks([], "empty")
    }

    /// Mixed buffers (obs-text next to controls, a tab next to DEL) against the byte-by-byte rule.
    @Test func mixedBuffers() {
        var random = FastRandom(seed: 12)
        let alphabet: [UInt8] = [0x00, 0x09, 0x0A, 0x1F, 0x20, 0x21, 0x41, 0x7E, 0x7F, 0x80, 0x9F, 0xA0, 0xFF]
        for _ in 0..<5_000 {
            let bytes = (0..<Int(random.next() % 24)).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }
            let expected = bytes.allSatisfy(HTTP1Syntax.isFieldValueByte)
            bytes.withUnsafeBytes { #expect(HTTP1Syntax.areFieldValueBytes($0) == expected, "\(bytes)") }
            Self.expectHTTP2Checks(bytes, "\(bytes)")
        }
    }
}

@Suite("Strings made from received bytes")
struct ReceivedStringTests {
    /// What `String(decoding:as:)` made: empty, small and large, ASCII and not, invalid UTF-8 repaired.
    @Test(arguments: [[], Array("host".utf8), Array("application/json; charset=utf-8".utf8), [0x61, 0xC3, 0xA9],
                      [0x61, 0xFF, 0x62], [0xC3], Array(repeating: 0x80, count: 20), Array("ünïcödé and more than fifteen".utf8)] as [[UInt8]])
    func sameAsDecoding(bytes: [UInt8]) {
        bytes.withUnsafeBytes { raw in
            let made = String(utf8Bytes: raw)
            #expect(made == String(decoding: raw, as: UTF8.self))
            #expect(Array(made.utf8) == Array(String(decoding: raw, as: UTF8.self).utf8))
        }
    }
}

@Suite("Equal bytes compared a word at a time")
struct SameBytesTests {
    /// Every length across the byte, half-word and word paths; for each, equal buffers, and a difference at every
    /// place (the overlapping last word included), and buffers of different lengths.
    @Test func aDifferenceAnywhereIsSeen() {
        for length in 0...25 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            bytes.withUnsafeBytes { left in
                Array(bytes).withUnsafeBytes { #expect(ByteWords.same(left, $0), "equal, \(length)") }
                for place in 0..<length {
                    var other = bytes
                    other[place] ^= 0x01
                    other.withUnsafeBytes { #expect(!ByteWords.same(left, $0), "\(place) of \(length)") }
                }
                (bytes + [0]).withUnsafeBytes { #expect(!ByteWords.same(left, $0), "longer, \(length)") }
            }
        }
        #expect(HTTP1Syntax.equals(UnsafeRawBufferPointer(start: nil, count: 0), ""))
        // Ignoring case: every byte value at every place of literals across the three paths, against the rule a byte
        // at a time (each byte with 0x20 set is the literal's).
        let literals: [StaticString] = ["te", "via", "host", "close", "upgrade", "keep-alive", "content-length", "transfer-encoding"]
        for literal in literals {
            let expected = UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
            #expect(Array(String(describing: literal).uppercased().utf8).withUnsafeBytes { HTTP1Syntax.equalsIgnoringCase($0, literal) })
            for place in 0..<expected.count {
                for value in 0...255 {
                    var bytes = Array(expected)
                    bytes[place] = UInt8(value)
                    let byByte = zip(bytes, expected).allSatisfy { $0 | 0x20 == $1 }
                    bytes.withUnsafeBytes { #expect(HTTP1Syntax.equalsIgnoringCase($0, literal) == byByte, "\(literal): \(value) at \(place)") }
                }
            }
        }
        Array("content-length".utf8).withUnsafeBytes { name in
            #expect(HTTP1Syntax.equals(name, "content-length"))
            #expect(!HTTP1Syntax.equals(name, "content-lengtx"))
            #expect(!HTTP1Syntax.equals(name, "content-lengths"))
        }
    }
}
