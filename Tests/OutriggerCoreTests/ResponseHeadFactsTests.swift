import NIOCore
import NIOHTTP1
import OutriggerConfig
@testable import OutriggerCore
import Testing

/// The response parser's `ResponseHeadFacts` say exactly which of the looked-for fields a head has, and a head prepared
/// with them comes out as one prepared knowing nothing.
@Suite("Response head facts")
struct ResponseHeadFactsTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var fields: [String]
        var hopByHop = false
        var own = false
        var contentLength = false
        var testDescription: String { fields.isEmpty ? "no fields" : fields.joined(separator: ", ") }
    }

    static let cases: [Case] = [
        Case(fields: []),
        Case(fields: ["content-type: text/plain", "server: echo", "date: today"]),
        Case(fields: ["Content-Length: 4"], contentLength: true),
        Case(fields: ["transfer-encoding: chunked"], hopByHop: true),
        Case(fields: ["Connection: close", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["keep-alive: timeout=5", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["TE: trailers", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["trailer: grpc-status", "content-length: 4"], contentLength: true),  // not hop-by-hop here
        Case(fields: ["proxy-connection: keep-alive", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["Proxy-Authenticate: Basic", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["proxy-authorization: x", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["http2-settings: AAMAAABkAAQAAP__", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["upgrade: websocket", "content-length: 4"], hopByHop: true, contentLength: true),
        Case(fields: ["x-outrigger-drain: true", "content-length: 4"], own: true, contentLength: true),
        Case(fields: ["X-Outrigger-Upstream-Service-Time: 9", "content-length: 4"], own: true, contentLength: true),
        // Near misses: the lengths of names looked for, other bytes.
        Case(fields: ["x-outrigger: 1", "x-outriggers-: 1", "connections: 1", "content-lengths: 4", "tx: 1", "content-length: 4"],
             contentLength: true),
        Case(fields: ["connection: x-outrigger-drain", "x-outrigger-drain: true", "content-length: 4"], hopByHop: true, own: true,
             contentLength: true),
        // The content-length came, and goes with the hop-by-hop fields: framing must look again.
        Case(fields: ["connection: content-length", "content-length: 4"], hopByHop: true, contentLength: true),
    ]

    @Test("say which looked-for fields are there", arguments: cases)
    func factsOfParsedHeads(_ example: Case) throws {
        let head = try Self.parse(example.fields)
        #expect(head.facts == ResponseHeadFacts(mayHaveHopByHopFields: example.hopByHop, mayHaveOwnFields: example.own,
                                                hasContentLength: example.contentLength))
    }

    @Test("a head prepared and framed with them is the head prepared and framed knowing nothing", arguments: cases)
    func preparedWithFactsAsWithout(_ example: Case) throws {
        // Plain, and with response header rules that change the framing fields.
        for route in [try ProxyHeadersTests.route(), try Self.routeRemovingContentLength] {
            try Self.expectPreparedWithFactsAsWithout(example, route: route)
        }
    }

    static var routeRemovingContentLength: Route {
        get throws {
            try ProxyHeadersTests.route(RouteConfig(destination: .cluster("a"), responseHeaders: HeaderMutations(remove: ["content-length"])))
        }
    }

    static func expectPreparedWithFactsAsWithout(_ example: Case, route: Route) throws {
        let parsed = try Self.parse(example.fields)
        var known = parsed.head, unknown = parsed.head
        ProxyHeadersTests.prepareResponse(&known, facts: parsed.facts, route: route, upstreamServiceMilliseconds: 7, addVia: true)
        ProxyHeadersTests.prepareResponse(&unknown, facts: .unknown, route: route, upstreamServiceMilliseconds: 7, addVia: true)
        #expect(known == unknown)
        for clientVersion in [HTTPVersion.http1_0, .http1_1] {
            var framedKnown = known, framedUnknown = unknown
            let closesKnown = HTTP1Rules.frame(&framedKnown, answersHEAD: false, clientVersion: clientVersion, keepAlive: true, closing: false,
                                               hasContentLength: parsed.facts.contentLengthAfterPreparing(by: route))
            let closesUnknown = HTTP1Rules.frame(&framedUnknown, answersHEAD: false, clientVersion: clientVersion, keepAlive: true, closing: false)
            #expect(framedKnown == framedUnknown)
            #expect(closesKnown == closesUnknown)
        }
    }

    @Test("an interim head does not stand for the final one")
    func interimHeadsLeaveNoFacts() throws {
        var parser = HTTP1ResponseParser()
        parser.expectResponse(to: .GET)
        var buffer = ByteBuffer(string: "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n")
        #expect(try parser.next(&buffer) == nil, "the 103 is read and dropped")
        #expect(buffer.readableBytes == 0 && parser.headFacts == .unknown)
        buffer.writeString("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        guard case .head = try parser.next(&buffer) else {
            Issue.record("no head")
            return
        }
        #expect(parser.headFacts == ResponseHeadFacts(mayHaveHopByHopFields: true, mayHaveOwnFields: false, hasContentLength: true))
    }

    /// A head with `fields` and no framing but what they say (a body without one ends at the close).
    static func parse(_ fields: [String]) throws -> (head: HTTPResponseHead, facts: ResponseHeadFacts) {
        var parser = HTTP1ResponseParser()
        parser.expectResponse(to: .GET)
        var buffer = ByteBuffer(string: "HTTP/1.1 200 OK\r\n" + fields.map { $0 + "\r\n" }.joined() + "\r\n")
        guard case .head(let head) = try parser.next(&buffer) else { throw HTTP1ParseError.invalidStartLine }
        return (head, parser.headFacts)
    }
}
