/// HPACK's Huffman code (RFC 7541 Appendix B), decoded. The code is canonical — within a length the codes count up
/// with the symbols, and each length's first code follows the last of the lengths before — so it is given here by its
/// lengths alone, and the codes are worked out from them once (the tests check them against the RFC's).
///
/// A string is decoded a bit at a time: a code of length L is a symbol when it is less than `counts[L]` past that
/// length's first code; a longer code's first L bits never are. Only literals are Huffman-coded, and a connection
/// sends few once its table holds its fields, so the simple walk is enough.
enum HPACKHuffman {
    /// Each symbol's code length: bytes 0–255, then EOS (256).
    static let codeLengths: [UInt8] = [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
        30,
    ]

    static let endOfString = 256
    static let longestCode = 30

    /// The code worked out from the lengths, per length: its first code, how many codes it has, and where its symbols
    /// start in `symbols` (all symbols by length, then by value).
    struct Code: Sendable {
        let firstCode: [UInt32]
        let counts: [Int]
        let firstSymbol: [Int]
        let symbols: [UInt16]

        init(lengths: [UInt8]) {
            var counts = [Int](repeating: 0, count: HPACKHuffman.longestCode + 1)
            for length in lengths { counts[Int(length)] += 1 }
            var firstCode = [UInt32](repeating: 0, count: HPACKHuffman.longestCode + 1)
            var firstSymbol = [Int](repeating: 0, count: HPACKHuffman.longestCode + 1)
            var code: UInt32 = 0
            var symbolsBefore = 0
            for length in 1...HPACKHuffman.longestCode {
                firstCode[length] = code
                firstSymbol[length] = symbolsBefore
                code = (code + UInt32(counts[length])) << 1
                symbolsBefore += counts[length]
            }
            symbols = lengths.indices.sorted { (lengths[$0], $0) < (lengths[$1], $1) }.map(UInt16.init)
            (self.firstCode, self.counts, self.firstSymbol) = (firstCode, counts, firstSymbol)
        }

        /// A symbol's code, read back from the tables (tests).
        func code(of symbol: Int) -> (bits: UInt32, length: Int) {
            let length = Int(HPACKHuffman.codeLengths[symbol])
            let rank = symbols[firstSymbol[length]...].firstIndex(of: UInt16(symbol))! - firstSymbol[length]
            return (firstCode[length] + UInt32(rank), length)
        }
    }

    static let code = Code(lengths: codeLengths)

    /// A Huffman-coded string's bytes, as a string (invalid UTF-8 repaired, as a plain literal's is); nil when they
    /// hold EOS, or end in more than 7 bits, or in bits that are not EOS's first ones — all 1s (§5.2).
    static func decode(_ bytes: UnsafeRawBufferPointer) -> String? {
        let table = Self.code
        var valid = true
        // The shortest code is 5 bits.
        let decoded = String(unsafeUninitializedCapacity: bytes.count * 8 / 5 + 1) { output in
            var written = 0
            var bits: UInt32 = 0
            var length = 0
            for byte in bytes {
                for shift in stride(from: 7, through: 0, by: -1) {
                    bits = bits << 1 | UInt32((byte >> UInt8(shift)) & 1)
                    length += 1
                    let rank = Int(bits &- table.firstCode[length])
                    if bits >= table.firstCode[length], rank < table.counts[length] {
                        let symbol = table.symbols[table.firstSymbol[length] + rank]
                        guard symbol != endOfString else {
                            valid = false
                            return 0
                        }
                        output[written] = UInt8(symbol)
                        written += 1
                        (bits, length) = (0, 0)
                    } else if length == longestCode {
                        // Every 30-bit code is a symbol (EOS the last): not reached, but never read past the tables.
                        valid = false
                        return 0
                    }
                }
            }
            guard length <= 7, bits == (1 << UInt32(length)) - 1 else {
                valid = false
                return 0
            }
            return written
        }
        return valid ? decoded : nil
    }
}
