import NIOCore
import NIOHTTP1

/// A gRPC answer held back from the client until its trailers say whether the route retries it: its head and the
/// body parts so far, up to the replay buffer's size. Past it the answer goes on as it comes and can no longer be
/// retried. Pure: the shell writes what it lets go.
public struct ResponseHold {
    private var head: HTTPResponseHead?
    private var body: [ByteBuffer] = []
    private var bytes = 0
    private let limit: Int

    public init(limit: Int) {
        self.limit = limit
    }

    /// An answer is held.
    public var isHolding: Bool { head != nil }

    /// Holds an answer from its head on.
    public mutating func hold(_ head: consuming HTTPResponseHead) {
        self.head = head
        body = []
        bytes = 0
    }

    /// A body part of the held answer; false when the answer outgrew the hold and should be let go now (the part is
    /// kept, last).
    public mutating func append(_ part: ByteBuffer) -> Bool {
        body.append(part)
        bytes += part.readableBytes
        return bytes <= limit
    }

    /// Lets the held answer go, to be written: its head and the body parts so far, in order.
    public mutating func release() -> (head: HTTPResponseHead, body: [ByteBuffer])? {
        guard let head else { return nil }
        defer { drop() }
        return (head, body)
    }

    /// Throws the held answer away (a retry replaces it).
    public mutating func drop() {
        head = nil
        body = []
        bytes = 0
    }
}
