import NIOCore
import NIOEmbedded
import NIOHTTP1
import OutriggerCore
import Testing

/// The downstream side's own request parser reads what NIO's llhttp `HTTPRequestDecoder` (which it replaced) reads —
/// heads, body bytes, trailers, for every request it accepts, whole or cut at every byte — and refuses at least what
/// NIO refuses: the request smuggling vectors above all.
@Suite("HTTP/1 request parser")
struct HTTP1RequestParserTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: String
        /// What stays unparsed after an upgrade request or CONNECT: the tunnel's first bytes.
        var leftover = ""
        var testDescription: String { name }
    }

    static let accepted: [Case] = [
        .init(name: "GET", bytes: "GET /a?b=c HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"),
        .init(name: "POST with content-length", bytes: "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"),
        .init(name: "chunked with extensions and trailers",
              bytes: "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-sum: 1\r\n\r\n"),
        .init(name: "gzip then chunked", bytes: "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n"),
        .init(name: "tabs before connection options, spaces after",
              bytes: "GET / HTTP/1.1\r\nHost: x\r\nConnection:\tx-a\t,\tkeep-alive  \r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"),
        .init(name: "tabs before chunked, spaces after",
              bytes: "PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tgzip,\tchunked  \r\n\r\n1\r\nz\r\n0\r\n\r\n"),
        .init(name: "pipelined", bytes: "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nDELETE /3 HTTP/1.1\r\nHost: x\r\n\r\n"),
        .init(name: "HEAD and OPTIONS *", bytes: "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
        .init(name: "HTTP/1.0 keep-alive", bytes: "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /again HTTP/1.0\r\n\r\n"),
        .init(name: "HTTP/1.1 connection close", bytes: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        .init(name: "an empty line before the request line", bytes: "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        .init(name: "absolute form and an extension method", bytes: "PURGE http://x/a?b HTTP/1.1\r\nHost: x\r\n\r\n"),
        .init(name: "values with tabs, obs-text and trailing whitespace", bytes: "GET / HTTP/1.1\r\nHost: x\r\nX-A:\tv\tw\r\nX-B: caf\u{e9}\r\nX-C: d \r\n\r\n"),
        .init(name: "websocket upgrade stops the parser", bytes: "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{1}frame",
              leftover: "\u{1}frame"),
        .init(name: "CONNECT stops the parser", bytes: "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n\u{16}\u{3}tls", leftover: "\u{16}\u{3}tls"),
        .init(name: "upgrade with a body reads the body first", bytes: "POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\nContent-Length: 2\r\n\r\nhiRAW",
              leftover: "RAW"),
    ]

    static let refused: [Case] = [
        .init(name: "not a request line", bytes: "GARBAGE\r\n\r\n"),
        .init(name: "binary", bytes: "\u{16}\u{3}\u{1}\u{2}\u{0}"),
        .init(name: "content-length and transfer-encoding",
              bytes: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        .init(name: "transfer-encoding and content-length", bytes: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
        .init(name: "differing content-lengths", bytes: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        .init(name: "content-length twice", bytes: "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
        .init(name: "content-length list", bytes: "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc"),
        .init(name: "content-length with a sign", bytes: "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"),
        .init(name: "a transfer coding other than chunked last", bytes: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        .init(name: "transfer-encoding in HTTP/1.0", bytes: "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        // llhttp takes only spaces after a final chunked: with a tab it is an unknown coding (found by `make fuzz`).
        .init(name: "a tab after chunked", bytes: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n"),
        .init(name: "a tab after upgrade in connection",
              bytes: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\t\r\nUpgrade: websocket\r\n\r\n"),
        .init(name: "a tab after close, before a comma", bytes: "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\t, x\r\n\r\n"),
        .init(name: "a space and a tab after chunked", bytes: "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked \t\r\n\r\n0\r\n\r\n"),
        .init(name: "transfer-encoding gzip", bytes: "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
        .init(name: "header without colon", bytes: "GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n"),
        .init(name: "obs-fold", bytes: "GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n  folded\r\n\r\n"),
        .init(name: "bad chunk size", bytes: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        .init(name: "chunk data longer than its size", bytes: "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
        .init(name: "space before colon", bytes: "GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        .init(name: "NUL in a value", bytes: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u{0}b\r\n\r\n"),
        .init(name: "a bare CR in a value", bytes: "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n"),
        .init(name: "bare LF line ends", bytes: "GET / HTTP/1.1\nHost: a\n\n"),
        .init(name: "an unknown method", bytes: "FOO / HTTP/1.1\r\nHost: a\r\n\r\n"),
        .init(name: "a lowercase method", bytes: "get / HTTP/1.1\r\nHost: a\r\n\r\n"),
        .init(name: "HTTP/2.0", bytes: "GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        .init(name: "a space in the target", bytes: "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
        .init(name: "a control byte in the target", bytes: "GET /a\u{7f}b HTTP/1.1\r\nHost: a\r\n\r\n"),
        .init(name: "bytes after connection: close", bytes: "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        .init(name: "cut in the head", bytes: "GET / HTTP/1.1\r\nHo"),
        .init(name: "cut in the body", bytes: "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc"),
    ]

    @Test("reads what NIO's decoder reads, whole and cut at every byte", arguments: accepted)
    func readsWhatNIOReads(_ example: Case) throws {
        let expected = Self.nios(example.bytes)
        #expect(expected.error == nil, "NIO's decoder accepts it")
        let whole = Self.ours(example.bytes, cutEvery: nil)
        #expect(whole.error == nil)
        #expect(whole.parts == expected.parts)
        #expect(whole.leftover == example.leftover)
        for cut in [1, 2, 3, 7] {
            #expect(Self.ours(example.bytes, cutEvery: cut) == whole, "cut every \(cut) bytes")
        }
    }

    @Test("refuses smuggling vectors and broken requests", arguments: refused)
    func refuses(_ example: Case) {
        #expect(Self.ours(example.bytes, cutEvery: nil).error != nil)
        #expect(Self.ours(example.bytes, cutEvery: 1).error != nil)
    }

    @Test("a head past 80 KiB is refused as too large before it ends")
    func headLimit() throws {
        var parser = HTTP1RequestParser()
        var buffer = ByteBuffer(string: "GET / HTTP/1.1\r\n")
        #expect(throws: HTTP1ParseError.headTooLarge) {
            for _ in 0..<100 {
                buffer.writeString("x-filler: " + String(repeating: "a", count: 1000) + "\r\n")
                _ = try parser.next(&buffer)
            }
        }
    }

    /// Mutated requests (seeded): whatever ours accepts, NIO's decoder accepts and reads the same, and ours reads the
    /// same whole or byte by byte.
    @Test("mutated requests: what ours accepts, NIO reads the same")
    func mutatedRequestsAgreeWithNIO() {
        var mutations = Mutations(seeds: Self.accepted.filter { $0.leftover.isEmpty }.map(\.bytes), seed: 0x5EED_F00D)
        var acceptedByBoth = 0
        for _ in 0..<3000 {
            let bytes = mutations.next()
            let text = String(decoding: bytes, as: UTF8.self)
            let ours = Self.ours(text, cutEvery: nil)
            #expect(Self.ours(text, cutEvery: 1) == ours, "byte by byte: \(text.debugDescription)")
            guard ours.error == nil else { continue }
            var nios = Self.nios(text)
            if ours.stopped { nios.parts = Array(nios.parts.prefix(ours.parts.count)) }  // after an upgrade: the tunnel's
            nios.leftover = ours.leftover
            nios.stopped = ours.stopped
            #expect(nios == ours, "\(text.debugDescription)")
            acceptedByBoth += 1
        }
        #expect(acceptedByBoth > 250, "the mutations leave enough valid requests to compare")
    }

    // MARK: Differential runs

    struct Reading: Equatable {
        /// Heads, the body's bytes between them (however they were split), ends.
        var parts: [String] = []
        var leftover = ""
        var error: String?
        var stopped = false
        private var body = ByteBuffer()

        /// `keepAlive`: the reader's verdict on the head's connection (llhttp's, for both).
        mutating func note(_ part: HTTPServerRequestPart, keepAlive: Bool) {
            switch part {
            case .head(let head):
                parts.append("\(head.method) \(head.uri) \(head.version) keepAlive=\(keepAlive) \(Self.describe(head.headers))")
            case .body(var bytes):
                body.writeBuffer(&bytes)
            case .end(let trailers):
                parts.append("body \(String(buffer: body))")
                body.clear()
                parts.append("end \(trailers.map(Self.describe) ?? "-")")
            }
        }

        /// NIO keeps a value's trailing whitespace (not part of it, RFC 9110 §5.5); ours trims it.
        static func describe(_ headers: HTTPHeaders) -> String {
            headers.map { "\($0.name)=\(String($0.value.reversed().drop { $0 == " " || $0 == "\t" }.reversed()))" }.joined(separator: "|")
        }
    }

    /// Ours, fed the bytes whole or `cutEvery` bytes at a time; then the connection closes.
    static func ours(_ text: String, cutEvery: Int?) -> Reading {
        var parser = HTTP1RequestParser()
        var reading = Reading()
        var unparsed = ByteBuffer()
        let all = ByteBuffer(string: text)
        var offset = 0
        do {
            while offset < all.readableBytes {
                let length = min(cutEvery ?? all.readableBytes, all.readableBytes - offset)
                var piece = all.getSlice(at: offset, length: length)!
                offset += length
                unparsed.writeBuffer(&piece)
                while let part = try parser.next(&unparsed) { reading.note(part, keepAlive: parser.keepsConnection) }
            }
            reading.stopped = parser.isStopped
            if parser.isStopped {
                reading.leftover = String(buffer: unparsed)
            } else if let part = try parser.connectionClosed(leaving: unparsed) {
                reading.note(part, keepAlive: parser.keepsConnection)
            }
        } catch {
            reading.error = "\(error)"
        }
        return reading
    }

    /// NIO's llhttp `HTTPRequestDecoder`, as the downstream pipeline had it; then the connection closes.
    static func nios(_ text: String) -> Reading {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        var reading = Reading()
        do {
            try channel.writeInbound(ByteBuffer(string: text))
            while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { reading.note(part, keepAlive: part.isKeepAlive) }
            _ = try channel.finish()
            while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { reading.note(part, keepAlive: part.isKeepAlive) }
        } catch {
            reading.error = "\(error)"
        }
        return reading
    }
}

extension HTTPServerRequestPart {
    /// NIO's head carries llhttp's keep-alive verdict (ends and bodies: not asked).
    var isKeepAlive: Bool {
        if case .head(let head) = self { return head.isKeepAlive }
        return false
    }
}
