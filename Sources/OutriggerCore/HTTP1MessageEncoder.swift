import NIOCore
import NIOHTTP1

/// An HTTP/1.x message as bytes, written straight into buffers, without the pipeline hop and the boxed part each
/// write through an encoder handler costs. Pure: it says what to write; the caller writes it.
/// - Responses: the bytes NIO's `HTTPResponseEncoder` writes with `automaticallySetFramingHeaders` off (the head's own
///   `transfer-encoding: chunked` decides whether body parts are chunked; the proxy frames each response itself,
///   `HTTP1Rules.frame`).
/// - Requests: the bytes NIO's `HTTPRequestEncoder` writes with its defaults (`frameRequest`: framing headers set
///   from the method, as it does).
public struct HTTP1MessageEncoder {
    /// The message being written has a chunked body.
    public private(set) var isChunked = false

    public init() {}

    /// Request line and headers, framed as NIO's request encoder frames them (`frameRequest`). The fields are written
    /// as they are, their framing fields noted on the way: only a head whose framing fields `frameRequest` would change
    /// (TRACE with one, both of them, POST, PUT or PATCH with a `transfer-encoding`) is written again, framed first.
    /// The lookups `frameRequest` makes cost about 570 instructions a request by callgrind; noting names being written
    /// costs a length compare each.
    public mutating func encodeHead(_ head: HTTPRequestHead, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        Self.writeRequestLine(head, into: &buffer)
        let fields = Self.writeHeaders(head.headers, into: &buffer, endingSection: false)
        switch Self.framing(of: head, given: fields) {
        case .asWritten(let chunked):
            isChunked = chunked
        case .chunkedAdded:
            buffer.writeStaticString("transfer-encoding: chunked\r\n")
            isChunked = true
        case .framedAgain:
            buffer.moveWriterIndex(to: start)
            var framed = head
            isChunked = Self.frameRequest(&framed)
            Self.writeRequestLine(framed, into: &buffer)
            _ = Self.writeHeaders(framed.headers, into: &buffer, endingSection: false)
        }
        buffer.writeStaticString("\r\n")
    }

    private static func writeRequestLine(_ head: HTTPRequestHead, into buffer: inout ByteBuffer) {
        let version = Self.versionText(head.version)
        head.method.rawValue.withUTF8Bytes { method in
            head.uri.withUTF8Bytes { uri in
                ByteWriter.write(into: &buffer, room: method.count + uri.count + version.utf8.count + 4) { line in
                    line.bytes(method)
                    line.byte(UInt8(ascii: " "))
                    line.bytes(uri)
                    line.byte(UInt8(ascii: " "))
                    version.withUTF8Bytes { line.bytes($0) }
                    line.lineEnd()
                }
            }
        }
    }

    /// A request's framing headers as NIO's `HTTPRequestEncoder` sets them, and whether its body is chunked: TRACE
    /// carries no body (both framing headers removed); `content-length` wins over `transfer-encoding`; POST, PUT and
    /// PATCH without either are chunked (HTTP/1.1); other methods are chunked only when they say so.
    static func frameRequest(_ head: inout HTTPRequestHead) -> Bool {
        if head.method.isTRACE {
            head.headers.remove(name: "content-length")
            head.headers.remove(name: "transfer-encoding")
            return false
        }
        if head.headers.contains(name: "content-length") {
            // NIO removes it unconditionally; a scan when there is none is all it costs.
            if head.headers.contains(name: "transfer-encoding") { head.headers.remove(name: "transfer-encoding") }
            return false
        }
        guard head.version.major == 1 && head.version.minor >= 1 else { return false }
        switch head.method {
        case .POST, .PUT, .PATCH:
            head.headers.replaceOrAdd(name: "transfer-encoding", value: "chunked")
            return true
        default:
            return head.headers.first(name: "transfer-encoding") == "chunked"
        }
    }

    /// What `frameRequest` would do to a head whose fields were written as they are.
    enum WrittenRequestFraming: Equatable {
        /// Nothing: the body is chunked or not, as said.
        case asWritten(chunked: Bool)
        /// Only `transfer-encoding: chunked` added after the fields.
        case chunkedAdded
        /// Framing fields removed or replaced: the head is framed and written again.
        case framedAgain
    }

    /// `frameRequest`'s decisions, from the framing fields noted while the head's fields were written.
    static func framing(of head: HTTPRequestHead, given fields: WrittenFramingFields) -> WrittenRequestFraming {
        if head.method.isTRACE { return fields.contentLength || fields.transferEncoding ? .framedAgain : .asWritten(chunked: false) }
        if fields.contentLength { return fields.transferEncoding ? .framedAgain : .asWritten(chunked: false) }
        guard head.version.major == 1 && head.version.minor >= 1 else { return .asWritten(chunked: false) }
        switch head.method {
        case .POST, .PUT, .PATCH: return fields.transferEncoding ? .framedAgain : .chunkedAdded
        default: return .asWritten(chunked: fields.firstTransferEncodingIsChunked)
        }
    }

    /// Status line and headers, and whether the body that follows is chunked.
    public mutating func encodeHead(_ head: HTTPResponseHead, into buffer: inout ByteBuffer) {
        let version = Self.versionText(head.version)
        let code = Int(head.status.code)
        let codeText = code >= 100 && code < 1000 ? nil : String(code)  // every status code is three digits
        head.status.reasonPhrase.withUTF8Bytes { reason in
            ByteWriter.write(into: &buffer, room: version.utf8.count + (codeText?.utf8.count ?? 3) + reason.count + 4) { line in
                version.withUTF8Bytes { line.bytes($0) }
                line.byte(UInt8(ascii: " "))
                if let codeText {
                    codeText.withUTF8Bytes { line.bytes($0) }
                } else {
                    line.byte(UInt8(ascii: "0") + UInt8(code / 100))
                    line.byte(UInt8(ascii: "0") + UInt8(code / 10 % 10))
                    line.byte(UInt8(ascii: "0") + UInt8(code % 10))
                }
                line.byte(UInt8(ascii: " "))
                line.bytes(reason)
                line.lineEnd()
            }
        }
        let fields = Self.writeHeaders(head.headers, into: &buffer)
        isChunked = Self.isChunked(fields, version: head.version)
    }

    /// A chunk's size line (`length` in hex, CRLF); its data and a CRLF follow it.
    public static func writeChunkSize(_ length: Int, into buffer: inout ByteBuffer) {
        precondition(length > 0, "an empty chunk would end the body")
        var digits = 0
        var rest = length
        while rest > 0 { digits += 1; rest >>= 4 }
        for shift in stride(from: (digits - 1) * 4, through: 0, by: -4) {
            buffer.writeInteger(hexDigits[(length >> shift) & 0xF])
        }
        buffer.writeStaticString("\r\n")
    }

    /// A small body part whole, framed when chunked (size line, data, CRLF): one buffer for one write.
    public func encodeBody(_ body: ByteBuffer, into buffer: inout ByteBuffer) {
        var body = body
        guard isChunked else {
            buffer.writeBuffer(&body)
            return
        }
        guard body.readableBytes > 0 else { return }
        Self.writeChunkSize(body.readableBytes, into: &buffer)
        buffer.writeBuffer(&body)
        buffer.writeStaticString("\r\n")
    }

    /// The end of the response: the last chunk and trailers when chunked (returns true), nothing otherwise.
    public mutating func encodeEnd(trailers: HTTPHeaders?, into buffer: inout ByteBuffer) -> Bool {
        defer { isChunked = false }
        guard isChunked else { return false }
        buffer.writeStaticString("0\r\n")
        if let trailers {
            _ = Self.writeHeaders(trailers, into: &buffer)
        } else {
            buffer.writeStaticString("\r\n")
        }
        return true
    }

    // MARK: Pieces

    /// HTTP/1.1 and later 1.x: a body is chunked when the head says `transfer-encoding: chunked` (as NIO's encoder
    /// reads it: the first such header, exactly).
    private static func isChunked(_ fields: WrittenFramingFields, version: HTTPVersion) -> Bool {
        version.major == 1 && version.minor >= 1 && fields.firstTransferEncodingIsChunked
    }

    /// "HTTP/1.1" and "HTTP/1.0" as literals (no allocation); others spelled out.
    private static func versionText(_ version: HTTPVersion) -> String {
        switch (version.major, version.minor) {
        case (1, 1): "HTTP/1.1"
        case (1, 0): "HTTP/1.0"
        default: "HTTP/\(version.major).\(version.minor)"
        }
    }

    /// The fields, `name: value` CRLF each, and the empty line unless `endingSection` is false: as many at a time as
    /// the buffer's room takes (one capacity check and one move of the writer index for them all), room made again
    /// for the rest. Returns the framing fields it wrote.
    private static func writeHeaders(_ headers: HTTPHeaders, into buffer: inout ByteBuffer, endingSection: Bool = true) -> WrittenFramingFields {
        var fields = WrittenFramingFields()
        var next = headers.startIndex
        var room = 256
        var ended = false
        while !ended {
            ByteWriter.write(into: &buffer, room: room) { writer in
                while next != headers.endIndex {
                    let (name, value) = headers[next]
                    let needed = writer.field(name, value, noting: &fields)
                    guard needed == 0 else {
                        room = max(room, needed)
                        return
                    }
                    next = headers.index(after: next)
                }
                if endingSection {
                    guard writer.remaining >= 2 else { return }
                    writer.lineEnd()
                }
                ended = true
            }
        }
        return fields
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}

/// The framing fields among those a head's encoding wrote, as NIO's encoders read them.
struct WrittenFramingFields: Equatable {
    var contentLength = false
    var transferEncoding = false
    /// The first `transfer-encoding` field's value is `chunked`, exactly.
    var firstTransferEncodingIsChunked = false

    /// A field written: names by their length first (most have neither framing name's length).
    mutating func note(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        switch name.count {
        case 14 where HTTP1Syntax.equalsIgnoringCase(name, "content-length"):
            contentLength = true
        case 17 where HTTP1Syntax.equalsIgnoringCase(name, "transfer-encoding"):
            if !transferEncoding { firstTransferEncodingIsChunked = value.elementsEqual("chunked".utf8) }
            transferEncoding = true
        default:
            break
        }
    }
}

extension ByteWriter {
    /// `name: value` CRLF, when the room left takes it, noted in `fields` when written. - Returns: 0 when written,
    /// else the bytes it needs.
    fileprivate mutating func field(_ name: String, _ value: String, noting fields: inout WrittenFramingFields) -> Int {
        var needed = 0
        name.withUTF8Bytes { name in
            value.withUTF8Bytes { value in
                let length = name.count + value.count + 4
                guard length <= remaining else {
                    needed = length
                    return
                }
                fields.note(name: name, value: value)
                bytes(name)
                byte(UInt8(ascii: ":"))
                byte(UInt8(ascii: " "))
                bytes(value)
                lineEnd()
            }
        }
        return needed
    }
}
