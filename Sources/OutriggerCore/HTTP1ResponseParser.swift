import NIOCore
import NIOHTTP1

/// Reads HTTP/1.x responses from an upstream connection's bytes, one part at a time: the head, body slices of the
/// received buffers (never copied), the end with its trailers. What NIO's `HTTPResponseDecoder` did in the upstream
/// pipeline, without the pipeline hop and the boxed part per part, and without the outbound hop its decoder needs to
/// learn each request's method (`expectResponse(to:)` says it).
///
/// Pure: the caller feeds the bytes and acts on the parts. It is at least as strict as NIO's llhttp decoder — a
/// response it accepts, NIO's decoder reads the same (checked by a differential test and a fuzz target); some NIO
/// accepts it refuses: an HTTP version other than 1.0 and 1.1, a line not ended by CRLF, whitespace before a header's
/// colon, a folded header line, both `content-length` and `transfer-encoding`, a repeated `content-length`.
///
/// Framing (RFC 9112 §6.3): no body after a 1xx, 204 or 304, or for a HEAD or CONNECT request; chunked when the last
/// transfer coding is `chunked`; delimited by the connection's close for any other transfer coding or when neither
/// framing header is there; else `content-length`. A 1xx other than 101 is read and dropped (the final response
/// follows). After a `101 Switching Protocols` the bytes are no longer HTTP: `isUpgraded`, and what follows stays
/// in the buffer for the tunnel.
public struct HTTP1ResponseParser {
    /// NIO's response parts, as its decoder gave them.
    public typealias Part = HTTPClientResponsePart

    public enum ParseError: Error, Equatable {
        case invalidStatusLine
        case invalidHeader
        case headTooLarge
        case invalidContentLength
        /// Both `content-length` and `transfer-encoding`, or `content-length` twice.
        case ambiguousFraming
        case invalidChunk
        /// The connection closed in the middle of a response.
        case truncated
        /// Bytes after a response that said the connection closes after it.
        case bytesAfterClose
    }

    enum State: Equatable {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        /// The CRLF after a chunk's data.
        case chunkDataEnd
        case trailers
        case untilClose
        /// The head said there is no body: the end is the next part.
        case endDue
        case upgraded
        /// The last response said the connection closes after it: any byte more is an error (as llhttp has it).
        case closing
    }

    /// The largest head (status line and headers) or trailer section read: NIO's limits are 80 KiB of header
    /// names and values.
    public static let maxHeadBytes = 96 * 1024
    /// The longest chunk size line (with extensions).
    static let maxChunkLineBytes = 4096

    private(set) var state = State.head
    /// The request method the next response answers (nil: none sent; read as not HEAD).
    private var awaitedMethod: HTTPMethod?
    /// How far the search for the end of an incomplete head (or trailer section) got, so bytes that arrive one
    /// at a time are not scanned again.
    private var scannedBytes = 0

    public init() {}

    /// The bytes after a `101 Switching Protocols` response are not HTTP: nothing more is parsed.
    public var isUpgraded: Bool { state == .upgraded }

    /// The response being read has a body that ends when the connection closes: the connection carries no other
    /// (what llhttp's keep-alive verdict adds to the head's own).
    public var bodyEndsAtClose: Bool { state == .untilClose }

    /// A request went out: its method decides whether the response has a body.
    public mutating func expectResponse(to method: HTTPMethod) {
        awaitedMethod = method
    }

    /// The next part from `buffer` (its bytes consumed), or nil when more bytes are needed. Body parts are slices
    /// of `buffer`.
    public mutating func next(_ buffer: inout ByteBuffer) throws -> Part? {
        while true {
            switch state {
            case .head:
                guard let head = try readHead(&buffer) else { return nil }
                let code = Int(head.status.code)
                if code < 200 && code != 101 {  // informational: the final response follows
                    if !keepsConnection { state = .closing }
                    continue
                }
                state = bodyFraming(of: head)
                return .head(head)
            case .fixedBody(let remaining):
                guard let (body, left) = Self.readBody(&buffer, upTo: remaining) else { return nil }
                state = left == 0 ? .endDue : .fixedBody(remaining: left)
                return .body(body)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunkSize:
                guard let size = try readChunkSize(&buffer) else { return nil }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard let (body, left) = Self.readBody(&buffer, upTo: remaining) else { return nil }
                state = left == 0 ? .chunkDataEnd : .chunkData(remaining: left)
                return .body(body)
            case .chunkDataEnd:
                guard buffer.readableBytes >= 2 else { return nil }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw ParseError.invalidChunk }
                state = .chunkSize
            case .trailers:
                guard let trailers = try readTrailers(&buffer) else { return nil }
                state = keepsConnection ? .head : .closing
                return .end(trailers)
            case .endDue:
                state = switchesProtocols ? .upgraded : keepsConnection ? .head : .closing
                switchesProtocols = false
                return .end(nil)
            case .upgraded:
                return nil
            case .closing:
                guard buffer.readableBytes == 0 else { throw ParseError.bytesAfterClose }
                return nil
            }
        }
    }

    /// What the buffer holds of the `remaining` body bytes, as a slice, and how many remain after it; nil when empty.
    private static func readBody(_ buffer: inout ByteBuffer, upTo remaining: Int) -> (ByteBuffer, remaining: Int)? {
        guard buffer.readableBytes > 0 else { return nil }
        let length = min(remaining, buffer.readableBytes)
        return (buffer.readSlice(length: length)!, remaining - length)
    }

    /// The connection closed: the end of a body delimited by the close, or nothing when between responses;
    /// a response cut short is an error.
    public mutating func connectionClosed(leaving buffer: ByteBuffer) throws -> Part? {
        switch state {
        case .untilClose:
            state = .head
            return .end(nil)
        case .head where buffer.readableBytes == 0, .upgraded, .closing:
            return nil
        case .endDue:
            state = .head
            return .end(nil)
        default:
            throw ParseError.truncated
        }
    }

    // MARK: Framing

    /// Set when the response just read switches protocols: after its end the bytes are not HTTP.
    private var switchesProtocols = false

    private mutating func bodyFraming(of head: HTTPResponseHead) -> State {
        let method = awaitedMethod
        awaitedMethod = nil
        let code = head.status.code
        if code == 101 {
            switchesProtocols = true
            return .endDue
        }
        if method == .HEAD || method == .CONNECT || code == 204 || code == 304 { return .endDue }
        switch framing {
        case .chunked: return .chunkSize
        case .untilClose: return .untilClose
        case .length(let length): return length == 0 ? .endDue : .fixedBody(remaining: length)
        }
    }

    private enum Framing {
        case chunked
        case untilClose
        case length(Int)
    }

    /// The last head's `connection` options and version let the connection carry another response.
    private var keepsConnection = true

    /// The framing the last head's headers say (set by `readHead`).
    private var framing = Framing.untilClose

    // MARK: Heads and trailers

    private mutating func readHead(_ buffer: inout ByteBuffer) throws -> HTTPResponseHead? {
        // Bytes that cannot begin a response are refused at once, as llhttp does, not when an empty line comes:
        // a body an upstream sent where none may be (after a 204, say) must not wait in the connection and be
        // taken for the next request's answer.
        let begins = buffer.withUnsafeReadableBytes { bytes in
            bytes.prefix(Self.statusLinePrefix.count).elementsEqual(Self.statusLinePrefix.prefix(bytes.count))
        }
        guard begins else { throw ParseError.invalidStatusLine }
        guard let length = try sectionLength(buffer, emptySectionIsEnd: false) else { return nil }
        let head = try buffer.withUnsafeReadableBytes { bytes -> HTTPResponseHead in
            var lines = LineReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<length]))
            guard let statusLine = try lines.next() else { throw ParseError.invalidStatusLine }
            let (version, code) = try Self.parseStatusLine(statusLine)
            var fields = FieldSummary()
            let headers = try Self.parseFields(&lines, summary: &fields)
            framing = try fields.framing()
            keepsConnection = version == .http1_1 ? !fields.connectionClose : fields.connectionKeepAlive
            return HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: code), headers: headers)
        }
        buffer.moveReaderIndex(forwardBy: length)
        return head
    }

    /// The trailer section: nil while incomplete, `.some(nil)` when there are no trailers.
    private mutating func readTrailers(_ buffer: inout ByteBuffer) throws -> HTTPHeaders?? {
        guard let length = try sectionLength(buffer, emptySectionIsEnd: true) else { return nil }
        let trailers = try buffer.withUnsafeReadableBytes { bytes -> HTTPHeaders? in
            guard length > 2 else { return nil }  // the last chunk's empty line: no trailers
            var lines = LineReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<length]))
            var ignored = FieldSummary()
            return try Self.parseFields(&lines, summary: &ignored)
        }
        buffer.moveReaderIndex(forwardBy: length)
        return .some(trailers)
    }

    /// The length of the head (or trailer section) at the buffer's start, its empty line included, or nil while
    /// it is incomplete. A trailer section may be just the empty line.
    private mutating func sectionLength(_ buffer: ByteBuffer, emptySectionIsEnd: Bool) throws -> Int? {
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            if emptySectionIsEnd, bytes.count >= 2, bytes[0] == UInt8(ascii: "\r"), bytes[1] == UInt8(ascii: "\n") { return 2 }
            // An empty line: LF, then CR LF or LF.
            var index = max(scannedBytes, 1)
            while index < bytes.count {
                if bytes[index - 1] == UInt8(ascii: "\n") {
                    if bytes[index] == UInt8(ascii: "\n") { return index + 1 }
                    if bytes[index] == UInt8(ascii: "\r") {
                        guard index + 1 < bytes.count else { break }
                        if bytes[index + 1] == UInt8(ascii: "\n") { return index + 2 }
                    }
                }
                index += 1
            }
            scannedBytes = max(index - 1, 0)
            return nil
        }
        if let found {
            scannedBytes = 0
            guard found <= Self.maxHeadBytes else { throw ParseError.headTooLarge }
            return found
        }
        guard buffer.readableBytes <= Self.maxHeadBytes else { throw ParseError.headTooLarge }
        return nil
    }

    private static let statusLinePrefix = Array("HTTP/1.".utf8)

    /// `HTTP/1.x SP 3DIGIT [SP reason]`.
    private static func parseStatusLine(_ line: UnsafeRawBufferPointer) throws -> (HTTPVersion, Int) {
        guard line.count >= 12, line.starts(with: "HTTP/1.".utf8), line[8] == UInt8(ascii: " ") else {
            throw ParseError.invalidStatusLine
        }
        let version: HTTPVersion
        switch line[7] {
        case UInt8(ascii: "1"): version = .http1_1
        case UInt8(ascii: "0"): version = .http1_0
        default: throw ParseError.invalidStatusLine
        }
        var code = 0
        for index in 9..<12 {
            let digit = line[index] &- UInt8(ascii: "0")
            guard digit < 10 else { throw ParseError.invalidStatusLine }
            code = code * 10 + Int(digit)
        }
        guard code >= 100 else { throw ParseError.invalidStatusLine }
        if line.count > 12 {
            guard line[12] == UInt8(ascii: " ") else { throw ParseError.invalidStatusLine }
            for byte in line[13...] where !isFieldValueByte(byte) { throw ParseError.invalidStatusLine }
        }
        return (version, code)
    }

    /// What the framing headers said, gathered while the fields are read.
    private struct FieldSummary {
        var contentLength: Int?
        var contentLengths = 0
        var transferEncoding: UnsafeRawBufferPointer?
        var transferEncodings = 0
        var lastCodingIsChunked = false
        var connectionClose = false
        var connectionKeepAlive = false

        func framing() throws -> Framing {
            if transferEncodings > 0 {
                guard contentLengths == 0 else { throw ParseError.ambiguousFraming }
                return lastCodingIsChunked ? .chunked : .untilClose
            }
            guard contentLengths <= 1 else { throw ParseError.ambiguousFraming }
            if let contentLength { return .length(contentLength) }
            return .untilClose
        }

        mutating func note(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
            if equalsIgnoringCase(name, "content-length") {
                contentLengths += 1
                contentLength = try parseContentLength(value)
            } else if equalsIgnoringCase(name, "transfer-encoding") {
                transferEncodings += 1
                lastCodingIsChunked = lastCodingIsChunkedIn(value)
            } else if equalsIgnoringCase(name, "connection") {
                for option in value.split(separator: UInt8(ascii: ",")) {
                    let option = UnsafeRawBufferPointer(rebasing: trimmingWhitespace(option))
                    if equalsIgnoringCase(option, "close") { connectionClose = true }
                    if equalsIgnoringCase(option, "keep-alive") { connectionKeepAlive = true }
                }
            }
        }
    }

    /// Header (or trailer) lines up to the empty line; each `name: value` with a token name, no whitespace before
    /// the colon, and the value's surrounding whitespace trimmed.
    private static func parseFields(_ lines: inout LineReader, summary: inout FieldSummary) throws -> HTTPHeaders {
        var fields: [(String, String)] = []
        while let line = try lines.next() {
            if line.isEmpty { return HTTPHeaders(fields) }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { throw ParseError.invalidHeader }
            let name = UnsafeRawBufferPointer(rebasing: line[0..<colon])
            for byte in name where !isTokenByte(byte) { throw ParseError.invalidHeader }
            let value = UnsafeRawBufferPointer(rebasing: trimmingWhitespace(line[(colon + 1)...]))
            for byte in value where !isFieldValueByte(byte) { throw ParseError.invalidHeader }
            try summary.note(name: name, value: value)
            if fields.isEmpty { fields.reserveCapacity(16) }
            fields.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        throw ParseError.invalidHeader  // no empty line: cannot happen, the section was found by it
    }

    // MARK: Chunks

    /// A chunk's size line: hex digits, then extensions (`;…`) that are skipped, then CRLF.
    private mutating func readChunkSize(_ buffer: inout ByteBuffer) throws -> Int? {
        let result: (size: Int, length: Int)? = try buffer.withUnsafeReadableBytes { bytes in
            guard let lineFeed = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
                guard bytes.count <= Self.maxChunkLineBytes else { throw ParseError.invalidChunk }
                return nil
            }
            guard lineFeed >= 2, bytes[lineFeed - 1] == UInt8(ascii: "\r") else { throw ParseError.invalidChunk }
            var size = 0
            var index = 0
            while index < lineFeed - 1, let digit = Self.hexValue(bytes[index]) {
                guard size <= (Int.max >> 5) else { throw ParseError.invalidChunk }
                size = size << 4 | digit
                index += 1
            }
            guard index > 0 else { throw ParseError.invalidChunk }
            guard Self.isChunkExtensions(UnsafeRawBufferPointer(rebasing: bytes[index..<(lineFeed - 1)])) else { throw ParseError.invalidChunk }
            return (size, lineFeed + 1)
        }
        guard let result else { return nil }
        buffer.moveReaderIndex(forwardBy: result.length)
        return result.size
    }

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

    // MARK: Bytes

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// tchar (RFC 9110 §5.6.2).
    static func isTokenByte(_ byte: UInt8) -> Bool {
        tokenBytes[Int(byte)]
    }

    private static let tokenBytes: [Bool] = (0..<256).map { value in
        let byte = UInt8(value)
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        default: return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// A field value's bytes: visible ASCII, space, tab and obs-text (RFC 9110 §5.5); no other control byte.
    static func isFieldValueByte(_ byte: UInt8) -> Bool {
        byte >= 0x20 ? byte != 0x7F : byte == UInt8(ascii: "\t")
    }

    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for index in 0..<bytes.count where bytes[index] | 0x20 != expected[index] { return false }
        return true
    }

    /// Digits only, without sign or list (`5, 5` is refused, as llhttp does).
    private static func parseContentLength(_ value: UnsafeRawBufferPointer) throws -> Int {
        guard !value.isEmpty, value.count <= 18 else { throw ParseError.invalidContentLength }
        var length = 0
        for byte in value {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { throw ParseError.invalidContentLength }
            length = length * 10 + Int(digit)
        }
        return length
    }

    private static func trimmingWhitespace(_ bytes: Slice<UnsafeRawBufferPointer>) -> Slice<UnsafeRawBufferPointer> {
        var start = bytes.startIndex
        var end = bytes.endIndex
        while start < end, bytes[start] == UInt8(ascii: " ") || bytes[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, bytes[end - 1] == UInt8(ascii: " ") || bytes[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        return bytes[start..<end]
    }

    /// Whether the last of the comma-separated transfer codings (parameters after `;` ignored) is `chunked`.
    private static func lastCodingIsChunkedIn(_ value: UnsafeRawBufferPointer) -> Bool {
        var last = value[...]
        if let comma = value.lastIndex(of: UInt8(ascii: ",")) { last = value[(comma + 1)...] }
        if let semicolon = last.firstIndex(of: UInt8(ascii: ";")) { last = last[..<semicolon] }
        return equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: trimmingWhitespace(last)), "chunked")
    }
}

/// The CRLF-ended lines of a complete head, without their CRLF; a bare LF is an error.
private struct LineReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    mutating func next() throws -> UnsafeRawBufferPointer? {
        guard position < bytes.count else { return nil }
        guard let lineFeed = bytes[position...].firstIndex(of: UInt8(ascii: "\n")) else { throw HTTP1ResponseParser.ParseError.invalidHeader }
        guard lineFeed > position, bytes[lineFeed - 1] == UInt8(ascii: "\r") else { throw HTTP1ResponseParser.ParseError.invalidHeader }
        let line = UnsafeRawBufferPointer(rebasing: bytes[position..<(lineFeed - 1)])
        position = lineFeed + 1
        return line  // a CR inside is refused with the other control bytes by the line's reader
    }
}
