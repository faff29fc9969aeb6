import NIOCore
import NIOHTTP1

/// What follows heads on one HTTP/1.x connection, the same for requests and responses: each head's body, then the
/// next head — or nothing more, when the message switched the connection to another protocol (`stopped`), or any byte
/// more is an error, when it said the connection closes. The parsers read the heads; this does the rest.
struct HTTP1MessageSequence<Head: Equatable> {
    enum State: Equatable {
        /// Between messages: the parser reads a head.
        case head
        case body
        /// The bytes after the last message are not HTTP (an upgrade).
        case stopped
        /// The last message said the connection closes after it.
        case closing
    }

    private(set) var state = State.head
    private var body: HTTP1BodyReader
    /// The message being read lets the connection carry another, by its version and `connection` options (and its
    /// trailers'), by llhttp's rules.
    private(set) var keepsConnection = true
    private var stopsAfterMessage = false
    private let trailerLimit: Int

    init(trailerLimit: Int) {
        self.trailerLimit = trailerLimit
        body = HTTP1BodyReader(framing: nil, trailerLimit: trailerLimit)
    }

    /// The body being read ends when the connection closes.
    var bodyEndsAtClose: Bool { state == .body && body.endsAtClose }

    /// A head was read; its body (nil framing: none) comes next.
    mutating func headRead(framing: HTTP1Framing?, keepsConnection: Bool, stopsAfterMessage: Bool) {
        body = HTTP1BodyReader(framing: framing, trailerLimit: trailerLimit)
        self.keepsConnection = keepsConnection
        self.stopsAfterMessage = stopsAfterMessage
        state = .body
    }

    /// An interim head (a 1xx response) was read: the connection goes on to the final one, unless it closes.
    mutating func interimHeadRead(keepsConnection: Bool) {
        self.keepsConnection = keepsConnection
        if !keepsConnection { state = .closing }
    }

    /// The next part after a head, or nil when more bytes are needed (or none are taken any more).
    mutating func next(_ buffer: inout ByteBuffer) throws -> HTTPPart<Head, ByteBuffer>? {
        switch state {
        case .head, .stopped:
            return nil
        case .closing:
            guard buffer.readableBytes == 0 else { throw HTTP1ParseError.bytesAfterClose }
            return nil
        case .body:
            switch try body.next(&buffer) {
            case .body(let bytes): return .body(bytes)
            case .end(let trailers):
                if body.trailersCloseConnection { keepsConnection = false }
                state = stopsAfterMessage ? .stopped : keepsConnection ? .head : .closing
                return .end(trailers)
            case nil: return nil
            }
        }
    }

    /// The connection closed: the end of a body delimited by the close, or nothing when between messages; a message
    /// cut short is an error.
    mutating func connectionClosed(leaving buffer: ByteBuffer) throws -> HTTPPart<Head, ByteBuffer>? {
        switch state {
        case .body:
            guard case .end(let trailers) = try body.connectionClosed() else { return nil }
            state = .head
            return .end(trailers)
        case .head where buffer.readableBytes > 0:
            throw HTTP1ParseError.truncated
        case .head, .stopped, .closing:
            return nil
        }
    }
}
