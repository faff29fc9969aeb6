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
/// in the buffer for the tunnel. After a response that says the connection closes, any byte more is an error.
public struct HTTP1ResponseParser {
    /// NIO's response parts, as its decoder gave them.
    public typealias Part = HTTPClientResponsePart

    /// The largest head (status line and headers) or trailer section read: NIO's limits are 80 KiB of header
    /// names and values.
    public static let maxHeadBytes = 96 * 1024

    private var messages = HTTP1MessageSequence<HTTPResponseHead>(trailerLimit: maxHeadBytes)
    private var headSection = HTTP1SectionFinder(limit: maxHeadBytes)
    /// The request method the next response answers (nil: none sent; read as not HEAD).
    private var awaitedMethod: HTTPMethod?

    /// What the last final head's fields are known to hold (`ResponseHeadFacts`), read while they were parsed.
    public private(set) var headFacts = ResponseHeadFacts.unknown

    public init() {}

    /// The bytes after a `101 Switching Protocols` response are not HTTP: nothing more is parsed.
    public var isUpgraded: Bool { messages.state == .stopped }

    /// The response being read has a body that ends when the connection closes: the connection carries no other
    /// (what llhttp's keep-alive verdict adds to the head's own).
    public var bodyEndsAtClose: Bool { messages.bodyEndsAtClose }

    /// The response being read lets the connection carry another, by its version and `connection` options (llhttp's
    /// rules).
    public var keepsConnection: Bool { messages.keepsConnection }

    /// A request went out: its method decides whether the response has a body.
    public mutating func expectResponse(to method: HTTPMethod) {
        awaitedMethod = method
    }

    /// The next part from `buffer` (its bytes consumed), or nil when more bytes are needed. Body parts are slices
    /// of `buffer`.
    public mutating func next(_ buffer: inout ByteBuffer) throws -> Part? {
        while messages.state == .head {
            guard let head = try readHead(&buffer) else { return nil }
            if head.status.code >= 200 || head.status == .switchingProtocols { return .head(head) }
            // informational: dropped, the final response follows
        }
        return try messages.next(&buffer)
    }

    /// The connection closed: the end of a body delimited by the close, or nothing when between responses;
    /// a response cut short is an error.
    public mutating func connectionClosed(leaving buffer: ByteBuffer) throws -> Part? {
        try messages.connectionClosed(leaving: buffer)
    }

    // MARK: The head

    private mutating func readHead(_ buffer: inout ByteBuffer) throws -> HTTPResponseHead? {
        // Bytes that cannot begin a response are refused at once, as llhttp does, not when an empty line comes:
        // a body an upstream sent where none may be (after a 204, say) must not wait in the connection and be
        // taken for the next request's answer.
        let begins = buffer.withUnsafeReadableBytes { HTTP1Syntax.startsLike($0, "HTTP/1.") }
        guard begins else { throw HTTP1ParseError.invalidStartLine }
        guard let length = try headSection.length(in: buffer, mayBeEmpty: false) else { return nil }
        let (head, framing, facts) = try buffer.withUnsafeReadableBytes {
            bytes -> (HTTPResponseHead, (body: HTTP1Framing, keepsConnection: Bool), ResponseHeadFacts) in
            var lines = HTTP1LineReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<length]))
            guard let statusLine = try lines.next() else { throw HTTP1ParseError.invalidStartLine }
            let (version, code) = try Self.parseStatusLine(statusLine)
            var fields = HTTP1FieldSummary()
            let headers = try HTTP1Syntax.parseFields(&lines, summary: &fields)
            return (HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: code), headers: headers),
                    (try fields.framing(withoutFraming: .untilClose), fields.keepsConnection(version)), fields.responseFacts)
        }
        buffer.moveReaderIndex(forwardBy: length)
        let code = head.status.code
        guard code >= 200 || code == 101 else {
            messages.interimHeadRead(keepsConnection: framing.keepsConnection)
            return head
        }
        headFacts = facts
        let method = awaitedMethod
        awaitedMethod = nil
        let bodiless = code == 101 || method?.isHEAD == true || method?.isCONNECT == true || code == 204 || code == 304
        messages.headRead(framing: bodiless ? nil : framing.body, keepsConnection: framing.keepsConnection, stopsAfterMessage: code == 101)
        return head
    }

    /// `HTTP/1.x SP 3DIGIT [SP reason]`.
    private static func parseStatusLine(_ line: UnsafeRawBufferPointer) throws -> (HTTPVersion, Int) {
        guard line.count >= 12, let version = HTTP1Syntax.version(line[0..<8]), line[8] == UInt8(ascii: " ") else {
            throw HTTP1ParseError.invalidStartLine
        }
        var code = 0
        for index in 9..<12 {
            let digit = line[index] &- UInt8(ascii: "0")
            guard digit < 10 else { throw HTTP1ParseError.invalidStartLine }
            code = code * 10 + Int(digit)
        }
        guard code >= 100 else { throw HTTP1ParseError.invalidStartLine }
        if line.count > 12 {
            guard line[12] == UInt8(ascii: " ") else { throw HTTP1ParseError.invalidStartLine }
            guard HTTP1Syntax.areFieldValueBytes(UnsafeRawBufferPointer(rebasing: line[13...])) else { throw HTTP1ParseError.invalidStartLine }
        }
        return (version, code)
    }
}
