import NIOCore
import NIOHTTP1

/// Reads HTTP/1.x requests from a client connection's bytes, one part at a time: the head, body slices of the
/// received buffers (never copied), the end with its trailers. What NIO's llhttp-based `HTTPRequestDecoder` did in
/// the downstream pipeline.
///
/// Pure, and at least as strict as llhttp — a request it accepts, NIO's decoder reads the same (a differential test
/// and a fuzz target check it) — because what a proxy and the server behind it disagree on is how requests are
/// smuggled: it refuses both `content-length` and `transfer-encoding`, `content-length` twice or as a list, a
/// transfer coding other than `chunked` last or in an HTTP/1.0 request, whitespace before a colon, folded lines, bare LF line ends, control
/// bytes in values, methods llhttp does not know, versions other than HTTP/1.0 and 1.1.
///
/// Empty lines before a request line are skipped (RFC 9112 §2.2). After an upgrade request (`connection: upgrade`
/// with `upgrade`) or a CONNECT, the bytes are not parsed: they belong to a tunnel, if one is made (`isStopped`).
/// After a request that says the connection closes, any byte more is an error.
public struct HTTP1RequestParser {
    /// NIO's request parts, as its decoder gave them.
    public typealias Part = HTTPServerRequestPart

    /// The largest head (request line and headers) or trailer section read: NIO's limit is 80 KiB of header names
    /// and values; past it the answer is 431.
    public static let maxHeadBytes = 80 * 1024

    private var messages = HTTP1MessageSequence<HTTPRequestHead>(trailerLimit: maxHeadBytes)
    private var headSection = HTTP1SectionFinder(limit: maxHeadBytes)

    public init() {}

    /// The last request asked for an upgrade (or was a CONNECT): the bytes after it are not HTTP.
    public var isStopped: Bool { messages.state == .stopped }

    /// The last request's version and `connection` options let the connection carry another (llhttp's rules: a
    /// repeated `keep-alive` keeps it, where NIO's `HTTPHeaders.isKeepAlive` reads a repeat as close).
    public var keepsConnection: Bool { messages.keepsConnection }

    /// The next part from `buffer` (its bytes consumed), or nil when more bytes are needed. Body parts are slices
    /// of `buffer`.
    public mutating func next(_ buffer: inout ByteBuffer) throws -> Part? {
        guard messages.state == .head else { return try messages.next(&buffer) }
        return try readHead(&buffer).map { .head($0) }
    }

    /// The connection closed: nothing when between requests; a request cut short is an error.
    public mutating func connectionClosed(leaving buffer: ByteBuffer) throws -> Part? {
        try messages.connectionClosed(leaving: buffer)
    }

    // MARK: The head

    private mutating func readHead(_ buffer: inout ByteBuffer) throws -> HTTPRequestHead? {
        // Empty lines before the request line are skipped; a byte that cannot begin a method is refused at once.
        while buffer.readableBytes >= 2, buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) == 0x0D0A {
            buffer.moveReaderIndex(forwardBy: 2)
        }
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        guard HTTP1Syntax.isTokenByte(first) || (first == UInt8(ascii: "\r") && buffer.readableBytes == 1) else {
            throw HTTP1ParseError.invalidStartLine
        }
        guard let length = try headSection.length(in: buffer, mayBeEmpty: false) else { return nil }
        let head = try buffer.withUnsafeReadableBytes { bytes -> HTTPRequestHead in
            var lines = HTTP1LineReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<length]))
            guard let requestLine = try lines.next() else { throw HTTP1ParseError.invalidStartLine }
            let (method, uri, version) = try Self.parseRequestLine(requestLine)
            var fields = HTTP1FieldSummary()
            let headers = try HTTP1Syntax.parseFields(&lines, summary: &fields)
            // A request's body is never delimited by the close: a transfer coding other than chunked last is refused,
            // and so is any in an HTTP/1.0 request (its framing is faulty, RFC 9112 §6.1).
            guard version == .http1_1 || fields.transferEncodings == 0 else { throw HTTP1ParseError.ambiguousFraming }
            let framing = try fields.framing(withoutFraming: .length(0))
            guard framing != .untilClose else { throw HTTP1ParseError.ambiguousFraming }
            messages.headRead(framing: method.isCONNECT ? nil : framing, keepsConnection: fields.keepsConnection(version),
                              stopsAfterMessage: method.isCONNECT || (fields.connectionUpgrade && fields.hasUpgrade))
            return HTTPRequestHead(version: version, method: method, uri: uri, headers: headers)
        }
        buffer.moveReaderIndex(forwardBy: length)
        return head
    }

    /// `method SP request-target SP HTTP/1.x`.
    private static func parseRequestLine(_ line: UnsafeRawBufferPointer) throws -> (HTTPMethod, String, HTTPVersion) {
        guard let firstSpace = line.firstIndex(of: UInt8(ascii: " ")), firstSpace > 0,
              let secondSpace = line[(firstSpace + 1)...].firstIndex(of: UInt8(ascii: " ")), secondSpace > firstSpace + 1,
              let version = HTTP1Syntax.version(line[(secondSpace + 1)...])
        else { throw HTTP1ParseError.invalidStartLine }
        let method = try Self.method(UnsafeRawBufferPointer(rebasing: line[0..<firstSpace]))
        let target = UnsafeRawBufferPointer(rebasing: line[(firstSpace + 1)..<secondSpace])
        guard isTarget(target, of: method) else { throw HTTP1ParseError.invalidStartLine }
        return (method, String(utf8Bytes: target), version)
    }

    /// The request-target's forms (RFC 9112 §3.2): origin (`/…`), asterisk (`*`), absolute (`scheme://…`) and, for
    /// CONNECT, authority (`host:port`); visible ASCII only, no fragment.
    private static func isTarget(_ target: UnsafeRawBufferPointer, of method: HTTPMethod) -> Bool {
        // No fragment: a request-target never carries one (RFC 9112 §3.2).
        for byte in target where byte <= 0x20 || byte >= 0x7F || byte == UInt8(ascii: "#") { return false }
        if method.isCONNECT {
            return target.contains(UInt8(ascii: ":")) && isHostAndPort(target)
        }
        if target.first == UInt8(ascii: "/") { return true }
        if target.count == 1 && target[0] == UInt8(ascii: "*") { return true }
        // absolute-form: a scheme, "://" and a host.
        guard let colon = target.firstIndex(of: UInt8(ascii: ":")), colon > 0, isAlpha(target[0]) else { return false }
        for byte in target[1..<colon] where !isAlpha(byte) { return false }  // letters only, as llhttp takes it
        let rest = target[(colon + 1)...]
        guard rest.starts(with: "//".utf8), rest.count > 2 else { return false }
        let authority = rest[(rest.startIndex + 2)...].prefix { $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "?") }
        return isHostAndPort(UnsafeRawBufferPointer(rebasing: authority))
    }

    /// `host [":" port]` of an absolute-form target: a name (letters, digits, `-`, `.`, `_`) or a bracketed IPv6
    /// address, and digits for the port. No user info (a proxy is never sent credentials in its target).
    private static func isHostAndPort(_ authority: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        if authority.first == UInt8(ascii: "[") {
            guard let close = authority.firstIndex(of: UInt8(ascii: "]")), close > 1 else { return false }
            for byte in authority[1..<close] where hexValue(byte) == nil && byte != UInt8(ascii: ":") && byte != UInt8(ascii: ".") { return false }
            index = close + 1
        } else {
            while index < authority.count, isAlpha(authority[index]) || isDigit(authority[index]) || "-._".utf8.contains(authority[index]) { index += 1 }
            guard index > 0 else { return false }
        }
        guard index < authority.count else { return true }
        guard authority[index] == UInt8(ascii: ":") else { return false }
        return authority[(index + 1)...].allSatisfy(isDigit)
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        isDigit(byte) ? Int(byte - UInt8(ascii: "0")) : (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte | 0x20) ? Int((byte | 0x20) - UInt8(ascii: "a") + 10) : nil
    }

    private static func isAlpha(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
    }


    /// A method llhttp knows (NIO's `HTTPMethod` cases); any other is refused.
    private static func method(_ bytes: UnsafeRawBufferPointer) throws -> HTTPMethod {
        if HTTP1Syntax.equals(bytes, "GET") { return .GET }
        if HTTP1Syntax.equals(bytes, "POST") { return .POST }
        for byte in bytes where !(UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) && byte != UInt8(ascii: "-") {
            throw HTTP1ParseError.invalidStartLine
        }
        let method = HTTPMethod(rawValue: String(decoding: bytes, as: UTF8.self))
        if case .RAW = method { throw HTTP1ParseError.invalidStartLine }
        return method
    }
}
