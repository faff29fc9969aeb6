import NIOCore

/// Writes HTTP/2 frames (RFC 9113 §4.1, §6) into a connection's output buffer: a 9-byte header, then the payload.
/// Header blocks come already HPACK-encoded; one longer than the peer's SETTINGS_MAX_FRAME_SIZE goes on in
/// CONTINUATION frames.
public enum HTTP2FrameEncoder {
    public static func writeHeader(_ length: Int, type: UInt8, flags: UInt8, stream: UInt32, into out: inout ByteBuffer) {
        out.writeInteger(UInt32(length) << 8 | UInt32(type))
        out.writeInteger(flags)
        out.writeInteger(stream)
    }

    /// The header of a HEADERS frame whose block is written right after it, its length not known yet.
    /// - Returns: where the header starts, for `finishHeaders`.
    public static func startHeaders(into out: inout ByteBuffer) -> Int {
        let start = out.writerIndex
        out.writeRepeatingByte(0, count: 9)
        return start
    }

    /// Completes a header block written after `startHeaders`: fills in its header, and cuts a block over
    /// `maxFrameSize` into a HEADERS frame and CONTINUATION frames.
    public static func finishHeaders(startingAt start: Int, stream: UInt32, endStream: Bool, maxFrameSize: Int, in out: inout ByteBuffer) {
        let blockLength = out.writerIndex - start - 9
        let endStreamFlag = endStream ? HTTP2FrameKind.endStream : 0
        if blockLength <= maxFrameSize {
            setHeader(blockLength, type: HTTP2FrameKind.headers, flags: HTTP2FrameKind.endHeaders | endStreamFlag, stream: stream, at: start, in: &out)
            return
        }
        // Rare (a block over 16 KiB): taken out and written again in pieces.
        var block = out.getSlice(at: start + 9, length: blockLength)!
        out.moveWriterIndex(to: start)
        var first = true
        while block.readableBytes > 0 {
            var piece = block.readSlice(length: min(maxFrameSize, block.readableBytes))!
            let last = block.readableBytes == 0
            let type = first ? HTTP2FrameKind.headers : HTTP2FrameKind.continuation
            let flags = (last ? HTTP2FrameKind.endHeaders : 0) | (first ? endStreamFlag : 0)
            writeHeader(piece.readableBytes, type: type, flags: flags, stream: stream, into: &out)
            out.writeBuffer(&piece)
            first = false
        }
    }

    private static func setHeader(_ length: Int, type: UInt8, flags: UInt8, stream: UInt32, at index: Int, in out: inout ByteBuffer) {
        out.setInteger(UInt32(length) << 8 | UInt32(type), at: index)
        out.setInteger(flags, at: index + 4)
        out.setInteger(stream, at: index + 5)
    }

    /// One DATA frame: `payload` must fit the peer's frame size and both send windows.
    public static func writeData(_ payload: ByteBuffer, stream: UInt32, endStream: Bool, into out: inout ByteBuffer) {
        writeHeader(payload.readableBytes, type: HTTP2FrameKind.data, flags: endStream ? HTTP2FrameKind.endStream : 0, stream: stream, into: &out)
        out.writeImmutableBuffer(payload)
    }

    public static func writeRstStream(_ stream: UInt32, _ code: HTTP2Code, into out: inout ByteBuffer) {
        writeHeader(4, type: HTTP2FrameKind.rstStream, flags: 0, stream: stream, into: &out)
        out.writeInteger(code.rawValue)
    }

    public static func writeWindowUpdate(_ stream: UInt32, increment: Int, into out: inout ByteBuffer) {
        writeHeader(4, type: HTTP2FrameKind.windowUpdate, flags: 0, stream: stream, into: &out)
        out.writeInteger(UInt32(increment))
    }

    public static func writeGoAway(lastStream: UInt32, _ code: HTTP2Code, into out: inout ByteBuffer) {
        writeHeader(8, type: HTTP2FrameKind.goAway, flags: 0, stream: 0, into: &out)
        out.writeInteger(lastStream)
        out.writeInteger(code.rawValue)
    }

    public static func writeSettings(_ settings: [HTTP2FrameDecoder.Setting], into out: inout ByteBuffer) {
        writeHeader(6 * settings.count, type: HTTP2FrameKind.settings, flags: 0, stream: 0, into: &out)
        for setting in settings {
            out.writeInteger(setting.id)
            out.writeInteger(setting.value)
        }
    }

    public static func writeSettingsAck(into out: inout ByteBuffer) {
        writeHeader(0, type: HTTP2FrameKind.settings, flags: HTTP2FrameKind.ack, stream: 0, into: &out)
    }

    public static func writePing(_ opaque: UInt64, ack: Bool, into out: inout ByteBuffer) {
        writeHeader(8, type: HTTP2FrameKind.ping, flags: ack ? HTTP2FrameKind.ack : 0, stream: 0, into: &out)
        out.writeInteger(opaque)
    }
}
