#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import NIOCore
import NIOHTTP1

/// Why HTTP/1.x bytes could not be read as a message (a request or a response).
public enum HTTP1ParseError: Error, Equatable {
    /// The request line or status line.
    case invalidStartLine
    case invalidHeader
    /// The head (or trailer section) is larger than the parser takes: 431 for a request.
    case headTooLarge
    case invalidContentLength
    /// Both `content-length` and `transfer-encoding`, `content-length` twice, or a request whose last transfer coding
    /// is not `chunked` (its end could not be known).
    case ambiguousFraming
    case invalidChunk
    /// The connection closed in the middle of a message.
    case truncated
    /// Bytes after a message that said the connection closes after it.
    case bytesAfterClose
}

/// How a message's body is delimited (RFC 9112 §6.3), as its head says.
enum HTTP1Framing: Equatable {
    case chunked
    case untilClose
    case length(Int)
}

/// The pieces of HTTP/1.x syntax both parsers read with: byte classes, a head's lines and fields, chunk size lines.
enum HTTP1Syntax {
    /// tchar (RFC 9110 §5.6.2).
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        ByteSet.token.contains(byte)
    }

    /// A field value's bytes: visible ASCII, space, tab and obs-text (RFC 9110 §5.5); no other control byte.
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte >= 0x20 ? byte != 0x7F : byte == UInt8(ascii: "\t")
    }

    /// Whether every byte is a field value's (`isFieldValueByte`), read eight at a time: a word with no byte below
    /// 0x20 and none 0x7F passes with a few instructions (a byte at a time cost ~11 a byte of every field value);
    /// a word with one (a tab, or a byte refused) is read byte by byte.
    static func areFieldValueBytes(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset + 8 <= bytes.count {
            let word = bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            // A byte below 0x20 (obs-text, 0x80 and up, is not), or a byte 0x7F.
            if ByteWords.hasByte(below: 0x20, in: word) || ByteWords.hasByte(0x7F, in: word) {
                for index in offset..<(offset + 8) where !isFieldValueByte(bytes[index]) { return false }
            }
            offset += 8
        }
        for index in offset..<bytes.count where !isFieldValueByte(bytes[index]) { return false }
        return true
    }

    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for index in 0..<bytes.count where bytes[index] | 0x20 != expected[index] { return false }
        return true
    }

    /// Whether `bytes` are `literal`'s, exactly: compared a word at a time (`ByteWords.same`), where `elementsEqual`
    /// against a string's UTF-8 view took the generic path (~100 instructions for `GET`).
    @inline(__always)
    static func equals(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        bytes.count == literal.utf8CodeUnitCount
            && ByteWords.same(bytes, UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount))
    }

    /// Whether `bytes`, as far as they go, are `literal`'s first bytes (only the literal's length of them is read).
    static func startsLike(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
        let expected = UnsafeRawBufferPointer(start: literal.utf8Start, count: literal.utf8CodeUnitCount)
        for index in 0..<min(bytes.count, expected.count) where bytes[index] != expected[index] { return false }
        return true
    }

    /// Whether `bytes` begin with a lower-case literal, ignoring ASCII case.
    static func startsIgnoringCase(_ bytes: UnsafeRawBufferPointer, with lowercase: StaticString) -> Bool {
        guard bytes.count >= lowercase.utf8CodeUnitCount else { return false }
        return equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: bytes[0..<lowercase.utf8CodeUnitCount]), lowercase)
    }

    /// The `connection` options the proxy acts on.
    enum ConnectionOption { case close, keepAlive, upgrade }

    /// Which of them `option` is (a list element, trimmed), in any case; by its length first.
    static func connectionOption(_ option: UnsafeRawBufferPointer) -> ConnectionOption? {
        switch option.count {
        case 5 where equalsIgnoringCase(option, "close"): .close
        case 10 where equalsIgnoringCase(option, "keep-alive"): .keepAlive
        case 7 where equalsIgnoringCase(option, "upgrade"): .upgrade
        default: nil
        }
    }

    /// A `String` against a lower-case literal, ignoring ASCII case, read in place.
    static func equalsIgnoringCase(_ string: String, _ lowercase: StaticString) -> Bool {
        var string = string
        return string.withUTF8 { equalsIgnoringCase(UnsafeRawBufferPointer($0), lowercase) }
    }

    static func trimmingWhitespace(_ bytes: Slice<UnsafeRawBufferPointer>) -> Slice<UnsafeRawBufferPointer> {
        var start = bytes.startIndex
        var end = bytes.endIndex
        while start < end, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") || bytes[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return bytes[start..<end]
    }

    /// The elements of a comma-separated list (RFC 9110 §5.6.1), each without the spaces and tabs around it; empty
    /// ones included (a trailing comma gives one), for the caller to skip or refuse.
    static func forEachListElement(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try forEachListElement(value) { element, _ in try body(element) }
    }

    /// The same, and whether a tab is in the whitespace after each element (before its comma or the list's end):
    /// llhttp reads only spaces there after the values it knows (`chunked`, `close`, `keep-alive`, `upgrade`).
    static func forEachListElement(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer, _ tabAfter: Bool) throws -> Void) rethrows {
        var rest = value[...]
        while true {
            let comma = rest.firstIndex(of: UInt8(ascii: ",")) ?? rest.endIndex
            let element = trimmingWhitespace(rest[rest.startIndex..<comma])
            try body(UnsafeRawBufferPointer(rebasing: element), value[element.endIndex..<comma].contains(UInt8(ascii: "\t")))
            guard comma < rest.endIndex else { return }
            rest = rest[(comma + 1)...]
        }
    }

    /// `HTTP/1.1` or `HTTP/1.0` (nil for anything else: NIO's decoder refuses other major versions, and no 1.x other
    /// than these two exists).
    static func version(_ bytes: Slice<UnsafeRawBufferPointer>) -> HTTPVersion? {
        // "HTTP/1." compared as one word (a byte-wise `starts(with:)` cost ~390 instructions a line).
        guard bytes.count == 8 else { return nil }
        let word = UInt64(littleEndian: UnsafeRawBufferPointer(rebasing: bytes).loadUnaligned(as: UInt64.self))
        guard word & 0x00FF_FFFF_FFFF_FFFF == 0x002E_312F_5054_5448 else { return nil }
        switch bytes[bytes.startIndex + 7] {
        case UInt8(ascii: "1"): return .http1_1
        case UInt8(ascii: "0"): return .http1_0
        default: return nil
        }
    }

    /// Header (or trailer) lines up to the empty line; each `name: value` with a token name, no whitespace before
    /// the colon, and the value's surrounding whitespace trimmed.
    static func parseFields(_ lines: inout HTTP1LineReader, summary: inout HTTP1FieldSummary) throws -> HTTPHeaders {
        var fields: [(String, String)] = []
        let tokens = ByteTable.token
        while let line = try lines.next() {
            if line.isEmpty { return HTTPHeaders(fields) }
            // The name is the token bytes up to the colon, found in the same pass (a colon is not a token byte).
            var colon = 0
            while colon < line.count, tokens.contains(line[colon]) { colon += 1 }
            guard colon > 0, colon < line.count, line[colon] == UInt8(ascii: ":") else { throw HTTP1ParseError.invalidHeader }
            let name = UnsafeRawBufferPointer(rebasing: line[0..<colon])
            let untrimmed = line[(colon + 1)...]
            let value = UnsafeRawBufferPointer(rebasing: trimmingWhitespace(untrimmed))
            guard areFieldValueBytes(value) else { throw HTTP1ParseError.invalidHeader }
            try summary.note(name: name, value: value, untrimmed: UnsafeRawBufferPointer(rebasing: untrimmed))
            if fields.isEmpty { fields.reserveCapacity(16) }
            fields.append((String(utf8Bytes: name), String(utf8Bytes: value)))
        }
        throw HTTP1ParseError.invalidHeader  // no empty line: cannot happen, the section was found by it
    }

    /// A chunk's size line at the buffer's start: hex digits, then extensions, then CRLF. Nil while incomplete.
    static func readChunkSize(_ buffer: inout ByteBuffer) throws -> Int? {
        let result: (size: Int, length: Int)? = try buffer.withUnsafeReadableBytes { bytes in
            guard let lineFeed = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
                guard bytes.count <= maxChunkLineBytes else { throw HTTP1ParseError.invalidChunk }
                return nil
            }
            guard lineFeed >= 2, bytes[lineFeed - 1] == UInt8(ascii: "\r") else { throw HTTP1ParseError.invalidChunk }
            var size = 0
            var index = 0
            while index < lineFeed - 1, let digit = hexValue(bytes[index]) {
                guard size <= (Int.max >> 5) else { throw HTTP1ParseError.invalidChunk }
                size = size << 4 | digit
                index += 1
            }
            guard index > 0 else { throw HTTP1ParseError.invalidChunk }
            guard isChunkExtensions(UnsafeRawBufferPointer(rebasing: bytes[index..<(lineFeed - 1)])) else { throw HTTP1ParseError.invalidChunk }
            return (size, lineFeed + 1)
        }
        guard let result else { return nil }
        buffer.moveReaderIndex(forwardBy: result.length)
        return result.size
    }

    /// The longest chunk size line (with extensions).
    static let maxChunkLineBytes = 4096

    /// `*( ";" token [ "=" ( token / quoted-string ) ] )` (RFC 9112 §7.1.1, without the optional whitespace).
    private static func isChunkExtensions(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        func token() -> Bool {
            let start = index
            while index < bytes.count, isTokenByte(bytes[index]) { index += 1 }
            return index > start
        }
        while index < bytes.count {
            guard bytes[index] == UInt8(ascii: ";") else { return false }
            index += 1
            guard token() else { return false }
            guard index < bytes.count, bytes[index] == UInt8(ascii: "=") else { continue }
            index += 1
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else {
                guard token() else { return false }
                continue
            }
            index += 1
            var closed = false
            while index < bytes.count, !closed {
                let byte = bytes[index]
                index += 1
                if byte == UInt8(ascii: "\"") {
                    closed = true
                } else if byte == UInt8(ascii: "\\") {
                    guard index < bytes.count, isFieldValueByte(bytes[index]) else { return false }
                    index += 1
                } else if !isFieldValueByte(byte) {
                    return false
                }
            }
            guard closed else { return false }
        }
        return true
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Digits only, without sign or list (`5, 5` is refused, as llhttp does).
    static func parseContentLength(_ value: UnsafeRawBufferPointer) throws -> Int {
        guard !value.isEmpty, value.count <= 18 else { throw HTTP1ParseError.invalidContentLength }
        var length = 0
        for byte in value {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { throw HTTP1ParseError.invalidContentLength }
            length = length * 10 + Int(digit)
        }
        return length
    }
}

/// What a head's framing and connection headers said, gathered while its fields are read.
struct HTTP1FieldSummary {
    var contentLength: Int?
    var contentLengths = 0
    var transferEncodings = 0
    var lastCodingIsChunked = false
    private var chunkedSeen = false
    var connectionClose = false
    var connectionKeepAlive = false
    var connectionUpgrade = false
    var hasUpgrade = false
    /// A hop-by-hop field (`ProxyHeaders.hopByHopNames`) came.
    var hasHopByHopFields = false
    /// A field named `x-outrigger-…` came.
    var hasOwnFields = false

    /// What a response's fields say for its way downstream.
    var responseFacts: ResponseHeadFacts {
        ResponseHeadFacts(mayHaveHopByHopFields: hasHopByHopFields, mayHaveOwnFields: hasOwnFields, hasContentLength: contentLengths > 0)
    }

    /// The body's framing; `withoutFraming` when neither framing header is there (a response: until the close; a
    /// request: no body).
    func framing(withoutFraming: HTTP1Framing) throws -> HTTP1Framing {
        if transferEncodings > 0 {
            guard contentLengths == 0 else { throw HTTP1ParseError.ambiguousFraming }
            return lastCodingIsChunked ? .chunked : .untilClose
        }
        guard contentLengths <= 1 else { throw HTTP1ParseError.ambiguousFraming }
        if let contentLength { return .length(contentLength) }
        return withoutFraming
    }

    /// Whether the connection may carry another message after this one, by its version and `connection` options.
    func keepsConnection(_ version: HTTPVersion) -> Bool {
        version == .http1_1 ? !connectionClose : connectionKeepAlive
    }

    mutating func note(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, untrimmed: UnsafeRawBufferPointer) throws {
        // By length first: most names have none of the four lengths, and go without a byte compared.
        switch name.count {
        case 14 where HTTP1Syntax.equalsIgnoringCase(name, "content-length"):
            // Spaces around the digits only: llhttp refuses a tab there.
            guard !untrimmed.contains(UInt8(ascii: "\t")) else { throw HTTP1ParseError.invalidContentLength }
            contentLengths += 1
            contentLength = try HTTP1Syntax.parseContentLength(value)
        case 17 where HTTP1Syntax.equalsIgnoringCase(name, "transfer-encoding"):
            transferEncodings += 1
            hasHopByHopFields = true
            try noteTransferCodings(untrimmed)
        case 10 where HTTP1Syntax.equalsIgnoringCase(name, "connection"):
            hasHopByHopFields = true
            // The untrimmed value: the whitespace after the last option is read too. llhttp reads only spaces after the
            // options it knows; followed by a tab, one is another option to it, and the two would disagree on the
            // connection. Refused.
            try HTTP1Syntax.forEachListElement(untrimmed) { option, tabAfter in
                guard let known = HTTP1Syntax.connectionOption(option) else { return }
                switch known {
                case .close: connectionClose = true
                case .keepAlive: connectionKeepAlive = true
                case .upgrade: connectionUpgrade = true
                }
                if tabAfter { throw HTTP1ParseError.invalidHeader }
            }
        case 7 where HTTP1Syntax.equalsIgnoringCase(name, "upgrade"):
            hasUpgrade = hasUpgrade || !value.isEmpty  // an empty one asks for nothing (llhttp reads on as HTTP)
            hasHopByHopFields = true
        default:
            if ProxyHeaders.hopByHopIndex(name) != nil {
                hasHopByHopFields = true
            } else if HTTP1Syntax.startsIgnoringCase(name, with: "x-outrigger-") {
                hasOwnFields = true
            }
        }
    }

    /// The comma-separated transfer codings (the untrimmed value): tokens (no parameters, no empty elements), `chunked`
    /// at most once in the message; whether the last one is `chunked`. llhttp reads only spaces after a final
    /// `chunked`: a tab there makes it an unknown coding (the request refused, a response read to its close). Refused
    /// here too, so that the two never frame a message apart.
    private mutating func noteTransferCodings(_ untrimmed: UnsafeRawBufferPointer) throws {
        var tabAfterLast = false
        try HTTP1Syntax.forEachListElement(untrimmed) { coding, tabAfter in
            // An empty coding (a trailing comma leaves one) is refused.
            guard !coding.isEmpty, coding.allSatisfy(HTTP1Syntax.isTokenByte) else { throw HTTP1ParseError.invalidHeader }
            lastCodingIsChunked = HTTP1Syntax.equalsIgnoringCase(coding, "chunked")
            tabAfterLast = tabAfter
            if lastCodingIsChunked {
                guard !chunkedSeen else { throw HTTP1ParseError.ambiguousFraming }
                chunkedSeen = true
            }
        }
        if lastCodingIsChunked && tabAfterLast { throw HTTP1ParseError.invalidHeader }
    }
}

/// Finds where a head (or trailer section) ends in bytes that may arrive a few at a time, without scanning again what
/// it scanned before.
struct HTTP1SectionFinder {
    /// Where the search goes on in the bytes not yet consumed: the bytes before it hold no empty line.
    private var resumeAt = 0
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// The length of the section at the buffer's start, its empty line included, or nil while it is incomplete.
    /// `mayBeEmpty`: a trailer section may be just the empty line.
    mutating func length(in buffer: ByteBuffer, mayBeEmpty: Bool) throws -> Int? {
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            if mayBeEmpty, bytes.count >= 2, bytes[0] == UInt8(ascii: "\r"), bytes[1] == UInt8(ascii: "\n") { return 2 }
            // An empty line: LF, then CR LF or LF (a bare LF is refused by the line reader). Each LF is found by
            // `memchr` (a byte loop here cost ~10 instructions a byte of every head).
            var from = resumeAt
            while let lineFeed = bytes.firstLineFeed(from: from) {
                // While what follows this LF has not all arrived, the next search starts at it.
                let next = lineFeed + 1
                guard next < bytes.count else { resumeAt = lineFeed; return nil }
                if bytes[next] == UInt8(ascii: "\n") { return next + 1 }
                if bytes[next] == UInt8(ascii: "\r") {
                    guard next + 1 < bytes.count else { resumeAt = lineFeed; return nil }
                    if bytes[next + 1] == UInt8(ascii: "\n") { return next + 2 }
                }
                from = next
            }
            resumeAt = bytes.count
            return nil
        }
        if let found {
            resumeAt = 0
            guard found <= limit else { throw HTTP1ParseError.headTooLarge }
            return found
        }
        guard buffer.readableBytes <= limit else { throw HTTP1ParseError.headTooLarge }
        return nil
    }
}

/// The CRLF-ended lines of a complete head, without their CRLF; a bare LF is an error (a CR inside a line is refused
/// with the other control bytes by the line's reader).
struct HTTP1LineReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    mutating func next() throws -> UnsafeRawBufferPointer? {
        guard position < bytes.count else { return nil }
        guard let lineFeed = bytes.firstLineFeed(from: position) else { throw HTTP1ParseError.invalidHeader }
        guard lineFeed > position, bytes[lineFeed - 1] == UInt8(ascii: "\r") else { throw HTTP1ParseError.invalidHeader }
        let line = UnsafeRawBufferPointer(rebasing: bytes[position..<(lineFeed - 1)])
        position = lineFeed + 1
        return line
    }
}

extension UnsafeRawBufferPointer {
    /// The offset of the first LF at or after `offset` (`memchr`: a head's lines are searched word by word).
    @inline(__always)
    func firstLineFeed(from offset: Int) -> Int? {
        guard offset < count, let base = baseAddress else { return nil }
        guard let found = memchr(base + offset, Int32(UInt8(ascii: "\n")), count - offset) else { return nil }
        return UnsafeRawPointer(found) - base
    }
}

extension ByteBuffer {
    /// One empty buffer for every connection's unparsed bytes: letting go of a receive buffer costs no allocation.
    public static let noBytes = ByteBuffer()

    /// Lets go of a receive buffer whose bytes were all parsed, so the channel can read into it again.
    public mutating func releaseIfParsed() {
        if readableBytes == 0 { self = Self.noBytes }
    }

    /// The bytes not parsed yet (the start of a tunnel's, after an upgrade), leaving none.
    public mutating func takeUnparsed() -> ByteBuffer {
        defer { self = Self.noBytes }
        return self
    }

    /// Adds a read's bytes to what was received and not yet parsed: taken as they are when nothing waits (no copy),
    /// appended otherwise.
    public mutating func appendReceived(_ bytes: ByteBuffer) {
        if readableBytes == 0 {
            self = bytes
        } else {
            var bytes = bytes
            writeBuffer(&bytes)
        }
    }
}
