import NIOCore

/// Cuts an inbound HTTP/2 byte stream into frames (RFC 9113 §4, §6): a server's reads the client's preface first, then each
/// frame whole, its padding removed, its fixed-size fields read. Only what one frame alone can break is checked
/// here (its size, its stream id's zero-ness, its padding); what depends on the connection's state is
/// `HTTP2Streams`'. Payloads are slices of the bytes read, not copies.
public struct HTTP2FrameDecoder {
    public enum Frame: Equatable {
        /// `flowControlled` counts the whole payload, padding included (RFC 9113 §6.1).
        case data(stream: UInt32, payload: ByteBuffer, endStream: Bool, flowControlled: Int)
        /// `dependsOn`: the stream's priority dependency, when the frame carries one (only a self-dependency matters).
        case headers(stream: UInt32, fragment: ByteBuffer, endStream: Bool, endHeaders: Bool, dependsOn: UInt32?)
        case priority(stream: UInt32, dependsOn: UInt32)
        case rstStream(stream: UInt32, code: HTTP2Code)
        case settings([Setting])
        case settingsAck
        case pushPromise(stream: UInt32)
        case ping(opaque: UInt64, ack: Bool)
        case goAway(lastStream: UInt32, code: HTTP2Code)
        case windowUpdate(stream: UInt32, increment: Int)
        case continuation(stream: UInt32, fragment: ByteBuffer, endHeaders: Bool)
        /// A type this side does not know: ignored (RFC 9113 §4.1), though it may not split a header block.
        case unknown(stream: UInt32)
    }

    public struct Setting: Equatable, Sendable {
        public var id: UInt16
        public var value: UInt32
        public init(id: UInt16, value: UInt32) {
            self.id = id
            self.value = value
        }
    }

    private var buffer: ByteBuffer?
    private var prefaceLeft: Int
    /// SETTINGS_MAX_FRAME_SIZE as this side advertised it: a larger frame is a FRAME_SIZE_ERROR (RFC 9113 §4.2).
    public var maxFrameSize = HTTP2FrameKind.defaultMaxFrameSize

    /// - Parameter expectingPreface: a server reads the client's 24-byte preface before any frame.
    public init(expectingPreface: Bool = true) {
        prefaceLeft = expectingPreface ? HTTP2FrameKind.clientPreface.count : 0
    }

    /// Bytes read from the peer. The first read's buffer is kept as it is, not copied.
    public mutating func append(_ bytes: ByteBuffer) {
        if var pending = buffer, pending.readableBytes > 0 {
            pending.writeImmutableBuffer(bytes)
            buffer = pending
        } else {
            buffer = bytes
        }
    }

    /// The next whole frame read, or nil until more bytes come.
    public mutating func next() throws(HTTP2Violation) -> Frame? {
        guard var bytes = buffer else { return nil }
        defer { buffer = bytes.readableBytes > 0 ? bytes : nil }
        if prefaceLeft > 0 {
            let preface = HTTP2FrameKind.clientPreface
            let offset = preface.count - prefaceLeft
            let available = min(prefaceLeft, bytes.readableBytes)
            guard let got = bytes.readBytes(length: available), got[...] == preface[offset..<(offset + available)] else {
                throw .connection(.protocolError, "not the HTTP/2 client preface")
            }
            prefaceLeft -= available
            if prefaceLeft > 0 { return nil }
        }
        guard bytes.readableBytes >= 9,
              let lengthAndType = bytes.getInteger(at: bytes.readerIndex, as: UInt32.self),
              let flags = bytes.getInteger(at: bytes.readerIndex + 4, as: UInt8.self),
              let rawStream = bytes.getInteger(at: bytes.readerIndex + 5, as: UInt32.self)
        else { return nil }
        let header = HTTP2FrameHeaderScanner.header(lengthAndType, flags, rawStream)
        if header.length > maxFrameSize { throw .connection(.frameSizeError, "a \(header.length)-byte frame, over the \(maxFrameSize) advertised") }
        guard bytes.readableBytes >= 9 + header.length else { return nil }
        bytes.moveReaderIndex(forwardBy: 9)
        var payload = bytes.readSlice(length: header.length)!
        return try Self.frame(type: header.type, flags: header.flags, stream: header.streamID, payload: &payload)
    }

    private static func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: inout ByteBuffer) throws(HTTP2Violation) -> Frame {
        let length = payload.readableBytes
        switch type {
        case HTTP2FrameKind.data:
            try requireStream(stream, "DATA")
            try removePadding(flags, &payload)
            return .data(stream: stream, payload: payload, endStream: flags & HTTP2FrameKind.endStream != 0, flowControlled: length)
        case HTTP2FrameKind.headers:
            try requireStream(stream, "HEADERS")
            try removePadding(flags, &payload)
            var dependsOn: UInt32?
            if flags & HTTP2FrameKind.priorityFlag != 0 {
                guard let dependency = payload.readInteger(as: UInt32.self), payload.readInteger(as: UInt8.self) != nil else {
                    throw .connection(.frameSizeError, "HEADERS too short for its priority")
                }
                dependsOn = dependency & 0x7FFF_FFFF
            }
            return .headers(stream: stream, fragment: payload, endStream: flags & HTTP2FrameKind.endStream != 0,
                            endHeaders: flags & HTTP2FrameKind.endHeaders != 0, dependsOn: dependsOn)
        case HTTP2FrameKind.priority:
            try requireStream(stream, "PRIORITY")
            guard length == 5, let dependency = payload.readInteger(as: UInt32.self) else {
                throw .connection(.frameSizeError, "PRIORITY of \(length) bytes, not 5")
            }
            return .priority(stream: stream, dependsOn: dependency & 0x7FFF_FFFF)
        case HTTP2FrameKind.rstStream:
            try requireStream(stream, "RST_STREAM")
            guard length == 4, let code = payload.readInteger(as: UInt32.self) else {
                throw .connection(.frameSizeError, "RST_STREAM of \(length) bytes, not 4")
            }
            return .rstStream(stream: stream, code: HTTP2Code(rawValue: code))
        case HTTP2FrameKind.settings:
            try requireConnection(stream, "SETTINGS")
            if flags & HTTP2FrameKind.ack != 0 {
                guard length == 0 else { throw .connection(.frameSizeError, "a SETTINGS ack with a payload") }
                return .settingsAck
            }
            guard length % 6 == 0 else { throw .connection(.frameSizeError, "SETTINGS of \(length) bytes, not a multiple of 6") }
            var settings: [Setting] = []
            settings.reserveCapacity(length / 6)
            while let id = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
                settings.append(Setting(id: id, value: value))
            }
            return .settings(settings)
        case HTTP2FrameKind.pushPromise:
            return .pushPromise(stream: stream)
        case HTTP2FrameKind.ping:
            try requireConnection(stream, "PING")
            guard length == 8, let opaque = payload.readInteger(as: UInt64.self) else {
                throw .connection(.frameSizeError, "PING of \(length) bytes, not 8")
            }
            return .ping(opaque: opaque, ack: flags & HTTP2FrameKind.ack != 0)
        case HTTP2FrameKind.goAway:
            try requireConnection(stream, "GOAWAY")
            guard length >= 8, let last = payload.readInteger(as: UInt32.self), let code = payload.readInteger(as: UInt32.self) else {
                throw .connection(.frameSizeError, "GOAWAY of \(length) bytes, under 8")
            }
            return .goAway(lastStream: last & 0x7FFF_FFFF, code: HTTP2Code(rawValue: code))
        case HTTP2FrameKind.windowUpdate:
            guard length == 4, let increment = payload.readInteger(as: UInt32.self) else {
                throw .connection(.frameSizeError, "WINDOW_UPDATE of \(length) bytes, not 4")
            }
            return .windowUpdate(stream: stream, increment: Int(increment & 0x7FFF_FFFF))
        case HTTP2FrameKind.continuation:
            try requireStream(stream, "CONTINUATION")
            return .continuation(stream: stream, fragment: payload, endHeaders: flags & HTTP2FrameKind.endHeaders != 0)
        default:
            return .unknown(stream: stream)
        }
    }

    private static func requireStream(_ stream: UInt32, _ type: String) throws(HTTP2Violation) {
        if stream == 0 { throw .connection(.protocolError, "\(type) on stream 0") }
    }

    private static func requireConnection(_ stream: UInt32, _ type: String) throws(HTTP2Violation) {
        if stream != 0 { throw .connection(.protocolError, "\(type) on stream \(stream)") }
    }

    /// RFC 9113 §6.1: a pad length that leaves no room for the payload is a PROTOCOL_ERROR.
    private static func removePadding(_ flags: UInt8, _ payload: inout ByteBuffer) throws(HTTP2Violation) {
        guard flags & HTTP2FrameKind.padded != 0 else { return }
        guard let padLength = payload.readInteger(as: UInt8.self), Int(padLength) <= payload.readableBytes else {
            throw .connection(.protocolError, "padding as long as the frame")
        }
        payload.moveWriterIndex(to: payload.writerIndex - Int(padLength))
    }
}
