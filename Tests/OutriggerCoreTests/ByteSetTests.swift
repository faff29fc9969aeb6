@testable import OutriggerCore
import Testing

@Suite("Byte sets written as constants")
struct ByteSetTests {
    static let tokenSymbols = Array("!#$%&'*+-.^_`|~".utf8)

    static func isToken(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || tokenSymbols.contains(byte)
    }

    /// Each set against its rule spelled out, for all 256 bytes.
    @Test func everyByteAgainstItsRule() {
        for value in 0...255 {
            let byte = UInt8(value)
            #expect(ByteSet.token.contains(byte) == Self.isToken(byte), "token \(byte)")
            #expect(ByteTable.token.contains(byte) == Self.isToken(byte), "token table \(byte)")
            let upper = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")
            #expect(ByteSet.notLowercaseToken.contains(byte) == (!Self.isToken(byte) || upper), "lower-case token \(byte)")
        }
    }

    @Test func containsAnyReadsEveryByte() {
        let bytes: [UInt8] = Array("abc-Def".utf8)
        bytes.withUnsafeBytes { #expect(ByteSet.notLowercaseToken.containsAny(of: $0)) }
        bytes.withUnsafeBytes { #expect(!ByteSet.notLowercaseToken.containsAny(of: UnsafeRawBufferPointer(rebasing: $0[0..<4]))) }
    }
}
