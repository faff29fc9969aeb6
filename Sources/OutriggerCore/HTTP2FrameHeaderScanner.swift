import NIOCore

/// Walks the frame headers of an HTTP/2 byte stream (RFC 9113 §4.1: 24-bit length, type, flags, stream id)
/// without decoding frames: the connection's own codec does that. Used where a handler beside the codec must
/// know which frames pass, cheaply: a header is 9 bytes, payloads are skipped. Headers split between reads
/// are put together; a client connection preface to skip first can be given.
public struct HTTP2FrameHeaderScanner: Sendable {
    public struct FrameHeader: Equatable, Sendable {
        public var length: Int
        public var type: UInt8
        public var flags: UInt8
        public var streamID: UInt32

        public init(length: Int, type: UInt8, flags: UInt8, streamID: UInt32) {
            self.length = length
            self.type = type
            self.flags = flags
            self.streamID = streamID
        }

        /// A HEADERS or PUSH_PROMISE frame whose header block goes on in CONTINUATION frames.
        public var startsUnfinishedHeaderBlock: Bool {
            (type == HTTP2FrameKind.headers || type == HTTP2FrameKind.pushPromise) && flags & HTTP2FrameKind.endHeaders == 0
        }

        /// A CONTINUATION frame that ends a header block.
        public var endsHeaderBlock: Bool { type == HTTP2FrameKind.continuation && flags & HTTP2FrameKind.endHeaders != 0 }
    }

    /// Bytes of the preface still to skip before the first frame.
    private var prefaceLeft: Int
    /// Payload bytes of the current frame still to skip.
    private var payloadLeft = 0
    /// The first bytes of a frame header split between reads (fewer than 9).
    private var partial: [UInt8] = []

    /// - Parameter skippingPreface: bytes before the first frame (24 for what a server reads, the client preface).
    public init(skippingPreface: Int = 0) {
        prefaceLeft = skippingPreface
    }

    /// Scans `buffer`'s readable bytes; `frame` is called with each frame header that completes in it, and
    /// the index in `buffer` where that frame's payload starts.
    public mutating func scan(_ buffer: ByteBuffer, _ frame: (FrameHeader, _ payloadIndex: Int) -> Void) {
        var index = buffer.readerIndex
        let end = buffer.writerIndex
        while index < end {
            if prefaceLeft > 0 {
                let skipped = min(prefaceLeft, end - index)
                prefaceLeft -= skipped
                index += skipped
                continue
            }
            if payloadLeft > 0 {
                let skipped = min(payloadLeft, end - index)
                payloadLeft -= skipped
                index += skipped
                continue
            }
            let header: FrameHeader
            if partial.isEmpty, end - index >= 9 {
                header = Self.header(buffer.getInteger(at: index, as: UInt32.self)!, buffer.getInteger(at: index + 4, as: UInt8.self)!,
                                     buffer.getInteger(at: index + 5, as: UInt32.self)!)
                index += 9
            } else {
                let taken = min(9 - partial.count, end - index)
                partial += buffer.getBytes(at: index, length: taken)!
                index += taken
                guard partial.count == 9 else { return }
                func word(_ at: Int) -> UInt32 {
                    UInt32(partial[at]) << 24 | UInt32(partial[at + 1]) << 16 | UInt32(partial[at + 2]) << 8 | UInt32(partial[at + 3])
                }
                header = Self.header(word(0), partial[4], word(5))
                partial.removeAll(keepingCapacity: true)
            }
            payloadLeft = header.length
            frame(header, index)
        }
    }

    /// Passes over `count` bytes that went by unseen (a file region): payload of the current frame.
    public mutating func skip(_ count: Int) {
        payloadLeft = max(payloadLeft - count, 0)
    }

    /// The header from its first four bytes (length, type), its flags byte and its last four (a reserved bit, the stream id).
    static func header(_ lengthAndType: UInt32, _ flags: UInt8, _ stream: UInt32) -> FrameHeader {
        FrameHeader(length: Int(lengthAndType >> 8), type: UInt8(lengthAndType & 0xFF), flags: flags, streamID: stream & 0x7FFF_FFFF)
    }
}
