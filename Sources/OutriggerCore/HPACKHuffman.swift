/// HPACK's Huffman code (RFC 7541 Appendix B), decoded. The code is canonical — within a length the codes count up
/// with the symbols, and each length's first code follows the last of the lengths before — so it is given here by its
/// lengths alone, and the codes are worked out from them once (the tests check them against the RFC's).
///
/// A string is decoded a symbol at a time from a window of its next 32 bits: left-aligned, canonical codes rise with
/// their length, so the window starts with a code of the first length whose limit it is below (most symbols are 5 to
/// 8 bits: a few compares), and that code's rank within its length gives the symbol.
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
    /// start in `symbols` (all symbols by length, then by value); and the lengths in use, shortest first, each with
    /// its limit: the first code past its own, left-aligned in 32 bits.
    struct Code: Sendable {
        let firstCode: [UInt32]
        let counts: [Int]
        let firstSymbol: [Int]
        let symbols: [UInt16]
        let lengthsInUse: [Int]
        let limits: [UInt64]

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
            lengthsInUse = (1...HPACKHuffman.longestCode).filter { counts[$0] > 0 }
            // The last is 2^32: every window is below it.
            limits = lengthsInUse.map { (UInt64(firstCode[$0]) + UInt64(counts[$0])) << UInt64(32 - $0) }
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

    /// A Huffman-coded string's bytes, as a string (invalid UTF-8 repaired, as a plain literal's is) and its length in
    /// octets as decoded (what a table entry's size counts); nil when they hold EOS, or end in more than 7 bits, or in
    /// bits that are not EOS's first ones — all 1s (§5.2).
    static func decode(_ bytes: UnsafeRawBufferPointer) -> (string: String, octets: Int)? {
        let table = Self.code
        // The shortest code is 5 bits. Decoded on the stack, then made a string of its exact size.
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: bytes.count * 8 / 5 + 1) { output -> (String, Int)? in
            var written = 0
            // The bits not yet decoded, left-aligned, and how many there are.
            var bits: UInt64 = 0
            var count = 0
            var next = 0
            while true {
                while count <= 56, next < bytes.count {
                    bits |= UInt64(bytes[next]) << UInt64(56 - count)
                    count += 8
                    next += 1
                }
                guard count > 0 else { break }
                // The next 32 bits, 1s past the input's end (as padding is): fewer than 32 only at the end.
                let window = (count >= 32 ? bits : bits | UInt64.max >> UInt64(count)) >> 32
                var which = 0
                while window >= table.limits[which] { which += 1 }
                let length = table.lengthsInUse[which]
                guard length <= count else {
                    // What is left is padding: at most 7 bits, all 1s.
                    guard count <= 7, bits >> UInt64(64 - count) == (1 << UInt64(count)) - 1 else { return nil }
                    break
                }
                let code = UInt32(truncatingIfNeeded: window >> UInt64(32 - length))
                let symbol = table.symbols[table.firstSymbol[length] + Int(code - table.firstCode[length])]
                guard symbol != endOfString else { return nil }
                output[written] = UInt8(truncatingIfNeeded: symbol)
                written += 1
                bits <<= UInt64(length)
                count -= length
            }
            return (String(utf8Bytes: UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: output[..<written]))), written)
        }
    }
}
