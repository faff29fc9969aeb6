import NIOCore
import NIOEmbedded
import NIOHTTP1
import OutriggerCore

// One input: the first byte says how the bytes are cut; the rest is what a client sent, then it closed. Checked, and
// a crash when broken:
// - the parser never traps, and reads the same whole and cut into pieces;
// - what it accepts, NIO's llhttp decoder accepts and reads the same (heads, body bytes, trailers; NIO's values
//   compared without their trailing whitespace, which ours trims; after an upgrade request, the parts up to it).

struct Reading: Equatable {
    var parts: [String] = []
    var error: String?
    var stopped = false

    /// `keepAlive`: the reader's verdict on the connection (llhttp's rules, for both; nil: NIO's, carried by its head).
    mutating func note(_ part: HTTPServerRequestPart, body: inout ByteBuffer, keepAlive: Bool? = nil) {
        switch part {
        case .head(let head):
            parts.append("\(head.method) \(head.uri) \(head.version) \(keepAlive ?? head.isKeepAlive) \(Self.describe(head.headers))")
        case .body(var bytes):
            body.writeBuffer(&bytes)
        case .end(let trailers):
            parts.append("body \(Array(body.readableBytesView))")
            body.clear()
            parts.append("end \(trailers.map(Self.describe) ?? "-")")
        }
    }

    /// Fields without their values' trailing whitespace, which ours trims and NIO keeps.
    static func describe(_ headers: HTTPHeaders) -> String {
        headers.map { field in
            var value = Substring(field.value)
            while let last = value.last, last == " " || last == "\t" { value.removeLast() }
            return "\(field.name)=\(value)"
        }.joined(separator: "|")
    }
}

func ours(_ bytes: ByteBuffer, cut: Int) -> Reading {
    var parser = HTTP1RequestParser()
    var reading = Reading()
    var body = ByteBuffer()
    var unparsed = ByteBuffer()
    var offset = 0
    do {
        while offset < bytes.readableBytes {
            let length = min(cut, bytes.readableBytes - offset)
            var piece = bytes.getSlice(at: bytes.readerIndex + offset, length: length)!
            offset += length
            unparsed.writeBuffer(&piece)
            while let part = try parser.next(&unparsed) { reading.note(part, body: &body, keepAlive: parser.keepsConnection) }
        }
        reading.stopped = parser.isStopped
        if let part = try parser.connectionClosed(leaving: unparsed) { reading.note(part, body: &body) }
    } catch {
        reading.error = "\(error)"
    }
    return reading
}

func nios(_ bytes: ByteBuffer) -> Reading {
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
    var reading = Reading()
    var body = ByteBuffer()
    do {
        try channel.writeInbound(bytes)
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { reading.note(part, body: &body) }
        _ = try channel.finish()
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { reading.note(part, body: &body) }
    } catch {
        reading.error = "\(error)"
    }
    return reading
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 1 else { return 0 }
    let bytes = ByteBuffer(bytes: UnsafeBufferPointer(start: start + 1, count: count - 1))
    let whole = ours(bytes, cut: Int.max)
    let pieces = ours(bytes, cut: Int(start[0]) % 16 + 1)
    if whole != pieces { fatalError("whole \(whole) != cut \(pieces)") }
    if whole.error == nil {
        var reference = nios(bytes)
        if whole.stopped {
            reference.parts = Array(reference.parts.prefix(whole.parts.count))
            reference.error = nil
            reference.stopped = true
        }
        if reference != whole { fatalError("NIO \(reference) != ours \(whole)") }
    }
    return 0
}
