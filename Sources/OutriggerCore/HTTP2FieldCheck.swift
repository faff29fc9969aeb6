/// Whether an HTTP/2 header block — a request's, a response's, or trailers — is well formed (RFC 9113 §8.1.2, §8.2,
/// §8.3): names in lower case and made of token characters, no field HTTP/2 forbids, pseudo-fields known for the
/// block, once each and before the regular ones, the ones it needs present, and `content-length` a number. A
/// malformed message is a stream error (PROTOCOL_ERROR). Fed one field at a time, as HPACK decodes them.
public struct HTTP2FieldCheck {
    public enum Block: Sendable { case request, response, trailers }

    private let block: Block
    private var hasMethod = false
    private var isCONNECT = false
    private var hasScheme = false
    private var hasAuthority = false
    private var hasPath = false
    private var pathIsEmpty = false
    private var sawRegular = false
    /// A response's `:status`.
    public private(set) var status: Int?
    /// The request's declared body length, for the stream's DATA to be held to (RFC 9113 §8.1.1).
    public private(set) var contentLength: Int?
    /// Whether every regular field's value is one HTTP/1.1 can carry (`HTTP1Syntax.areFieldValueBytes`): read in the
    /// same pass as HTTP/2's own rule, so the block's reader need not read the values again.
    public private(set) var everyRegularValueFitsHTTP1 = true
    /// Why the block is malformed: the first reason found.
    public private(set) var malformed: String?

    public init(_ block: Block) {
        self.block = block
    }

    /// A field: its bytes read in place once, names told apart by length and then by bytes (an unequal comparison of
    /// two strings takes `String`'s slow path). The strings are kept only to say why a field is malformed.
    public mutating func add(name: String, value: String) {
        guard malformed == nil else { return }
        name.withUTF8Bytes { nameBytes in
            value.withUTF8Bytes { valueBytes in add(name, nameBytes, value, valueBytes) }
        }
    }

    private mutating func add(_ name: String, _ nameBytes: UnsafeRawBufferPointer, _ value: String, _ valueBytes: UnsafeRawBufferPointer) {
        guard let first = nameBytes.first else { return fail("an empty field name") }
        if first == UInt8(ascii: ":") {
            // Well formed, a request's pseudo-field has no space or control character, a response's `:status` is
            // digits: neither has a NUL, CR or LF.
            addPseudo(name, nameBytes, value, valueBytes)
            return
        }
        addRegular(name, nameBytes, value, valueBytes)
        // HTTP/1.1's rule is the stricter: a value it takes has no NUL, CR or LF either.
        guard !HTTP1Syntax.areFieldValueBytes(valueBytes) else { return }
        everyRegularValueFitsHTTP1 = false
        if malformed == nil, Self.hasNULCROrLF(valueBytes) {
            fail("a NUL, CR or LF in \(name)'s value")
        }
    }

    private mutating func addPseudo(_ name: String, _ nameBytes: UnsafeRawBufferPointer, _ value: String, _ valueBytes: UnsafeRawBufferPointer) {
        guard block != .trailers else { return fail("the pseudo-field \(name) in trailers") }
        guard !sawRegular else { return fail("the pseudo-field \(name) after a regular field") }
        if block == .response { return addStatus(name, nameBytes, value, valueBytes) }
        // They become an HTTP/1.1 request line: a space or control character there would split it (smuggling).
        guard !Self.hasSpaceOrControl(valueBytes) else { return fail("a space or control character in \(name)") }
        switch nameBytes.count {
        case 7 where HTTP1Syntax.equals(nameBytes, ":method"):
            guard !hasMethod else { return fail("two :method") }
            hasMethod = true
            isCONNECT = HTTP1Syntax.equals(valueBytes, "CONNECT")
        case 7 where HTTP1Syntax.equals(nameBytes, ":scheme"):
            guard !hasScheme else { return fail("two :scheme") }
            hasScheme = true
        case 10 where HTTP1Syntax.equals(nameBytes, ":authority"):
            guard !hasAuthority else { return fail("two :authority") }
            hasAuthority = true
        case 5 where HTTP1Syntax.equals(nameBytes, ":path"):
            guard !hasPath else { return fail("two :path") }
            hasPath = true
            pathIsEmpty = valueBytes.isEmpty
        default:
            fail("the unknown pseudo-field \(name)")
        }
    }

    /// A response has one pseudo-field, `:status`: three digits (RFC 9113 §8.3.2), and not 101, which HTTP/2 has not (§8.6).
    private mutating func addStatus(_ name: String, _ nameBytes: UnsafeRawBufferPointer, _ value: String, _ valueBytes: UnsafeRawBufferPointer) {
        guard HTTP1Syntax.equals(nameBytes, ":status") else { return fail("the pseudo-field \(name) in a response") }
        guard status == nil else { return fail("two :status") }
        guard valueBytes.count == 3, let code = Self.decimal(valueBytes), code >= 100 else {
            return fail(":status \(value) is not a status code")
        }
        guard code != 101 else { return fail(":status 101, which HTTP/2 has not") }
        status = code
    }

    private mutating func addRegular(_ name: String, _ nameBytes: UnsafeRawBufferPointer, _ value: String, _ valueBytes: UnsafeRawBufferPointer) {
        sawRegular = true
        guard !ByteSet.notLowercaseToken.containsAny(of: nameBytes) else {
            return fail("the field name \(name) (upper case or not a token)")
        }
        // By length first: most names are none of these, and are told so without a comparison.
        switch nameBytes.count {
        case 2 where HTTP1Syntax.equals(nameBytes, "te"):
            if !HTTP1Syntax.equals(valueBytes, "trailers") { fail("te other than trailers") }
        case 7 where HTTP1Syntax.equals(nameBytes, "upgrade"),
             10 where HTTP1Syntax.equals(nameBytes, "connection") || HTTP1Syntax.equals(nameBytes, "keep-alive"),
             16 where HTTP1Syntax.equals(nameBytes, "proxy-connection"),
             17 where HTTP1Syntax.equals(nameBytes, "transfer-encoding"):
            fail("the connection-specific field \(name)")
        case 14 where HTTP1Syntax.equals(nameBytes, "content-length"):
            guard let length = Self.decimal(valueBytes) else { return fail("content-length \(value) is not a number") }
            guard contentLength == nil || contentLength == length else { return fail("two different content-lengths") }
            contentLength = length
        default:
            break
        }
    }

    /// Digits only, at least one, as an `Int`; nil for anything else or a number past `Int.max`.
    static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty else { return nil }
        var number = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (times10, overflowed) = number.multipliedReportingOverflow(by: 10)
            let (sum, overflowedAdding) = times10.addingReportingOverflow(Int(byte &- UInt8(ascii: "0")))
            guard !overflowed, !overflowedAdding else { return nil }
            number = sum
        }
        return number
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
            if hasMethod {
                if isCONNECT {
                    // RFC 9113 §8.5: :authority only (extended CONNECT is not offered).
                    if !hasAuthority || hasScheme || hasPath { fail("CONNECT needs :authority and no :scheme or :path") }
                } else if !hasScheme || !hasPath || pathIsEmpty {
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

    /// NUL, CR or LF in a value, read eight bytes at a time.
    static func hasNULCROrLF(_ bytes: UnsafeRawBufferPointer) -> Bool {
        ByteWords.any(of: bytes, filler: UInt8(ascii: "a")) { word in
            ByteWords.hasByte(0, in: word) || ByteWords.hasByte(UInt8(ascii: "\r"), in: word) || ByteWords.hasByte(UInt8(ascii: "\n"), in: word)
        }
    }

    /// A control character, a space or DEL in a value, read eight bytes at a time.
    static func hasSpaceOrControl(_ bytes: UnsafeRawBufferPointer) -> Bool {
        ByteWords.any(of: bytes, filler: UInt8(ascii: "a")) { word in
            ByteWords.hasByte(below: 0x21, in: word) || ByteWords.hasByte(0x7F, in: word)
        }
    }
}
