/// Whether an HTTP/2 header block — a request's, a response's, or trailers — is well formed (RFC 9113 §8.1.2, §8.2,
/// §8.3): names in lower case and made of token characters, no field HTTP/2 forbids, pseudo-fields known for the
/// block, once each and before the regular ones, the ones it needs present, and `content-length` a number. A
/// malformed message is a stream error (PROTOCOL_ERROR). Fed one field at a time, as HPACK decodes them.
public struct HTTP2FieldCheck {
    public enum Block: Sendable { case request, response, trailers }

    private let block: Block
    private var method: String?
    private var hasScheme = false
    private var hasAuthority = false
    private var path: String?
    private var sawRegular = false
    /// A response's `:status`.
    public private(set) var status: Int?
    /// The request's declared body length, for the stream's DATA to be held to (RFC 9113 §8.1.1).
    public private(set) var contentLength: Int?
    /// Why the block is malformed: the first reason found.
    public private(set) var malformed: String?

    public init(_ block: Block) {
        self.block = block
    }

    public mutating func add(name: String, value: String) {
        guard malformed == nil else { return }
        let bytes = name.utf8
        guard let first = bytes.first else { return fail("an empty field name") }
        if first == UInt8(ascii: ":") {
            addPseudo(name, value)
        } else {
            addRegular(name, value)
        }
        if malformed == nil, Self.hasNULCROrLF(value) {
            fail("a NUL, CR or LF in \(name)'s value")
        }
    }

    private mutating func addPseudo(_ name: String, _ value: String) {
        guard block != .trailers else { return fail("the pseudo-field \(name) in trailers") }
        guard !sawRegular else { return fail("the pseudo-field \(name) after a regular field") }
        if block == .response { return addStatus(name, value) }
        // They become an HTTP/1.1 request line: a space or control character there would split it (smuggling).
        guard !Self.hasSpaceOrControl(value) else { return fail("a space or control character in \(name)") }
        // By length first: a name is compared with one of the four at most (an unequal comparison of two strings
        // takes `String`'s slow path).
        switch name.utf8.count {
        case 7 where name == ":method":
            guard method == nil else { return fail("two :method") }
            method = value
        case 7 where name == ":scheme":
            guard !hasScheme else { return fail("two :scheme") }
            hasScheme = true
        case 10 where name == ":authority":
            guard !hasAuthority else { return fail("two :authority") }
            hasAuthority = true
        case 5 where name == ":path":
            guard path == nil else { return fail("two :path") }
            path = value
        default:
            fail("the unknown pseudo-field \(name)")
        }
    }

    /// A response has one pseudo-field, `:status`: three digits (RFC 9113 §8.3.2), and not 101, which HTTP/2 has not (§8.6).
    private mutating func addStatus(_ name: String, _ value: String) {
        guard name == ":status" else { return fail("the pseudo-field \(name) in a response") }
        guard status == nil else { return fail("two :status") }
        guard value.utf8.count == 3, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              let code = Int(value), code >= 100 else { return fail(":status \(value) is not a status code") }
        guard code != 101 else { return fail(":status 101, which HTTP/2 has not") }
        status = code
    }

    private mutating func addRegular(_ name: String, _ value: String) {
        sawRegular = true
        guard !Self.any(of: name, in: .notLowercaseToken) else { return fail("the field name \(name) (upper case or not a token)") }
        // By length first: most names are none of these, and are told so without a comparison.
        switch name.utf8.count {
        case 2 where name == "te":
            if value != "trailers" { fail("te other than trailers") }
        case 7 where name == "upgrade", 10 where name == "connection" || name == "keep-alive",
             16 where name == "proxy-connection", 17 where name == "transfer-encoding":
            fail("the connection-specific field \(name)")
        case 14 where name == "content-length":
            guard let length = Int(value), length >= 0, value.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
                return fail("content-length \(value) is not a number")
            }
            guard contentLength == nil || contentLength == length else { return fail("two different content-lengths") }
            contentLength = length
        default:
            break
        }
    }

    /// The block ended: what it lacks makes it malformed, and so does a request that ends with its head yet
    /// declares a body (RFC 9113 §8.1.1; whether a response may is `HTTP2Streams.responseAccepted`'s: it knows the
    /// request). - Returns: why it is malformed, or nil.
    public mutating func finish(endStream: Bool) -> String? {
        if malformed == nil, block == .response, status == nil { fail("no :status") }
        if malformed == nil, endStream, block == .request, let contentLength, contentLength > 0 {
            fail("content-length \(contentLength) on a request without a body")
        }
        if malformed == nil, block == .request {
            if let method {
                if method == "CONNECT" {
                    // RFC 9113 §8.5: :authority only (extended CONNECT is not offered).
                    if !hasAuthority || hasScheme || path != nil { fail("CONNECT needs :authority and no :scheme or :path") }
                } else if !hasScheme || path == nil || path == "" {
                    fail("no :scheme or :path")
                }
            } else {
                fail("no :method")
            }
        }
        return malformed
    }

    private mutating func fail(_ why: String) {
        if malformed == nil { malformed = why }
    }

    /// Whether any of a string's bytes is in the set: read in place, a bit test a byte. Inlined, so that the set's
    /// words are constants in the loop (passed in, they were read and switched on for every byte: +10 % on the check).
    @inline(__always)
    private static func any(of string: String, in set: ByteSet) -> Bool {
        var found = false
        string.withUTF8Bytes { found = set.containsAny(of: $0) }
        return found
    }

    /// NUL, CR or LF in a value, read eight bytes at a time.
    static func hasNULCROrLF(_ value: String) -> Bool {
        var found = false
        value.withUTF8Bytes { found = hasNULCROrLF($0) }
        return found
    }

    static func hasNULCROrLF(_ bytes: UnsafeRawBufferPointer) -> Bool {
        ByteWords.any(of: bytes, filler: UInt8(ascii: "a")) { word in
            ByteWords.hasByte(0, in: word) || ByteWords.hasByte(UInt8(ascii: "\r"), in: word) || ByteWords.hasByte(UInt8(ascii: "\n"), in: word)
        }
    }

    /// A control character, a space or DEL in a value, read eight bytes at a time.
    static func hasSpaceOrControl(_ value: String) -> Bool {
        var found = false
        value.withUTF8Bytes { found = hasSpaceOrControl($0) }
        return found
    }

    static func hasSpaceOrControl(_ bytes: UnsafeRawBufferPointer) -> Bool {
        ByteWords.any(of: bytes, filler: UInt8(ascii: "a")) { word in
            ByteWords.hasByte(below: 0x21, in: word) || ByteWords.hasByte(0x7F, in: word)
        }
    }
}
