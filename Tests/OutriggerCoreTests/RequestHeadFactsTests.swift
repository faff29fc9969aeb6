import NIOHTTP1
import OutriggerCore
import Testing

@Suite("What one pass reads of a request's fields")
struct RequestHeadFactsTests {
    static func facts(_ method: HTTPMethod = .GET, _ version: HTTPVersion = .http1_1, _ headers: [(String, String)] = []) -> RequestHeadFacts {
        RequestHeadFacts(HTTPRequestHead(version: version, method: method, uri: "/chat", headers: HTTPHeaders(headers)))
    }

    @Test func upgradesAndKeepAlive() {
        let websocket = Self.facts(.GET, .http1_1, [("connection", "Upgrade"), ("upgrade", "websocket")])
        #expect(websocket.tunnelableUpgrade(http1BothSides: true) == "websocket")
        #expect(websocket.tunnelableUpgrade(http1BothSides: false) == nil, "no tunnel across HTTP/2")
        #expect(!websocket.keepsConnection, "the parser stops at an upgrade: the connection ends with it")
        let h2c = Self.facts(.GET, .http1_1, [("connection", "upgrade, http2-settings"), ("upgrade", "h2c")])
        #expect(h2c.tunnelableUpgrade(http1BothSides: true) == nil, "h2c is never tunnelled (RFC 9113 §3.1)")
        let upgradeWithoutConnection = Self.facts(.GET, .http1_1, [("upgrade", "websocket")])
        #expect(upgradeWithoutConnection.tunnelableUpgrade(http1BothSides: true) == nil)
        #expect(upgradeWithoutConnection.keepsConnection)
        let optionInSecondField = Self.facts(.GET, .http1_1, [("Connection", "x-a"), ("upgrade", "ws"), ("connection", " upgrade\t")])
        #expect(optionInSecondField.tunnelableUpgrade(http1BothSides: true) == "ws", "every connection field's options")
        #expect(!Self.facts(.CONNECT, .http1_1, []).keepsConnection)
        #expect(!Self.facts(.GET, .http1_0, []).keepsConnection)
        #expect(Self.facts(.GET, .http1_0, [("connection", "keep-alive")]).keepsConnection)
        #expect(!Self.facts(.GET, .http1_1, [("connection", "close")]).keepsConnection)
    }

    /// The `connection` options read as NIO's `isKeepAlive` reads them (what decided it before): the same answer for
    /// every case, the odd ones included.
    @Test(arguments: [
        [], [("connection", "close")], [("connection", "keep-alive")], [("Connection", "Keep-Alive")], [("connection", "CLOSE ")],
        [("connection", "keep-alive, keep-alive")], [("connection", "keep-alive"), ("connection", "close")],
        [("connection", "close, keep-alive")], [("connection", "te, ,keep-alive,")], [("connection", "x-close")],
        [("connection", "\tclose\t,x")], [("connection", "")], [("connection", "keep-alive"), ("connection", "keep-alive")],
    ] as [[(String, String)]])
    func keepAliveAsNIOReadsIt(fields: [(String, String)]) {
        for version in [HTTPVersion.http1_0, .http1_1] {
            let head = HTTPRequestHead(version: version, method: .GET, uri: "/", headers: HTTPHeaders(fields))
            #expect(RequestHeadFacts(head).keepsConnection == head.isKeepAlive, "\(fields) \(version)")
        }
    }

    /// Split at the comma byte, as the parser splits them: NIO's `Character` split kept `close,` and a combining mark
    /// (U+0301, obs-text to HTTP) in one option, and the handler kept a connection the parser had closed.
    @Test func optionsSplitAtEveryCommaByte() {
        let closeThenMark = Self.facts(.GET, .http1_1, [("connection", "close,\u{301}")])
        #expect(!closeThenMark.keepsConnection)
        let upgradeThenMark = Self.facts(.GET, .http1_1, [("connection", "upgrade,\u{301}"), ("upgrade", "websocket")])
        #expect(upgradeThenMark.tunnelableUpgrade(http1BothSides: true) == "websocket" && !upgradeThenMark.keepsConnection)
        #expect(Self.facts(.GET, .http1_0, [("connection", "keep-alive,\u{301}")]).keepsConnection)
    }

    @Test func sizeHostsLengthsExpectationsAndOverrides() {
        // "GET /chat HTTP/1.1\r\n" + "host: a\r\n" + "\r\n", within the 12 bytes allowed for the line's rest.
        let plain = Self.facts(.GET, .http1_1, [("host", "a")])
        #expect(plain.size == 3 + 5 + 12 + 4 + 1 + 4)
        #expect(plain.host == "a" && plain.hasValidHost && plain.contentLength == nil && !plain.expectsContinue && !plain.hasOverrideFields)
        let posted = Self.facts(.POST, .http1_1, [("Host", "b:80"), ("Content-Length", "12"), ("content-length", "13"),
                                                  ("Expect", "100-Continue"), ("X-Outrigger-Timeout-Ms", "5")])
        #expect(posted.host == "b:80" && posted.contentLength == 12, "the first of each")
        #expect(posted.expectsContinue && posted.hasOverrideFields)
        #expect(Self.facts(.POST, .http1_1, [("content-length", "x"), ("content-length", "3")]).contentLength == nil,
                "the first, when it is no number")
        #expect(!Self.facts(.GET, .http1_1, [("expect", "100-continue-ish")]).expectsContinue)
        #expect(!Self.facts(.GET, .http1_1, [("expect", "x"), ("expect", "100-continue")]).expectsContinue, "the first")
        #expect(Self.facts(.POST, .http1_1, [("Content-Type", "application/grpc+proto")]).isGRPC)
        #expect(!Self.facts(.POST, .http1_1, [("content-type", "Application/grpc")]).isGRPC, "compared as it was, in its case")
        #expect(!Self.facts(.POST, .http1_1, [("content-type", "text/plain"), ("content-type", "application/grpc")]).isGRPC, "the first")
        #expect(!plain.isGRPC)
        let twoInvalid = Self.facts(.GET, HTTPVersion(major: 2, minor: 0), [("host", "a b"), ("host", "a b")])
        #expect(twoInvalid.host == "a b" && !twoInvalid.hasValidHost)
        let invalidThenValid = Self.facts(.GET, HTTPVersion(major: 2, minor: 0), [("host", "a b"), ("host", "a")])
        #expect(invalidThenValid.host == "a b" && !invalidThenValid.hasValidHost, "the first is routed by, and it is invalid")
    }

    @Test func whatPreparingTheUpstreamRequestLooksFor() {
        let plain = Self.facts(.GET, .http1_1, [("host", "a"), ("accept", "*/*")])
        #expect(!plain.hasHopByHopFields && !plain.hasContentLength && !plain.lastTransferCodingIsChunked)
        #expect(!plain.hasForwardedFor && !plain.hasForwardedProto && !plain.hasRequestID)
        let forwarded = Self.facts(.POST, .http1_1, [("X-Forwarded-For", "a"), ("x-forwarded-proto", "https"), ("X-Request-Id", "r"),
                                                     ("content-length", "x"), ("Keep-Alive", "5")])
        #expect(forwarded.hasForwardedFor && forwarded.hasForwardedProto && forwarded.hasRequestID)
        #expect(forwarded.hasContentLength && forwarded.contentLength == nil, "there, though no number")
        #expect(forwarded.hasHopByHopFields)
        // The last transfer coding, as NIO's canonical form lists them across every field: empty elements skipped.
        for (values, chunked) in [
            (["chunked"], true), (["gzip, Chunked"], true), (["chunked, gzip"], false), (["chunked,"], true), (["chunked, "], false),
            (["chunked", "gzip"], false), (["gzip", "chunked"], true), (["chunked", ","], true), ([" ,chunked\t"], true), ([""], false),
        ] as [([String], Bool)] {
            let facts = Self.facts(.POST, .http1_1, values.map { ("transfer-encoding", $0) })
            #expect(facts.lastTransferCodingIsChunked == chunked, "\(values)")
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: HTTPHeaders(values.map { ("transfer-encoding", $0) }))
            #expect(chunked == (head.headers[canonicalForm: "transfer-encoding"].last.map { $0.lowercased() == "chunked" } ?? false),
                    "NIO reads \(values) so too")
            #expect(facts.hasHopByHopFields)
        }
    }

    /// Without a field the trace scan reads, the scan is skipped: so every name it reads must be noted, in any case, and
    /// names that share a length and first letter with one must not be.
    @Test func traceFieldsAreNotedForTheScan() {
        let names = ["traceparent", "tracestate", "b3", "baggage", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
                     "x-b3-flags", "x-outrigger-trace"]
        let cases = names + names.map { $0.uppercased() } + ["TraceParent", "X-B3-TraceId", "Baggage"]
        for name in cases {
            #expect(Self.facts(.GET, .http1_1, [("host", "a"), (name, "1")]).hasTraceFields, "\(name)")
        }
        let lookalikes = ["traceparenx", "tracestatf", "b4", "baggagf", "x-b3-traceie", "x-b3-spanie", "x-b3-parentspanie", "x-b3-samplee",
                          "x-b3-flagz", "x-outrigger-trac3", "x-request-id", "accept", "user-agent", "b", "t"]
        for name in lookalikes {
            let facts = Self.facts(.GET, .http1_1, [("host", "a"), (name, "1")])
            #expect(!facts.hasTraceFields, "\(name)")
            let scan = TracePropagation.scan(HTTPHeaders([("host", "a"), (name, "1")]))
            #expect(scan.trace == nil && scan.force == nil && !scan.hasBaggage, "the scan finds nothing either: \(name)")
        }
        let traced = Self.facts(.GET, .http1_1, [("host", "a"), ("traceparent", "00-zz")])
        #expect(traced.hasTraceFields && TracePropagation.scan(HTTPHeaders([("traceparent", "00-zz")])).trace != nil)
    }
}
