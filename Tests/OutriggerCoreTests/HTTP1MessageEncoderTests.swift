import NIOCore
import NIOEmbedded
import NIOHTTP1
import OutriggerCore
import Testing

/// The proxy's own message encoding writes the bytes NIO's `HTTPResponseEncoder` (framing headers left as they are)
/// and `HTTPRequestEncoder` (framing set from the method) write for the same parts: what it replaced in the HTTP/1.1
/// downstream and upstream pipelines.
@Suite("HTTP/1 message encoder")
struct HTTP1MessageEncoderTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var head: HTTPResponseHead
        var bodies: [String] = []
        var trailers: HTTPHeaders?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        .init(name: "length-framed", head: .init(version: .http1_1, status: .ok, headers: ["content-length": "5", "x-a": "b"]), bodies: ["hello"]),
        .init(name: "chunked, two parts", head: .init(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]),
              bodies: ["hello", String(repeating: "x", count: 300)]),
        .init(name: "chunked, an empty part is not a chunk", head: .init(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]),
              bodies: ["", "abc"]),
        .init(name: "chunked with trailers", head: .init(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]),
              bodies: ["abc"], trailers: ["grpc-status": "0", "x-t": "1"]),
        .init(name: "chunked, no body", head: .init(version: .http1_1, status: .notFound, headers: ["transfer-encoding": "chunked"])),
        .init(name: "HTTP/1.0 has no chunks", head: .init(version: .http1_0, status: .ok, headers: ["transfer-encoding": "chunked"]), bodies: ["abc"]),
        .init(name: "HTTP/1.0 close-delimited", head: .init(version: .http1_0, status: .badGateway, headers: ["connection": "close"]), bodies: ["gone"]),
        .init(name: "a status NIO does not name", head: .init(version: .http1_1, status: .custom(code: 599, reasonPhrase: "Odd"), headers: ["content-length": "0"])),
        .init(name: "an upstream's status, parsed", head: .init(version: .http1_1, status: HTTPResponseStatus(statusCode: 418), headers: ["content-length": "0"])),
        .init(name: "100 Continue", head: .init(version: .http1_1, status: .continue)),
        .init(name: "101 Switching Protocols", head: .init(version: .http1_1, status: .switchingProtocols, headers: ["upgrade": "websocket", "connection": "upgrade"])),
        .init(name: "no headers", head: .init(version: .http1_1, status: .noContent)),
        // Fields are written as many at a time as the buffer's room takes: past it, and one larger than the room made.
        .init(name: "many fields, one longer than the room", head: .init(version: .http1_1, status: .ok, headers: HTTPHeaders(
            (0..<60).map { ("x-field-\($0)", String(repeating: "v", count: $0 * 7)) } + [("x-long", String(repeating: "w", count: 3000)), ("content-length", "0")]))),
        .init(name: "transfer-encoding not exactly chunked is not chunked", head: .init(version: .http1_1, status: .ok, headers: ["transfer-encoding": "gzip, chunked"]),
              bodies: ["abc"]),
    ]

    @Test("the same bytes as NIO's encoder", arguments: cases)
    func sameBytesAsNIO(_ example: Case) throws {
        #expect(ours(example) == String(decoding: try nios(example).readableBytesView, as: UTF8.self))
    }

    /// The proxy's own response fields written after the head's: the bytes of the head with them as its last fields.
    @Test("responses with the proxy's own fields after their fields: the same bytes as with them as the last fields", arguments: cases)
    func appendedResponseFieldsAsLastFields(_ example: Case) {
        for milliseconds: Int64 in [0, 7, 1_234_567] {
            var encoder = HTTP1MessageEncoder(), appended = ByteBuffer()
            encoder.encodeHead(example.head, appending: AppendedResponseFields(upstreamServiceMilliseconds: milliseconds), into: &appended)
            let appendedChunked = encoder.isChunked
            var withField = example.head
            withField.headers.add(name: "x-outrigger-upstream-service-time", value: String(milliseconds))
            var plain = HTTP1MessageEncoder(), asField = ByteBuffer()
            plain.encodeHead(withField, into: &asField)
            #expect(String(buffer: appended) == String(buffer: asField))
            #expect(appendedChunked == plain.isChunked)
        }
    }

    /// A field of every length up to past the first room made: at some length the fields leave the buffer less room
    /// than the empty line's two bytes, which then go on their own.
    @Test func everyFieldLengthAcrossTheRoom() throws {
        for length in 0..<700 {
            let example = Case(name: "\(length)", head: .init(version: .http1_1, status: .ok, headers: [
                "x-a": String(repeating: "v", count: length), "content-length": "0",
            ]))
            #expect(ours(example) == String(decoding: try nios(example).readableBytesView, as: UTF8.self), "\(length)")
        }
    }

    struct RequestCase: CustomTestStringConvertible, Sendable {
        var name: String
        var head: HTTPRequestHead
        var bodies: [String] = []
        var trailers: HTTPHeaders?
        var testDescription: String { name }
    }

    static let requestCases: [RequestCase] = [
        .init(name: "GET", head: .init(version: .http1_1, method: .GET, uri: "/a?b=c", headers: ["host": "x", "x-request-id": "1"])),
        .init(name: "POST without framing is chunked", head: .init(version: .http1_1, method: .POST, uri: "/", headers: ["host": "x"]),
              bodies: ["hello", String(repeating: "y", count: 5000)]),
        .init(name: "POST with content-length", head: .init(version: .http1_1, method: .POST, uri: "/", headers: ["content-length": "3"]), bodies: ["abc"]),
        .init(name: "PUT with both: content-length wins", head: .init(version: .http1_1, method: .PUT, uri: "/",
                                                                      headers: ["transfer-encoding": "chunked", "content-length": "3"]), bodies: ["abc"]),
        .init(name: "PATCH chunked with trailers", head: .init(version: .http1_1, method: .PATCH, uri: "/", headers: ["transfer-encoding": "chunked"]),
              bodies: ["a", "", "b"], trailers: ["x-sum": "2"]),
        .init(name: "TRACE carries no body", head: .init(version: .http1_1, method: .TRACE, uri: "/", headers: ["content-length": "0", "transfer-encoding": "chunked"])),
        .init(name: "GET that says chunked", head: .init(version: .http1_1, method: .GET, uri: "/", headers: ["transfer-encoding": "chunked"]), bodies: ["q"]),
        .init(name: "DELETE with transfer-encoding other than chunked", head: .init(version: .http1_1, method: .DELETE, uri: "/",
                                                                                    headers: ["transfer-encoding": "gzip"]), bodies: ["q"]),
        .init(name: "GET: the first transfer-encoding decides", head: .init(version: .http1_1, method: .GET, uri: "/",
                                                                    headers: HTTPHeaders([("Transfer-Encoding", "gzip"), ("transfer-encoding", "chunked")])), bodies: ["q"]),
        .init(name: "GET: a second, chunked, is not read", head: .init(version: .http1_1, method: .GET, uri: "/",
                                                                 headers: HTTPHeaders([("TRANSFER-ENCODING", "chunked"), ("transfer-encoding", "gzip")])), bodies: ["q"]),
        .init(name: "PUT: a content-length in any case wins", head: .init(version: .http1_1, method: .PUT, uri: "/",
                                                                    headers: HTTPHeaders([("Transfer-Encoding", "chunked"), ("Content-Length", "1")])), bodies: ["q"]),
        .init(name: "HTTP/1.0 POST is never chunked", head: .init(version: .http1_0, method: .POST, uri: "/", headers: [:]), bodies: ["old"]),
        .init(name: "an extension method", head: .init(version: .http1_1, method: .RAW(value: "PURGE"), uri: "*", headers: ["host": "x"])),
        .init(name: "CONNECT", head: .init(version: .http1_1, method: .CONNECT, uri: "example.com:443", headers: ["host": "example.com:443"])),
        // The fields are written as they are, and written again framed only when framing changes them.
        .init(name: "POST with another transfer-encoding: chunked replaces it", head: .init(version: .http1_1, method: .POST, uri: "/",
                                                                                      headers: ["transfer-encoding": "gzip", "x-a": "1"]), bodies: ["q"]),
        .init(name: "TRACE without framing fields", head: .init(version: .http1_1, method: .TRACE, uri: "/", headers: ["host": "x"])),
        .init(name: "TRACE with a content-length only", head: .init(version: .http1_1, method: .TRACE, uri: "/", headers: ["Content-Length": "0"])),
        .init(name: "GET: Chunked in another case is not chunked", head: .init(version: .http1_1, method: .GET, uri: "/",
                                                                         headers: ["transfer-encoding": "Chunked"]), bodies: ["q"]),
        .init(name: "POST whose fields outgrow the first room: chunked added after them", head: .init(
            version: .http1_1, method: .POST, uri: "/", headers: ["x-long": String(repeating: "l", count: 5000), "x-after": "1"]), bodies: ["q"]),
        .init(name: "PATCH with both, past the first room: framed again", head: .init(
            version: .http1_1, method: .PATCH, uri: "/",
            headers: ["x-long": String(repeating: "l", count: 5000), "transfer-encoding": "chunked", "content-length": "1"]), bodies: ["q"]),
    ]

    @Test("requests: the same bytes as NIO's request encoder", arguments: requestCases)
    func requestsAsNIO(_ example: RequestCase) throws {
        var encoder = HTTP1MessageEncoder()
        var ours = ByteBuffer()
        encoder.encodeHead(example.head, into: &ours)
        for body in example.bodies { encoder.encodeBody(ByteBuffer(string: body), into: &ours) }
        _ = encoder.encodeEnd(trailers: example.trailers, into: &ours)

        let channel = EmbeddedChannel(handler: HTTPRequestEncoder())
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(HTTPClientRequestPart.head(example.head))
        for body in example.bodies { try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body)))) }
        try channel.writeOutbound(HTTPClientRequestPart.end(example.trailers))
        var nios = ByteBuffer()
        while let part = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(var bytes) = part else { continue }
            nios.writeBuffer(&bytes)
        }
        #expect(String(buffer: ours) == String(buffer: nios))
    }

    /// The proxy's own fields written after the head's from what they are made of: the bytes NIO writes for the head
    /// with them added as its last fields, framing rewritten or not.
    @Test("requests with the proxy's own fields after their fields: the same bytes as NIO's, with them as the last fields",
          arguments: requestCases)
    func appendedOwnFieldsAsNIO(_ example: RequestCase) throws {
        var random = FastRandom(seed: 9)
        let own = AppendedOwnFields(
            forwardedFor: "10.1.2.3", forwardedProto: "https", requestID: GeneratedRequestID(random: &random), expectedTimeout: "1500",
            traceparent: TraceparentField(traceID: TraceID(high: 0x4bf9_2f35_77b3_4da6, low: 0xa3ce_929d_0e0e_4736), spanID: 0x00f0_67aa_0ba9_02b7, sampled: true))
        var encoder = HTTP1MessageEncoder()
        var ours = ByteBuffer()
        encoder.encodeHead(example.head, appending: own, into: &ours)

        var withFields = example.head
        own.add(to: &withFields.headers)
        let channel = EmbeddedChannel(handler: HTTPRequestEncoder())
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(HTTPClientRequestPart.head(withFields))
        let nios = try #require(try channel.readOutbound(as: IOData.self))
        guard case .byteBuffer(let bytes) = nios else { throw EncodingMismatch() }
        #expect(String(buffer: ours) == String(buffer: bytes))
        #expect(String(buffer: ours).contains("\r\nx-forwarded-for: 10.1.2.3\r\nx-forwarded-proto: https\r\nx-request-id: \(own.requestID!.text)\r\n"
            + "x-outrigger-expected-timeout-ms: 1500\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"))
        // One of them alone.
        var traceOnly = ByteBuffer()
        encoder.encodeHead(example.head, appending: AppendedOwnFields(traceparent: own.traceparent), into: &traceOnly)
        #expect(String(buffer: traceOnly).components(separatedBy: "\r\n").filter { $0.hasPrefix("traceparent: ") }.count == 1)
        #expect(!String(buffer: traceOnly).contains("x-request-id: \(own.requestID!.text)"))
    }

    struct EncodingMismatch: Error {}

    @Test("chunk size lines are lowercase hex")
    func chunkSizes() {
        for (length, line) in [(1, "1\r\n"), (15, "f\r\n"), (16, "10\r\n"), (4096, "1000\r\n"), (0x1_2345_6789, "123456789\r\n")] {
            var buffer = ByteBuffer()
            HTTP1MessageEncoder.writeChunkSize(length, into: &buffer)
            #expect(String(buffer: buffer) == line)
        }
    }

    @Test("a message's end forgets its framing")
    func endResetsFraming() {
        var encoder = HTTP1MessageEncoder()
        var buffer = ByteBuffer()
        encoder.encodeHead(.init(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]), into: &buffer)
        #expect(encoder.isChunked)
        #expect(encoder.encodeEnd(trailers: nil, into: &buffer))
        #expect(!encoder.isChunked)
        #expect(!encoder.encodeEnd(trailers: nil, into: &buffer))
    }

    private func ours(_ example: Case) -> String {
        var encoder = HTTP1MessageEncoder()
        var buffer = ByteBuffer()
        encoder.encodeHead(example.head, into: &buffer)
        for body in example.bodies { encoder.encodeBody(ByteBuffer(string: body), into: &buffer) }
        _ = encoder.encodeEnd(trailers: example.trailers, into: &buffer)
        return String(buffer: buffer)
    }

    private func nios(_ example: Case) throws -> ByteBuffer {
        var configuration = HTTPResponseEncoder.Configuration()
        configuration.automaticallySetFramingHeaders = false
        let channel = EmbeddedChannel(handler: HTTPResponseEncoder(configuration: configuration))
        defer { _ = try? channel.finish() }
        try channel.writeOutbound(HTTPServerResponsePart.head(example.head))
        for body in example.bodies { try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: body)))) }
        try channel.writeOutbound(HTTPServerResponsePart.end(example.trailers))
        var all = ByteBuffer()
        while let part = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(var bytes) = part else { continue }
            all.writeBuffer(&bytes)
        }
        return all
    }
}

extension AppendedFieldSet {
    /// As fields at the end of `headers`: the head a receiver sees.
    func add(to headers: inout HTTPHeaders) {
        forEachField { name, value in
            headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
        }
    }
}
