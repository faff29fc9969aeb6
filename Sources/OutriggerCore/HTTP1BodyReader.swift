import NIOCore
import NIOHTTP1

/// A message's body as its bytes come, whatever its framing: slices of the received buffer (never copied), then the
/// end, with the trailers of a chunked body. Pure, shared by `HTTP1RequestParser` and `HTTP1ResponseParser`.
struct HTTP1BodyReader {
    enum Part {
        case body(ByteBuffer)
        case end(HTTPHeaders?)
    }

    private enum State: Equatable {
        case length(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        /// The CRLF after a chunk's data.
        case chunkDataEnd
        case trailers
        case untilClose
        /// No body, or all of it read: the end is the next part.
        case endDue
        case ended
    }

    private var state: State
    private var trailerSection: HTTP1SectionFinder
    /// The trailers said `connection: close` (llhttp honours it there too).
    private(set) var trailersCloseConnection = false

    /// A body framed by `framing` (nil: none at all).
    init(framing: HTTP1Framing?, trailerLimit: Int) {
        switch framing {
        case .chunked: state = .chunkSize
        case .untilClose: state = .untilClose
        case .length(let length) where length > 0: state = .length(remaining: length)
        case .length, nil: state = .endDue
        }
        trailerSection = HTTP1SectionFinder(limit: trailerLimit)
    }

    /// The body ends when the connection closes.
    var endsAtClose: Bool { state == .untilClose }

    /// The next part from `buffer`, or nil when more bytes are needed (or the body ended).
    mutating func next(_ buffer: inout ByteBuffer) throws -> Part? {
        while true {
            switch state {
            case .length(let remaining):
                guard let (body, left) = Self.readBody(&buffer, upTo: remaining) else { return nil }
                state = left == 0 ? .endDue : .length(remaining: left)
                return .body(body)
            case .untilClose:
                guard buffer.readableBytes > 0 else { return nil }
                return .body(buffer.readSlice(length: buffer.readableBytes)!)
            case .chunkSize:
                guard let size = try HTTP1Syntax.readChunkSize(&buffer) else { return nil }
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                guard let (body, left) = Self.readBody(&buffer, upTo: remaining) else { return nil }
                state = left == 0 ? .chunkDataEnd : .chunkData(remaining: left)
                return .body(body)
            case .chunkDataEnd:
                guard buffer.readableBytes >= 2 else { return nil }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else { throw HTTP1ParseError.invalidChunk }
                state = .chunkSize
            case .trailers:
                guard let trailers = try readTrailers(&buffer) else { return nil }
                state = .ended
                return .end(trailers)
            case .endDue:
                state = .ended
                return .end(nil)
            case .ended:
                return nil
            }
        }
    }

    /// The connection closed: the end of a body delimited by the close; a body cut short is an error.
    mutating func connectionClosed() throws -> Part? {
        switch state {
        case .untilClose, .endDue:
            state = .ended
            return .end(nil)
        case .ended:
            return nil
        default:
            throw HTTP1ParseError.truncated
        }
    }

    /// What the buffer holds of the `remaining` body bytes, as a slice, and how many remain after it; nil when empty.
    private static func readBody(_ buffer: inout ByteBuffer, upTo remaining: Int) -> (ByteBuffer, remaining: Int)? {
        guard buffer.readableBytes > 0 else { return nil }
        let length = min(remaining, buffer.readableBytes)
        return (buffer.readSlice(length: length)!, remaining - length)
    }

    /// The trailer section: nil while incomplete, `.some(nil)` when there are no trailers.
    private mutating func readTrailers(_ buffer: inout ByteBuffer) throws -> HTTPHeaders?? {
        guard let length = try trailerSection.length(in: buffer, mayBeEmpty: true) else { return nil }
        let trailers = try buffer.withUnsafeReadableBytes { bytes -> HTTPHeaders? in
            // The last chunk's empty line alone: no trailers. (A bare LF is refused by the line reader.)
            if length == 2, bytes[0] == UInt8(ascii: "\r") { return nil }
            var lines = HTTP1LineReader(bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<length]))
            var fields = HTTP1FieldSummary()
            let trailers = try HTTP1Syntax.parseFields(&lines, summary: &fields)
            // Framing in trailers would come too late to frame anything (RFC 9110 §6.5.1); llhttp refuses it too.
            guard fields.contentLengths == 0, fields.transferEncodings == 0 else { throw HTTP1ParseError.invalidHeader }
            trailersCloseConnection = fields.connectionClose
            return trailers
        }
        buffer.moveReaderIndex(forwardBy: length)
        return .some(trailers)
    }
}
