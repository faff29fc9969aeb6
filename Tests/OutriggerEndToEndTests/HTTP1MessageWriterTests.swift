import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
@testable import OutriggerProxy
import Testing

@Suite("HTTP/1.1 messages written as bytes: a small message leaves in one write, through a socket")
struct HTTP1MessageWriterTests {
    /// What the writer is handed, in order.
    enum Step: Sendable, CustomStringConvertible {
        case head(status: Int, headers: [(String, String)])
        case body(String)
        case end
        case flush

        var description: String {
            switch self {
            case .head(let status, _): "head \(status)"
            case .body(let text): "body \(text.utf8.count)"
            case .end: "end"
            case .flush: "flush"
            }
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var steps: [Step]
        /// Writes that reach the socket's end of the pipeline.
        var writes: Int
        /// Flushes that reach it: one with nothing written since the last is not passed on.
        var flushes: Int
        var bytes: String
        var testDescription: String { name }
    }

    static let large = String(repeating: "a", count: 5000)
    /// Behind a 40-byte head: within the 1 KiB a connection keeps, and past it.
    static let fits = String(repeating: "f", count: 900)
    static let overflows = String(repeating: "o", count: 1000)

    static let cases: [Case] = [
        Case(name: "a head, its body and end: one write",
             steps: [.head(status: 200, headers: [("content-length", "5")]), .body("hello"), .end, .flush], writes: 1, flushes: 1,
             bytes: "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
        Case(name: "chunked: the chunks framed behind the head, the last chunk too",
             steps: [.head(status: 200, headers: [("transfer-encoding", "chunked")]), .body("hello"), .body("world"), .end, .flush],
             writes: 1, flushes: 1, bytes: "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"),
        Case(name: "a body too large to copy goes apart, after the head",
             steps: [.head(status: 200, headers: [("content-length", "5000")]), .body(large), .end, .flush], writes: 2, flushes: 1,
             bytes: "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + large),
        Case(name: "a body that fits in the kept 1 KiB goes with its head",
             steps: [.head(status: 200, headers: [("content-length", "900")]), .body(fits), .end, .flush], writes: 1, flushes: 1,
             bytes: "HTTP/1.1 200 OK\r\ncontent-length: 900\r\n\r\n" + fits),
        Case(name: "a body past it goes apart, as a large one does",
             steps: [.head(status: 200, headers: [("content-length", "1000")]), .body(overflows), .end, .flush], writes: 2, flushes: 1,
             bytes: "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + overflows),
        Case(name: "a flush sends the head that waits; later parts go on their own",
             steps: [.head(status: 200, headers: [("content-length", "10")]), .flush, .body("hello"), .body("world"), .end, .flush],
             writes: 3, flushes: 2, bytes: "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhelloworld"),
        Case(name: "a 1xx head goes at once; the final head waits for its body",
             steps: [.head(status: 100, headers: []), .head(status: 204, headers: []), .end, .flush], writes: 2, flushes: 1,
             bytes: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"),
        Case(name: "two messages in a row: one write each",
             steps: [.head(status: 200, headers: [("content-length", "2")]), .body("ok"), .end,
                     .head(status: 200, headers: [("content-length", "3")]), .body("yes"), .end, .flush], writes: 2, flushes: 1,
             bytes: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nyes"),
        Case(name: "a head not yet ended goes at the flush, with the body so far",
             steps: [.head(status: 200, headers: [("content-length", "10")]), .body("hello"), .flush, .body("world"), .end, .flush],
             writes: 2, flushes: 2, bytes: "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhelloworld"),
        Case(name: "a flush with nothing written since the last is not passed on",
             steps: [.flush, .head(status: 200, headers: [("content-length", "2")]), .body("ok"), .end, .flush, .flush], writes: 1,
             flushes: 1, bytes: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ]

    @Test(arguments: cases)
    func partsLeaveInTheirOrderInAsFewWritesAsTheyFit(_ testCase: Case) async throws {
        let counts = NIOLockedValueBox(SocketWrites())
        let server = try await loopbackServer(accepted: { channel in
            try? channel.pipeline.syncOperations.addHandler(SocketWriteCounter(counts))
        }) { ResponseScript(testCase.steps) }
        defer { server.close(promise: nil) }

        let reply = try await RawTCP.exchange(port: server.localAddress!.port!, [UInt8]())
        #expect(reply.closedByPeer)
        #expect(reply.text == testCase.bytes, "every part, in order, framed")
        #expect(counts.withLockedValue { $0.writes } == testCase.writes)
        #expect(counts.withLockedValue { $0.flushes } == testCase.flushes)
    }
}

/// Once connected: writes its steps through an `HTTP1ResponseWriter`, then closes.
private final class ResponseScript: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let steps: [HTTP1MessageWriterTests.Step]

    init(_ steps: [HTTP1MessageWriterTests.Step]) {
        self.steps = steps
    }

    func channelActive(context: ChannelHandlerContext) {
        let writer = HTTP1ResponseWriter(context: context)
        for step in steps {
            switch step {
            case .head(let status, let headers):
                writer.write(.head(HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status),
                                                    headers: HTTPHeaders(headers))), promise: nil)
            case .body(let text):
                writer.write(.body(.byteBuffer(ByteBuffer(string: text))), promise: nil)
            case .end:
                writer.write(.end(nil), promise: nil)
            case .flush:
                writer.flush()
            }
        }
        // All of it was flushed, and a loopback socket takes it at once.
        context.close(promise: nil)
    }
}
