import NIOCore
import NIOEmbedded
import NIOHTTP1
import OutriggerCore
import Testing

/// The upstream side's own response parser reads what NIO's `HTTPResponseDecoder` (which it replaced) reads: the same
/// heads, body bytes and trailers for every response it accepts, whole or cut at every byte; and it refuses at least
/// what NIO's decoder refuses, plus the ambiguous framings a proxy must not guess at.
@Suite("HTTP/1 response parser")
struct HTTP1ResponseParserTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var method: HTTPMethod = .GET
        var bytes: String
        /// The connection closes after the bytes (a body delimited by the close ends there).
        var closes = false
        /// What stays unparsed after a `101`: the tunnel's first bytes.
        var leftover = ""
        var testDescription: String { name }
    }

    static let accepted: [Case] = [
        .init(name: "length-framed", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello"),
        .init(name: "two responses in a row", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno"),
        .init(name: "chunked", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"),
        .init(name: "chunked with extensions and trailers",
              bytes: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n0\r\ngrpc-status: 0\r\nx-t:  1 \r\n\r\n"),
        .init(name: "gzip then chunked", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n"),
        .init(name: "close-delimited, no framing header", bytes: "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end", closes: true),
        .init(name: "HTTP/1.0 close-delimited", bytes: "HTTP/1.0 200 OK\r\n\r\nold", closes: true),
        .init(name: "close-delimited, keep-alive by its head", bytes: "HTTP/1.1 200 OK\r\nx: y\r\n\r\nthe rest", closes: true),
        .init(name: "204 ignores content-length", bytes: "HTTP/1.1 204 No Content\r\ncontent-length: 10\r\n\r\n"),
        .init(name: "304", bytes: "HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\n\r\n"),
        .init(name: "HEAD has no body", method: .HEAD, bytes: "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"),
        .init(name: "HEAD, chunked header", method: .HEAD, bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        .init(name: "100 Continue is dropped", method: .POST, bytes: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"),
        .init(name: "103 Early Hints is dropped", bytes: "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "no reason phrase", bytes: "HTTP/1.1 599 \r\ncontent-length: 0\r\n\r\n"),
        .init(name: "an unnamed status", bytes: "HTTP/1.1 299 Whatever It Says\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "empty header value, tabs and obs-text", bytes: "HTTP/1.1 200 OK\r\nx-empty:\r\nx-tab:\tv\tw\t\r\nx-latin: caf\u{e9}\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "repeated headers keep their order", bytes: "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nx: 1\r\nset-cookie: b=2\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "101 with bytes after it", bytes: "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\u{1}\u{2}not http",
              leftover: "\u{1}\u{2}not http"),
        .init(name: "trailing whitespace in values", bytes: "HTTP/1.1 200 OK\r\nx-s: a  \r\nx-t: b \t\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "zero length", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "keep-alive by header, HTTP/1.0", bytes: "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi"),
    ]

    static let refused: [Case] = [
        .init(name: "not HTTP", bytes: "{\"oops\": 1}\n"),
        .init(name: "HTTP/2 status line", bytes: "HTTP/2 200 OK\r\n\r\n"),
        .init(name: "two-digit status", bytes: "HTTP/1.1 20 OK\r\n\r\n"),
        .init(name: "a space before the colon", bytes: "HTTP/1.1 200 OK\r\nx-a : b\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "a folded header", bytes: "HTTP/1.1 200 OK\r\nx-a: b\r\n c\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "a control byte in a value", bytes: "HTTP/1.1 200 OK\r\nx-a: b\u{1}c\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "a bare CR in a value", bytes: "HTTP/1.1 200 OK\r\nx-a: b\rc\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "bare LF line ends", bytes: "HTTP/1.1 200 OK\ncontent-length: 0\n\n"),
        .init(name: "content-length and transfer-encoding", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        .init(name: "content-length twice", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc"),
        // llhttp reads only spaces there: with a tab it reads to the close, or keeps the connection.
        .init(name: "a tab after chunked", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\t\r\n\r\n0\r\n\r\n"),
        .init(name: "a tab after close", bytes: "HTTP/1.1 200 OK\r\nconnection: close \t\r\ncontent-length: 0\r\n\r\n"),
        .init(name: "content-length list", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc"),
        .init(name: "negative content-length", bytes: "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"),
        .init(name: "a chunk size that is not hex", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"),
        .init(name: "chunk data longer than its size", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
        .init(name: "a chunk size past Int", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n"),
        .init(name: "a body after a 204", bytes: "HTTP/1.1 204 No Content\r\n\r\n{\"body\": 1}\n"),
        .init(name: "cut in the body", bytes: "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", closes: true),
        .init(name: "cut in the head", bytes: "HTTP/1.1 200 OK\r\ncontent-le", closes: true),
        .init(name: "cut in a chunk", bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab", closes: true),
    ]

    @Test("reads what NIO's decoder reads, whole and cut at every byte", arguments: accepted)
    func readsWhatNIOReads(_ example: Case) throws {
        let expected = try Self.nios(example)
        #expect(expected.error == nil, "NIO's decoder accepts it")
        let whole = try Self.ours(example, cutEvery: nil)
        #expect(whole.error == nil)
        #expect(whole.parts == expected.parts)
        #expect(whole.leftover == example.leftover)
        for cut in [1, 2, 3, 7, 16] {
            let pieces = try Self.ours(example, cutEvery: cut)
            #expect(pieces.error == nil, "cut every \(cut) bytes")
            #expect(pieces.parts == expected.parts, "cut every \(cut) bytes")
        }
    }

    @Test("refuses what a proxy must not guess at", arguments: refused)
    func refuses(_ example: Case) throws {
        #expect(try Self.ours(example, cutEvery: nil).error != nil)
        #expect(try Self.ours(example, cutEvery: 1).error != nil)
    }

    /// Mutated responses (bytes changed, inserted, removed, repeated; seeded, so every run is the same): whatever
    /// ours accepts, NIO's decoder accepts and reads the same, and ours reads the same whole or byte by byte.
    @Test("mutated responses: what ours accepts, NIO reads the same")
    func mutatedResponsesAgreeWithNIO() throws {
        var mutations = Mutations(seeds: Self.accepted.filter { $0.leftover.isEmpty }.map(\.bytes), seed: 0x0DD_BA11)
        var acceptedByBoth = 0
        for _ in 0..<3000 {
            let bytes = mutations.next()
            let example = Case(name: "mutated", bytes: String(decoding: bytes, as: UTF8.self), closes: true)
            let ours = try Self.ours(example, cutEvery: nil)
            #expect(try Self.ours(example, cutEvery: 1) == ours, "byte by byte: \(example.bytes.debugDescription)")
            guard ours.error == nil else { continue }
            var nios = try Self.nios(example)
            if ours.upgraded {  // after a 101 the bytes and the close are the tunnel's, not HTTP's
                nios.parts = Array(nios.parts.prefix(ours.parts.count))
                nios.error = nil
                nios.upgraded = true
                nios.leftover = ours.leftover
            }
            #expect(nios == ours, "\(example.bytes.debugDescription)")
            acceptedByBoth += 1
        }
        #expect(acceptedByBoth > 300, "the mutations leave enough valid responses to compare")
    }

    @Test("a head past the limit is refused before it ends")
    func headLimit() throws {
        var parser = HTTP1ResponseParser()
        parser.expectResponse(to: .GET)
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\n")
        let field = "x-filler: " + String(repeating: "a", count: 1000) + "\r\n"
        #expect(throws: HTTP1ParseError.headTooLarge) {
            for _ in 0..<200 {
                buffer.writeString(field)
                _ = try parser.next(&buffer)
            }
        }
    }

    @Test("the body is slices of the received buffer, not copies")
    func bodiesAreSlices() throws {
        var parser = HTTP1ResponseParser()
        parser.expectResponse(to: .GET)
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody")
        _ = try parser.next(&buffer)
        guard case .body(let body) = try parser.next(&buffer) else {
            Issue.record("no body")
            return
        }
        let sameStorage = body.withUnsafeReadableBytes { bodyBytes in
            buffer.withUnsafeReadableBytes { rest in bodyBytes.baseAddress! + bodyBytes.count == rest.baseAddress! }
        }
        #expect(sameStorage)
    }

    // MARK: Differential runs

    struct Reading: Equatable {
        /// Heads, the body's bytes between them (however they were split), ends.
        var parts: [String] = []
        var leftover = ""
        var error: String?
        var upgraded = false
        private var body = ByteBuffer()

        /// `keepAlive`: what the reader says of the head's connection; `trimValues`: NIO's values without their
        /// trailing whitespace (below).
        mutating func note(_ part: HTTPClientResponsePart, keepAlive: Bool, answersHEAD: Bool, trimValues: Bool) {
            switch part {
            case .head(var head):
                if trimValues { head.headers = trimmingTrailingWhitespace(head.headers) }
                parts.append(describe(head, keepAlive: keepAlive, answersHEAD: answersHEAD))
            case .body(var bytes):
                body.writeBuffer(&bytes)
            case .end(let trailers):
                parts.append("body \(String(buffer: body))")
                body.clear()
                parts.append("end \(trailers.map { describe(trimValues ? trimmingTrailingWhitespace($0) : $0) } ?? "-")")
            }
        }
    }

    /// Ours, fed the bytes whole or `cutEvery` bytes at a time.
    static func ours(_ example: Case, cutEvery: Int?) throws -> Reading {
        var parser = HTTP1ResponseParser()
        parser.expectResponse(to: example.method)
        var reading = Reading()
        var unparsed = ByteBuffer()
        let all = ByteBuffer(string: example.bytes)
        var offset = 0
        func note(_ part: HTTPClientResponsePart) {
            // NIO's head says a body that ends with the connection as not keep-alive (llhttp's verdict); ours says it
            // apart.
            var keepAlive = false
            if case .head = part { keepAlive = parser.keepsConnection && !parser.bodyEndsAtClose }
            reading.note(part, keepAlive: keepAlive, answersHEAD: example.method == .HEAD, trimValues: false)
            if case .end = part { parser.expectResponse(to: example.method) }
        }
        do {
            while offset < all.readableBytes {
                let length = min(cutEvery ?? all.readableBytes, all.readableBytes - offset)
                var piece = all.getSlice(at: offset, length: length)!
                offset += length
                unparsed.writeBuffer(&piece)
                while let part = try parser.next(&unparsed) { note(part) }
                if parser.isUpgraded { break }
            }
            reading.upgraded = parser.isUpgraded
            if parser.isUpgraded {
                var rest = all.getSlice(at: offset, length: all.readableBytes - offset)!
                unparsed.writeBuffer(&rest)
                reading.leftover = String(buffer: unparsed)
            } else if example.closes, let part = try parser.connectionClosed(leaving: unparsed) {
                note(part)
            }
        } catch {
            reading.error = "\(error)"
        }
        return reading
    }

    /// NIO's `HTTPResponseDecoder`, after the request went out through its `HTTPRequestEncoder`, as the upstream
    /// pipeline had them.
    static func nios(_ example: Case) throws -> Reading {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes)
        var reading = Reading()
        func drain() throws {
            while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
                var keepAlive = false  // llhttp's verdict, read before the headers are replaced
                if case .head(let head) = part { keepAlive = head.isKeepAlive }
                reading.note(part, keepAlive: keepAlive, answersHEAD: example.method == .HEAD, trimValues: true)
            }
        }
        do {
            for _ in 0..<4 {  // every response in the cases answers one request
                try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: example.method, uri: "/")))
                try channel.writeOutbound(HTTPClientRequestPart.end(nil))
            }
            try channel.writeInbound(ByteBuffer(string: example.bytes))
            try drain()
            if example.closes {
                _ = try channel.finish()
                try drain()
                return reading
            }
        } catch {
            reading.error = "\(error)"
        }
        _ = try? channel.finish()
        return reading
    }

    /// NIO's decoder keeps a value's trailing whitespace, which is not part of the value (RFC 9110 §5.5) and which
    /// HTTP/2 forbids at a value's end (RFC 9113 §8.2.1): ours trims it, so an HTTP/2 client can be sent the field.
    static func trimmingTrailingWhitespace(_ headers: HTTPHeaders) -> HTTPHeaders {
        HTTPHeaders(headers.map { ($0.name, String($0.value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())) })
    }

    /// NIO's head calls a HEAD response without framing headers not keep-alive (llhttp judges before it hears there
    /// is no body); ours keeps such a connection: keep-alive is not compared for HEAD.
    static func describe(_ head: HTTPResponseHead, keepAlive: Bool, answersHEAD: Bool) -> String {
        let keepAlive = answersHEAD ? "-" : String(keepAlive)
        return "\(head.version) \(head.status.code) \(head.status.reasonPhrase) keepAlive=\(keepAlive) \(describe(head.headers))"
    }

    static func describe(_ headers: HTTPHeaders) -> String {
        headers.map { "\($0.name)=\($0.value)" }.joined(separator: "|")
    }
}
