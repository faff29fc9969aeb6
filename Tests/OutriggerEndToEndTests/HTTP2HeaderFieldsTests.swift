import NIOCore
import NIOHPACK
import NIOHTTP1
import OutriggerCore
@testable import OutriggerProxy
import Testing

@Suite("HEADERS as a stream hands them to the codec, read back by NIO's decoder")
struct HTTP2HeaderFieldsTests {
    private static func decodedTwice(_ fields: HTTP2HeaderFields) throws -> (first: [HPACKHeaders.Element], second: [HPACKHeaders.Element], secondBytes: Int) {
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        var first = ByteBuffer()
        encoder.startBlock(into: &first)
        fields.encode(with: &encoder, into: &first)
        var second = ByteBuffer()
        encoder.startBlock(into: &second)
        fields.encode(with: &encoder, into: &second)
        let secondBytes = second.readableBytes
        return (Array(try decoder.decodeHeaders(from: &first)), Array(try decoder.decodeHeaders(from: &second)), secondBytes)
    }

    @Test func aBlockKeepsHowEachFieldMayBeIndexed() throws {
        // A block in HTTP/2's shape (a health probe's request, a frame written down the pipeline): a credential
        // marked never-indexed must reach the peer marked so, for every proxy after it to keep it out of its tables.
        var block = HPACKHeaders([(":method", "POST"), (":path", "/grpc.health.v1.Health/Check")])
        block.add(name: "x-trace", value: "1", indexing: .nonIndexable)
        block.add(name: "authorization", value: "Bearer secret", indexing: .neverIndexed)
        let (first, second, secondBytes) = try Self.decodedTwice(.block(block))
        for decoded in [first, second] {
            #expect(decoded.map(\.name) == [":method", ":path", "x-trace", "authorization"])
            #expect(decoded.map(\.value) == [":method", ":path", "x-trace", "authorization"].map { block.first(name: $0)! })
            #expect(decoded[2].indexable == .nonIndexable)
            #expect(decoded[3].indexable == .neverIndexed, "the credential stays never-indexed")
        }
        // The method is static and the path was entered in the table: a byte each the second time. The other two
        // are literals again: `x-trace` with its name, `authorization` by its static index (23: two bytes after a
        // 4-bit prefix).
        #expect(secondBytes == 1 + 1 + (1 + 1 + 7 + 1 + 1) + (2 + 1 + 13), "\(secondBytes) bytes")
    }

    @Test func aHEADRequestIsToldInEveryShapeThatCarriesOne() {
        #expect(HTTP2HeaderFields.request(HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/"), scheme: "http").isHeadRequest)
        #expect(!HTTP2HeaderFields.request(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), scheme: "http").isHeadRequest)
        #expect(HTTP2HeaderFields.block(HPACKHeaders([(":method", "HEAD"), (":path", "/")])).isHeadRequest)
        #expect(!HTTP2HeaderFields.block(HPACKHeaders([(":method", "GET"), (":path", "/")])).isHeadRequest)
        #expect(!HTTP2HeaderFields.response(HTTPResponseHead(version: .http2, status: .ok)).isHeadRequest)
    }
}
