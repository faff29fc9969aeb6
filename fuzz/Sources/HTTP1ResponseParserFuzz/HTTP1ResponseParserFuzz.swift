import NIOCore
import NIOEmbedded
import NIOHTTP1
import OutriggerCore

// One input: the first byte picks the request method (HEAD or GET) and how the bytes are cut; the rest is what an
// upstream sent, then it closed. Checked, and a crash when broken:
// - the parser never traps, and reads the same whole and cut into pieces;
// - what it accepts, NIO's llhttp decoder accepts and reads the same (heads, body bytes, trailers; NIO's values
//   compared without their trailing whitespace, which ours trims).

/// Heads, body bytes and ends as text, or the error.
struct Reading: Equatable {
    var parts: [String] = []
    var error: String?
    /// Ours stopped at a `101`: what follows is the tunnel's, and how NIO's decoder takes the close after it is not HTTP.
    var upgraded = false

    /// `answersHEAD`: NIO's head calls a HEAD response without framing headers not keep-alive (llhttp judges it before
    /// it hears there is no body); ours keeps such a connection, so keep-alive is not compared there.
    /// `keepAlive`: the reader's verdict on the connection (llhttp's rules, a body that ends with the connection
    /// included; nil: NIO's, carried by its head).
    mutating func note(_ part: HTTPClientResponsePart, body: inout ByteBuffer, trimValues: Bool, keepAlive: Bool? = nil, answersHEAD: Bool) {
        func describe(_ headers: HTTPHeaders) -> String {
            headers.map { field in
                var value = Substring(field.value)
                if trimValues { while let last = value.last, last == " " || last == "\t" { value.removeLast() } }
                return "\(field.name)=\(value)"
            }.joined(separator: "|")
        }
        switch part {
        case .head(let head):
            parts.append("\(head.version) \(head.status.code) \(answersHEAD ? "-" : String(keepAlive ?? head.isKeepAlive)) \(describe(head.headers))")
        case .body(var bytes):
            body.writeBuffer(&bytes)
        case .end(let trailers):
            parts.append("body \(Array(body.readableBytesView))")
            body.clear()
            parts.append("end \(trailers.map(describe) ?? "-")")
        }
    }
}

func ours(_ bytes: ByteBuffer, method: HTTPMethod, cut: Int) -> Reading {
    var parser = HTTP1ResponseParser()
    parser.expectResponse(to: method)
    var reading = Reading()
    var body = ByteBuffer()
    var unparsed = ByteBuffer()
    var offset = 0
    do {
        while offset < bytes.readableBytes, !parser.isUpgraded {
            let length = min(cut, bytes.readableBytes - offset)
            var piece = bytes.getSlice(at: bytes.readerIndex + offset, length: length)!
            offset += length
            unparsed.writeBuffer(&piece)
            while let part = try parser.next(&unparsed) {
                reading.note(part, body: &body, trimValues: false, keepAlive: parser.keepsConnection && !parser.bodyEndsAtClose, answersHEAD: method == .HEAD)
                if case .end = part { parser.expectResponse(to: method) }
            }
        }
        reading.upgraded = parser.isUpgraded
        if !parser.isUpgraded, let part = try parser.connectionClosed(leaving: unparsed) {
            reading.note(part, body: &body, trimValues: false, keepAlive: parser.keepsConnection && !parser.bodyEndsAtClose, answersHEAD: method == .HEAD)
        }
    } catch {
        reading.error = "\(error)"
    }
    return reading
}

func nios(_ bytes: ByteBuffer, method: HTTPMethod) -> Reading {
    let channel = EmbeddedChannel()
    var reading = Reading()
    var body = ByteBuffer()
    func drain() throws {
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) { reading.note(part, body: &body, trimValues: true, answersHEAD: method == .HEAD) }
    }
    do {
        try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .dropBytes)
        for _ in 0..<256 {
            try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
            try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        }
        try channel.writeInbound(bytes)
        try drain()
        _ = try channel.finish()
        try drain()
    } catch {
        reading.error = "\(error)"
    }
    return reading
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    guard count > 1 else { return 0 }
    let control = start[0]
    let bytes = ByteBuffer(bytes: UnsafeBufferPointer(start: start + 1, count: count - 1))
    let method: HTTPMethod = control & 1 == 0 ? .GET : .HEAD
    let whole = ours(bytes, method: method, cut: Int.max)
    let pieces = ours(bytes, method: method, cut: Int(control >> 1) % 16 + 1)
    if whole != pieces { fatalError("whole \(whole) != cut \(pieces)") }
    if whole.error == nil {
        var reference = nios(bytes, method: method)
        if whole.upgraded {
            reference.parts = Array(reference.parts.prefix(whole.parts.count))
            reference.upgraded = true
            reference.error = nil
        }
        if reference != whole { fatalError("NIO \(reference) != ours \(whole)") }
    }
    return 0
}
