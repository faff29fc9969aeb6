import NIOCore
import NIOHTTP1

/// An HTTP/1.x response as bytes, written straight into buffers: the bytes NIO's `HTTPResponseEncoder` writes with
/// `automaticallySetFramingHeaders` off (the head's own `transfer-encoding: chunked` decides whether body parts are
/// chunked; the proxy frames each response itself, `HTTP1Rules.frame`), without the pipeline hop and the boxed
/// part each write through an encoder handler costs. Pure: it says what to write; the caller writes it.
public struct HTTP1MessageEncoder {
    /// The response being written has a chunked body.
    public private(set) var isChunked = false

    public init() {}

    /// Status line and headers, and whether the body that follows is chunked.
    public mutating func encodeHead(_ head: HTTPResponseHead, into buffer: inout ByteBuffer) {
        isChunked = Self.isChunked(head.headers, version: head.version)
        Self.writeVersion(head.version, into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        Self.writeDecimal(Int(head.status.code), into: &buffer)
        buffer.writeInteger(UInt8(ascii: " "))
        buffer.writeString(head.status.reasonPhrase)
        buffer.writeStaticString("\r\n")
        Self.writeHeaders(head.headers, into: &buffer)
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
            Self.writeHeaders(trailers, into: &buffer)
        } else {
            buffer.writeStaticString("\r\n")
        }
        return true
    }

    // MARK: Pieces

    /// HTTP/1.1 and later 1.x: a body is chunked when the head says `transfer-encoding: chunked` (as NIO's encoder
    /// reads it: the first such header, exactly).
    private static func isChunked(_ headers: HTTPHeaders, version: HTTPVersion) -> Bool {
        version.major == 1 && version.minor >= 1 && headers.first(name: "transfer-encoding") == "chunked"
    }

    private static func writeVersion(_ version: HTTPVersion, into buffer: inout ByteBuffer) {
        switch (version.major, version.minor) {
        case (1, 1): buffer.writeStaticString("HTTP/1.1")
        case (1, 0): buffer.writeStaticString("HTTP/1.0")
        default:
            buffer.writeStaticString("HTTP/")
            writeDecimal(version.major, into: &buffer)
            buffer.writeInteger(UInt8(ascii: "."))
            writeDecimal(version.minor, into: &buffer)
        }
    }

    private static func writeHeaders(_ headers: HTTPHeaders, into buffer: inout ByteBuffer) {
        for (name, value) in headers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    private static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        if value >= 100 && value < 1000 {  // every status code
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(value / 100))
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(value / 10 % 10))
            buffer.writeInteger(UInt8(ascii: "0") + UInt8(value % 10))
        } else {
            buffer.writeString(String(value))
        }
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
}
