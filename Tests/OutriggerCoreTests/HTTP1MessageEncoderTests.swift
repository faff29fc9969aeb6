import NIOCore
import NIOEmbedded
import NIOHTTP1
import OutriggerCore
import Testing

/// The proxy's own response encoding writes the bytes NIO's `HTTPResponseEncoder` (framing headers left as they
/// are) writes for the same parts, which is what it replaced in the HTTP/1.1 downstream pipeline.
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
        .init(name: "transfer-encoding not exactly chunked is not chunked", head: .init(version: .http1_1, status: .ok, headers: ["transfer-encoding": "gzip, chunked"]),
              bodies: ["abc"]),
    ]

    @Test("the same bytes as NIO's encoder", arguments: cases)
    func sameBytesAsNIO(_ example: Case) throws {
        #expect(ours(example) == String(decoding: try nios(example).readableBytesView, as: UTF8.self))
    }

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
