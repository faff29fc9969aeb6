import NIOCore
import NIOHTTP1

/// An HTTP/1.x message as bytes, written straight into buffers, without the pipeline hop and the boxed part each
/// write through an encoder handler costs. Pure: it says what to write; the caller writes it.
/// - Responses: the bytes NIO's `HTTPResponseEncoder` writes with `automaticallySetFramingHeaders` off (the head's own
///   `transfer-encoding: chunked` decides whether body parts are chunked; the proxy frames each response itself,
///   `HTTP1Rules.frame`).
/// - Requests: the bytes NIO's `HTTPRequestEncoder` writes with its defaults (`RequestFraming`: framing headers set
///   from the method, as it does).
public struct HTTP1MessageEncoder {
    /// The message being written has a chunked body.
    public private(set) var isChunked = false

    public init() {}

    /// Request line and headers, framed as NIO's request encoder frames them (`RequestFraming`). The fields are written
    /// as they are, their framing fields noted on the way: only a head that loses a framing field (TRACE with one, both
    /// of them, POST, PUT or PATCH with a `transfer-encoding`) is written again, without it. Looking the fields up
    /// before writing cost about 570 instructions a request by callgrind; noting names being written costs a length
    /// compare each. The proxy's own fields given beside the head (`AppendedOwnFields`) go after its fields.
    public mutating func encodeHead(_ head: HTTPRequestHead, appending own: AppendedOwnFields = AppendedOwnFields(), into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        Self.writeRequestLine(head, into: &buffer)
        let fields = Self.writeHeaders(head.headers, into: &buffer, endingSection: false)
        let framing = RequestFraming(head, given: fields)
        if framing.removesTransferEncoding {
            buffer.moveWriterIndex(to: start)
            var headers = head.headers
            headers.remove(name: "transfer-encoding")
            if framing.removesContentLength { headers.remove(name: "content-length") }
            Self.writeRequestLine(head, into: &buffer)
            _ = Self.writeHeaders(headers, into: &buffer, endingSection: false)
        }
        Self.writeAppended(own, into: &buffer)
        if framing.addsChunked { buffer.writeStaticString("transfer-encoding: chunked\r\n") }
        buffer.writeStaticString("\r\n")
        isChunked = framing.isChunked
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

    /// A request's framing as NIO's `HTTPRequestEncoder` sets it, from the framing fields its head was written with:
    /// TRACE carries no body (both framing fields removed); `content-length` wins over `transfer-encoding` (removed);
    /// POST, PUT and PATCH without `content-length` are chunked on HTTP/1.1 (a `transfer-encoding` they had is
    /// replaced, at the end); other methods are chunked only when their first `transfer-encoding` says `chunked`.
    struct RequestFraming: Equatable {
        /// The head is written again without its `transfer-encoding` fields (and, with them, its `content-length`s).
        var removesTransferEncoding = false
        var removesContentLength = false
        /// `transfer-encoding: chunked` goes after the fields.
        var addsChunked = false
        var isChunked = false

        init(_ head: HTTPRequestHead, given fields: WrittenFramingFields) {
            if head.method.isTRACE {
                removesTransferEncoding = fields.contentLength || fields.transferEncoding
                removesContentLength = removesTransferEncoding
                return
            }
            if fields.contentLength {
                removesTransferEncoding = fields.transferEncoding
                return
            }
            guard head.version.major == 1 && head.version.minor >= 1 else { return }
            switch head.method {
            case .POST, .PUT, .PATCH:
                removesTransferEncoding = fields.transferEncoding
                addsChunked = true
                isChunked = true
            default:
                isChunked = fields.firstTransferEncodingIsChunked
            }
        }
    }

    /// Status line and headers, and whether the body that follows is chunked.
    public mutating func encodeHead(_ head: HTTPResponseHead, appending own: AppendedResponseFields = AppendedResponseFields(),
                                    into buffer: inout ByteBuffer) {
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
        let fields = Self.writeHeaders(head.headers, into: &buffer, endingSection: own.isEmpty)
        if !own.isEmpty {
            Self.writeAppended(own, into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        isChunked = Self.isChunked(fields, version: head.version)
    }

    /// The proxy's own fields after a head's (`AppendedFieldSet`), `name: value` CR LF each, in one room made for all.
    @inline(__always)
    private static func writeAppended(_ own: some AppendedFieldSet, into buffer: inout ByteBuffer) {
        guard !own.isEmpty else { return }
        ByteWriter.write(into: &buffer, room: own.lineBytes) { line in
            own.forEachField { name, value in
                line.bytes(name)
                line.byte(UInt8(ascii: ":"))
                line.byte(UInt8(ascii: " "))
                line.bytes(value)
                line.lineEnd()
            }
        }
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
            if !transferEncoding { firstTransferEncodingIsChunked = HTTP1Syntax.equals(value, "chunked") }
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
