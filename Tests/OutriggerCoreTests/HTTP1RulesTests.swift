import NIOCore
import NIOHTTP1
import OutriggerConfig
import OutriggerCore
import Testing

@Suite("HTTP/1 rules, try outcomes and passive health")
struct HTTP1RulesTests {
    struct FramingCase: CustomTestStringConvertible, Sendable {
        var status: HTTPResponseStatus
        var method: HTTPMethod = .GET
        var client: HTTPVersion = .http1_1
        var contentLength: Bool = false
        var keepAlive = true
        var closing = false
        /// Expected: `transfer-encoding`, `connection`, and whether the connection closes.
        var chunked: Bool
        var connection: String?
        var closes: Bool
        var testDescription: String { "\(status.code) \(method) HTTP/1.\(client.minor) length:\(contentLength) keepAlive:\(keepAlive) closing:\(closing)" }
    }

    static let framings: [FramingCase] = [
        .init(status: .ok, chunked: true, connection: nil, closes: false),
        .init(status: .ok, contentLength: true, chunked: false, connection: nil, closes: false),
        .init(status: .ok, method: .HEAD, chunked: false, connection: nil, closes: false),  // a HEAD answer has no body
        .init(status: .noContent, chunked: false, connection: nil, closes: false),
        .init(status: .notModified, chunked: false, connection: nil, closes: false),
        // HTTP/1.0 has no chunking: the body ends with the connection.
        .init(status: .ok, client: .http1_0, chunked: false, connection: "close", closes: true),
        .init(status: .ok, client: .http1_0, contentLength: true, chunked: false, connection: "keep-alive", closes: false),
        .init(status: .ok, contentLength: true, keepAlive: false, chunked: false, connection: "close", closes: true),
        .init(status: .ok, contentLength: true, closing: true, chunked: false, connection: "close", closes: true),
    ]

    @Test(arguments: framings) func aRelayedResponseIsFramedForItsClient(_ c: FramingCase) {
        var head = HTTPResponseHead(version: .http1_1, status: c.status)
        if c.contentLength { head.headers.add(name: "content-length", value: "5") }
        head.headers.add(name: "connection", value: "keep-alive")  // the upstream's word on its own connection is replaced
        let closes = HTTP1Rules.frame(&head, answersHEAD: c.method == .HEAD, clientVersion: c.client, keepAlive: c.keepAlive, closing: c.closing)
        #expect(closes == c.closes)
        #expect(head.headers.contains(name: "transfer-encoding") == c.chunked)
        #expect(head.headers["connection"] == [c.connection ?? "keep-alive"])
    }

    static func request(_ method: HTTPMethod = .GET, _ version: HTTPVersion = .http1_1, _ headers: [(String, String)] = []) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: "/chat", headers: HTTPHeaders(headers))
    }

    @Test func whenALocalReplyClosesTheConnection() {
        #expect(!HTTP1Rules.closesAfterLocalReply(.noRoute, keepAlive: true, requestComplete: true, quiescing: false))
        #expect(HTTP1Rules.closesAfterLocalReply(.noRoute, keepAlive: false, requestComplete: true, quiescing: false))
        #expect(HTTP1Rules.closesAfterLocalReply(.bodyTooLarge, keepAlive: true, requestComplete: false, quiescing: false),
                "the rest of the body is no request head")
        #expect(HTTP1Rules.closesAfterLocalReply(.badRequest, keepAlive: true, requestComplete: true, quiescing: false))
        #expect(HTTP1Rules.closesAfterLocalReply(.invalidHost, keepAlive: true, requestComplete: true, quiescing: false))
        #expect(HTTP1Rules.closesAfterLocalReply(.upstreamTimeout, keepAlive: true, requestComplete: true, quiescing: true))
    }

    @Test func protocolNames() {
        #expect([HTTPVersion.http1_0, .http1_1, .http2].map(HTTP1Rules.protocolName) == ["HTTP/1.0", "HTTP/1.1", "HTTP/2"])
    }

    @Test func whatAnAnswerSaysOfItsTry() {
        let head = HTTPResponseHead(version: .http1_1, status: .serviceUnavailable,
                                    headers: ["retry-after": "3", "grpc-status": "14"])
        #expect(AttemptOutcome(responseHead: head, isGRPC: false) == .response(status: 503, grpcStatus: nil, retryAfterSeconds: 3))
        #expect(AttemptOutcome(responseHead: head, isGRPC: true) == .response(status: 503, grpcStatus: 14, retryAfterSeconds: 3))
        #expect(AttemptResult(status: 503) == .serverError(status: 503))
        #expect(AttemptResult(status: 404) == .success, "a 4xx is the client's, not the endpoint's")
        var headers: HTTPHeaders = ["content-type": "application/grpc", "grpc-status": "5", "grpc-message": "gone"]
        let status = headers.takeGRPCStatus()
        #expect(status.map { Array($0).map(\.name) } == ["grpc-status", "grpc-message"])
        #expect(Array(headers).map(\.name) == ["content-type"])
        var plain: HTTPHeaders = ["content-type": "text/plain"]
        #expect(plain.takeGRPCStatus() == nil)
    }

    static func cluster(breakers: BreakerConfig?, outliers: OutlierDetectionConfig?, endpoints: Int = 2) -> ClusterRuntime {
        let hosts = (1...endpoints).map { HostPort(host: "127.0.0.1", port: $0) }
        let config = ClusterConfig(name: "c", endpoints: hosts, outlierDetection: outliers, breakers: breakers)
        let runtime = hosts.map { Endpoint(configured: $0, address: try! SocketAddress(ipAddress: "127.0.0.1", port: $0.port), cluster: config) }
        return ClusterRuntime(config: config, endpoints: runtime, stats: ProxyStats().cluster("c"))
    }

    @Test func failuresOpenTheBreakerOnlyForTriesThatOweItAVerdict() {
        let cluster = Self.cluster(breakers: BreakerConfig(consecutiveFailures: 2), outliers: nil)
        let endpoint = cluster.endpoints[0]
        var random = FastRandom(seed: 7)
        var clockReads = 0
        let clock = { () -> UInt64 in clockReads += 1; return 1_000 }
        cluster.recordTry(.localFailure, at: endpoint, owesBreakerVerdict: false, countsForOutliers: true, random: &random, clock: clock)
        cluster.recordTry(.localFailure, at: endpoint, owesBreakerVerdict: false, countsForOutliers: true, random: &random, clock: clock)
        #expect(cluster.stats.breakersOpened.current == 0 && clockReads == 0, "no verdict owed, no outlier detection: no clock read")
        #expect(cluster.noEndpointReason(now: 1_000) == .noHealthyUpstream)
        for _ in 0..<2 {
            cluster.recordTry(.serverError(status: 503), at: endpoint, owesBreakerVerdict: true, countsForOutliers: true, random: &random, clock: clock)
        }
        #expect(cluster.stats.breakersOpened.current == 1)
        #expect(cluster.noEndpointReason(now: 1_000) == .breakerOpen)
    }

    @Test func aFailureStreakEjectsWithinTheMaximumPercentage() {
        let cluster = Self.cluster(breakers: nil, outliers: OutlierDetectionConfig(consecutive5xx: 2, maxEjectionPercent: 50))
        var random = FastRandom(seed: 7)
        for endpoint in cluster.endpoints {
            for _ in 0..<2 {
                cluster.recordTry(.serverError(status: 500), at: endpoint, owesBreakerVerdict: false, countsForOutliers: true, random: &random,
                                  clock: { 5_000 })
            }
        }
        #expect(cluster.stats.outlierEjections.current == 1)
        #expect(cluster.stats.outlierEjectionsPrevented.current == 1, "a second ejection would pass 50 % of two endpoints")
        // A try that no longer counts at its endpoint (it left for a hedge) is not in its streak.
        let fresh = Self.cluster(breakers: nil, outliers: OutlierDetectionConfig(consecutive5xx: 1))
        fresh.recordTry(.serverError(status: 500), at: fresh.endpoints[0], owesBreakerVerdict: false, countsForOutliers: false, random: &random,
                        clock: { 5_000 })
        #expect(fresh.stats.outlierEjections.current == 0)
    }
}

@Suite("A request's one end")
struct RequestSummaryTests {
    @Test func whatEachEndingRecords() {
        let relayed = RequestSummary(.relayed, status: 200, startedAt: 1_000_000, endedAt: 3_500_000)
        #expect(relayed.durationMicroseconds == 2_500 && relayed.timesAResponse)
        #expect(relayed.localReplyToCount == nil && relayed.finalReason == nil)
        let local = RequestSummary(.localReply(.upstreamTimeout), status: 504, startedAt: 0, endedAt: 1_000)
        #expect(local.timesAResponse && local.localReplyToCount == .upstreamTimeout && local.finalReason == "upstream_timeout")
        let broken = RequestSummary(.answeredByCodec(.badRequest), status: 400, startedAt: nil, endedAt: 0)
        #expect(!broken.timesAResponse && broken.localReplyToCount == nil, "the parser's error handler counts its own answers")
        #expect(broken.finalReason == "bad_request" && broken.durationMicroseconds == 0)
        let gone = RequestSummary(.clientGone(reason: "client_closed"), status: 0, startedAt: 5, endedAt: 2)
        #expect(!gone.timesAResponse && gone.finalReason == "client_closed")
        #expect(gone.durationMicroseconds == 0, "a clock that went backwards is no negative duration")
    }
}

@Suite("HTTP/2 stream placement")
struct HTTP2StreamPlacementTests {
    static func place(_ connections: [(Int, Int)], mayOpen: Bool) -> HTTP2StreamPlacement {
        HTTP2StreamPlacement.place(among: connections.count, streams: { connections[$0] }, mayOpen: { mayOpen })
    }

    @Test func streamsArePackedAndAFullSetOpensAnotherConnection() {
        #expect(Self.place([], mayOpen: true) == .open)
        #expect(Self.place([(3, 100), (0, 100)], mayOpen: true) == .existing(0), "the oldest with room")
        #expect(Self.place([(1, 1), (0, 1)], mayOpen: true) == .existing(1))
        #expect(Self.place([(1, 1), (1, 1)], mayOpen: true) == .open)
        #expect(Self.place([(.max, 100)], mayOpen: true) == .open, "after a GOAWAY it takes no more")
    }

    @Test func withoutAConnectionSlotTheLeastBusyConnectionQueuesTheStream() {
        #expect(Self.place([(5, 4), (4, 4), (.max, 4)], mayOpen: false) == .existing(1))
        #expect(Self.place([(.max, 4)], mayOpen: false) == .open, "nothing usable: the new one overflows")
    }
}
