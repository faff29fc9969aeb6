import NIOCore

/// Bytes stored into room made once at a buffer's end: one capacity check for a whole piece (a header field, a
/// request line), where each `write…` call of `ByteBuffer` checks capacity and uniqueness again (an HTTP/1.1 field
/// written as name, ": ", value and CRLF cost ~600 instructions that way; the encoders' pieces are small and many).
struct ByteWriter {
    private let out: UnsafeMutableRawBufferPointer
    private(set) var count = 0

    private init(out: UnsafeMutableRawBufferPointer) { self.out = out }

    /// Makes room for at least `room` bytes, lets `body` write into all the room there is (`remaining`), and moves
    /// the writer index past what it wrote.
    @inline(__always)
    static func write(into buffer: inout ByteBuffer, room: Int, _ body: (inout ByteWriter) -> Void) {
        buffer.reserveCapacity(minimumWritableBytes: room)
        let written = buffer.withUnsafeMutableWritableBytes { out in
            var writer = ByteWriter(out: out)
            body(&writer)
            return writer.count
        }
        buffer.moveWriterIndex(forwardBy: written)
    }

    /// Room left to write into.
    var remaining: Int { out.count - count }

    @inline(__always)
    mutating func bytes(_ bytes: UnsafeRawBufferPointer) {
        UnsafeMutableRawBufferPointer(rebasing: out[count..<(count + bytes.count)]).copyMemory(from: bytes)
        count += bytes.count
    }

    @inline(__always)
    mutating func byte(_ byte: UInt8) {
        out[count] = byte
        count += 1
    }

    /// CR LF.
    @inline(__always)
    mutating func lineEnd() {
        byte(UInt8(ascii: "\r"))
        byte(UInt8(ascii: "\n"))
    }
}

extension String {
    /// The bytes as a string, as `String(decoding:as: UTF8.self)` makes it (invalid UTF-8 repaired), without its
    /// generic path: up to 15 ASCII bytes become a small string with one mask test for their validation. A header
    /// field's name and value cost ~195 instructions each the generic way.
    @inline(__always)
    init(utf8Bytes bytes: UnsafeRawBufferPointer) {
        self.init(unsafeUninitializedCapacity: bytes.count) { buffer in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: bytes)
            return bytes.count
        }
    }

    /// The string's UTF-8, read in place (a small string's from a copy on the stack). Not the `var` copy and
    /// `withUTF8` used elsewhere: in the HPACK encoder's loop, twice per field, that was ~15 % slower; the copy is
    /// only the fallback for a string without contiguous UTF-8.
    @inline(__always)
    func withUTF8Bytes(_ body: (UnsafeRawBufferPointer) -> Void) {
        if utf8.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) != nil { return }
        var string = self
        string.withUTF8 { body(UnsafeRawBufferPointer($0)) }
    }
}
