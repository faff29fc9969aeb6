import Foundation
import NIOConcurrencyHelpers
import NIOCore
import OutriggerConfig
import Testing

@Suite("HTTP/1.1 proxying, end to end")
struct HTTP1ProxyTests {
    @Test func roundRobinAcrossEndpointsWithProxyHeaders() async throws {
        try await withHarness { harness in
            var servers: [String] = []
            for _ in 0..<4 {
                let response = try await fetch(harness.url + "/hello?x=1", ["-H", "Connection: keep-alive, X-Private", "-H", "X-Private: secret",
                                                                            "-H", "Proxy-Authorization: Basic abc", "-H", "X-Forwarded-For: 10.1.2.3"])
                #expect(response.status == 200)
                #expect(response.statusLine == "HTTP/1.1 200 OK")
                let echo = try #require(response.echo)
                servers.append(echo.server)
                #expect(echo.path == "/hello?x=1")
                #expect(echo.headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1")
                #expect(echo.headers["x-forwarded-proto"] == "http")
                #expect(echo.headers["x-request-id"]?.count == 36)
                #expect(echo.headers["x-private"] == nil, "a header named by Connection is hop-by-hop")
                #expect(echo.headers["proxy-authorization"] == nil)
                #expect(echo.headers["connection"] == nil)
                #expect(response.headers["x-outrigger-upstream-service-time"].flatMap(Int.init) != nil)
            }
            #expect(servers == ["echo-0", "echo-1", "echo-0", "echo-1"])
        }
    }

    @Test func requestIDIsKeptWhenPresent() async throws {
        try await withHarness { harness in
            let echo = try #require(try await fetch(harness.url, ["-H", "X-Request-Id: abc-123"]).echo)
            #expect(echo.headers["x-request-id"] == "abc-123")
        }
    }

    @Test func bodiesWithContentLengthChunkedAndExpectContinue() async throws {
        try await withHarness { harness in
            let fixed = try #require(try await fetch(harness.url + "/upload", ["--data-binary", String(repeating: "a", count: 100_000)]).echo)
            #expect(fixed.method == "POST")
            #expect(fixed.bodyBytes == 100_000)

            let chunked = try #require(try await fetch(harness.url + "/upload", ["-H", "Transfer-Encoding: chunked", "--data-binary", "hello chunks"]).echo)
            #expect(chunked.bodyBytes == 12)
            #expect(chunked.headers["transfer-encoding"] == "chunked")

            let raw = try await curl(["-v", "-H", "Expect: 100-continue", "--data-binary", "twelve bytes", harness.url + "/expect"])
            #expect(raw.stderr.contains("HTTP/1.1 100 Continue"))
            let echo = try #require(HTTPResult(curlOutput: "HTTP/1.1 200 OK\r\n\r\n" + raw.stdout).echo)
            #expect(echo.bodyBytes == 12)
            #expect(echo.headers["expect"] == nil, "the sidecar answers 100-continue itself")
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await withHarness { harness in
            let reply = try await RawTCP.exchange(port: harness.port,
                "GET /1?delay=100 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3?delay=20 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(reply.closedByPeer)
            #expect(reply.statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            let paths = reply.text.components(separatedBy: "\"path\":\"").dropFirst().map { $0.prefix(while: { $0 != "\"" }) }
            #expect(paths == ["\\/1?delay=100", "\\/2", "\\/3?delay=20"])
        }
    }

    /// The proxy drops the client's `connection` field; one the route's header rules put on the upstream request
    /// still decides whether that connection is kept, even with an upstream that would keep it open.
    @Test func aConnectionCloseSetByTheRoutesRulesIsHonoured() async throws {
        let accepted = NIOLockedValueBox(0)
        let upstream = try await loopbackServer(accepted: { _ in accepted.withLockedValue { $0 += 1 } }) { AnswerEveryHead() }
        defer { upstream.close(promise: nil) }
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"),
                                                requestHeaders: HeaderMutations(set: [HeaderValue(name: "connection", value: "close")]))],
                           clusters: [ClusterConfig(name: "c", endpoints: [HostPort(host: "127.0.0.1", port: upstream.localAddress!.port!)])])
        } _: { (harness: Harness) async throws in
            let urls = (0..<3).flatMap { _ in ["-o", "/dev/null", harness.url + "/c"] }
            let result = try await curl(["-w", "%{http_code}\n"] + urls)
            #expect(result.stdout.split(separator: "\n") == ["200", "200", "200"])
            #expect(accepted.withLockedValue { $0 } == 3, "one connection per request, though the upstream keeps each open")
        }
    }

    /// Answers each request head it reads (requests without a body) with a small 200, and never closes.
    private final class AnswerEveryHead: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var received = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            received += bytes.readString(length: bytes.readableBytes) ?? ""
            while let end = received.range(of: "\r\n\r\n") {
                received.removeSubrange(..<end.upperBound)
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")), promise: nil)
            }
        }
    }

    @Test func keepAliveConnectionsAreReusedUpstream() async throws {
        try await withHarness(echoes: 1) { harness in
            let urls = (0..<20).flatMap { _ in ["-o", "/dev/null", harness.url + "/k"] }
            let result = try await curl(["-w", "%{http_code}\n"] + urls)
            #expect(result.stdout.split(separator: "\n") == Array(repeating: "200", count: 20))
            let stats = try await fetch(harness.adminURL + "/stats/prometheus")
            #expect(stats.body.contains("outrigger_upstream_connections_total{cluster=\"upstream\"} 1\n"), "one upstream connection carried all 20 requests")
            #expect(stats.body.contains("outrigger_downstream_connections_total{listener=\"quickstart\"} 1\n"))
        }
    }

    @Test func anEarlyUpstreamAnswerFreesTheConnection() async throws {
        let upstream = try await EarlyResponder.start(response: "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n")
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("strict"))],
                           clusters: [ClusterConfig(name: "strict", endpoints: [HostPort(host: "127.0.0.1", port: upstream.port)],
                                                    timeout: .seconds(5), pool: PoolConfig(maxConnectionsPerEndpoint: 1, maxPendingRequests: 0))])
        } _: { (harness: Harness) async throws in
            let body = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-upload-\(UUID().uuidString)")
            // Larger than the loopback socket buffers can hold while the upstream reads nothing more.
            try Data(repeating: UInt8(ascii: "u"), count: 32 << 20).write(to: body)
            defer { try? FileManager.default.removeItem(at: body) }
            let upload = try await fetch(harness.url + "/upload", ["--data-binary", "@\(body.path)"])
            #expect(upload.status == 413, "the upstream's early answer is relayed")
            // The half-sent connection is closed, not kept leased: the one pool slot is free again.
            try await waitUntil {
                try await fetch(harness.adminURL + "/stats/prometheus").body.contains("outrigger_upstream_connections_active{cluster=\"strict\"} 0\n")
            }
            #expect(try await fetch(harness.url + "/next").status == 413, "a new connection serves the next request")
        }
    }

    @Test func headResponsesToChunkedUpstreamsKeepTheConnectionInStep() async throws {
        try await withHarness(echoes: 1) { harness in
            // The echo server answers `trailers=1` chunked (no content-length), HEAD included.
            let reply = try await RawTCP.exchange(port: harness.port,
                "HEAD /?trailers=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(reply.statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            let firstHeadEnd = try #require(reply.text.range(of: "\r\n\r\n"))
            #expect(reply.text[firstHeadEnd.upperBound...].hasPrefix("HTTP/1.1 200 OK"), "no chunked terminator after a HEAD response")
        }
    }

    @Test(arguments: [3_000, 300_000])
    func chunkedResponsesAreFramedWhole(size: Int) async throws {
        try await withHarness(echoes: 1) { harness in
            // No content-length (`trailers=1`): the body is chunked as it comes from the upstream, small reads
            // framed into one buffer with their size line, large ones written as size line, data, CRLF.
            let reply = try await RawTCP.exchange(port: harness.port, "GET /?size=\(size)&trailers=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            let bytes = reply.bytes
            let headEnd = try #require(reply.text.range(of: "\r\n\r\n"))
            #expect(reply.text[..<headEnd.lowerBound].lowercased().contains("transfer-encoding: chunked"))
            var at = reply.text.utf8.distance(from: reply.text.utf8.startIndex, to: headEnd.upperBound)
            var body = 0
            func line() -> String? {
                guard let end = bytes[at...].firstIndex(of: UInt8(ascii: "\r")), end + 1 < bytes.count, bytes[end + 1] == UInt8(ascii: "\n") else { return nil }
                defer { at = end + 2 }
                return String(decoding: bytes[at..<end], as: UTF8.self)
            }
            while let chunk = line().flatMap({ Int($0, radix: 16) }), chunk > 0 {
                #expect(bytes[(at + chunk)...].starts(with: [13, 10]), "a chunk ends with CRLF")
                body += chunk
                at += chunk + 2
            }
            #expect(body == size)
            #expect(line() == "x-echo-trailer: done")
            #expect(line() == "")
            #expect(at == bytes.count, "nothing after the trailers")
        }
    }

    @Test func http10ClientsGetFramingTheyCanRead() async throws {
        try await withHarness(echoes: 1) { harness in
            // Without content-length the body ends when the connection closes.
            let chunked = try await RawTCP.exchange(port: harness.port, "GET /?trailers=1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n")
            #expect(chunked.closedByPeer)
            #expect(chunked.text.lowercased().contains("connection: close"))
            #expect(chunked.text.hasSuffix("}\n"), "the whole JSON body, unchunked")
            // With content-length, keep-alive is honoured and said explicitly.
            let two = try await RawTCP.exchange(port: harness.port,
                "GET /1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nHost: a\r\n\r\n")
            #expect(two.statusLines == ["HTTP/1.0 200 OK", "HTTP/1.0 200 OK"])
            #expect(two.text.lowercased().contains("connection: keep-alive"))
        }
    }

    @Test func pipelinedRequestsWithBodiesAreForwardedWhole() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"), timeout: .seconds(3))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)])
        } _: { (harness: Harness) async throws in
            let reply = try await RawTCP.exchange(port: harness.port,
                "POST /a?delay=50 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                + "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nConnection: close\r\n\r\nworld!")
            #expect(reply.statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"])
            #expect(reply.text.contains("\"bodyBytes\":5"))
            #expect(reply.text.contains("\"bodyBytes\":6"), "the queued request's body reaches the upstream")
        }
    }

    @Test func aBrokenPipelinedRequestIsAnsweredAfterTheOnesBeforeIt() async throws {
        try await withHarness(echoes: 1) { harness in
            let reply = try await RawTCP.exchange(port: harness.port,
                "GET /first?delay=200 HTTP/1.1\r\nHost: a\r\n\r\n"
                + "POST /second HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken\r\n")
            #expect(reply.statusLines == ["HTTP/1.1 200 OK", "HTTP/1.1 400 Bad Request"])
            #expect(reply.text.contains("\"path\":\"\\/first?delay=200\""))
            #expect(!reply.text.contains("second"), "the broken request is never forwarded")
            #expect(reply.closedByPeer)
        }
    }

    @Test func idleUpstreamConnectionsCloseAfterTheIdleTimeout() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))],
                           clusters: [ClusterConfig(name: "c", endpoints: endpoints, pool: PoolConfig(idleTimeout: .milliseconds(300)))])
        } _: { (harness: Harness) async throws in
            _ = try await curl(["-o", "/dev/null", harness.url + "/1", "-o", "/dev/null", harness.url + "/2"])
            let stats = { try await fetch(harness.adminURL + "/stats/prometheus").body }
            #expect(try await stats().contains("outrigger_upstream_connections_total{cluster=\"c\"} 1\n"))
            try await waitUntil { try await stats().contains("outrigger_upstream_connections_active{cluster=\"c\"} 0\n") }
            #expect(try await fetch(harness.url + "/3").status == 200, "a new connection replaces the closed one")
            #expect(try await stats().contains("outrigger_upstream_connections_total{cluster=\"c\"} 2\n"))
        }
    }

    @Test func headRequestsAndHTTP10() async throws {
        try await withHarness(echoes: 1) { harness in
            let head = try await RawTCP.exchange(port: harness.port, "HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(head.statusLines == ["HTTP/1.1 200 OK"])
            #expect(head.text.hasSuffix("\r\n\r\n"), "no body after the head of a HEAD response")
            let reply = try await RawTCP.exchange(port: harness.port, "GET /old HTTP/1.0\r\nHost: a\r\n\r\n")
            #expect(reply.closedByPeer, "HTTP/1.0 without keep-alive closes after the response")
            #expect(reply.statusLines == ["HTTP/1.0 200 OK"])
        }
    }

    @Test func upstreamStatusesAndDelaysPassThrough() async throws {
        try await withHarness(echoes: 1) { harness in
            let failed = try await fetch(harness.url + "/x?status=503")
            #expect(failed.status == 503)
            #expect(failed.headers["x-outrigger-reason"] == nil, "an upstream's own 503 is not a local reply")
            let slow = try await fetch(harness.url + "/x?delay=200")
            #expect(slow.status == 200)
            #expect(Int(slow.headers["x-outrigger-upstream-service-time"] ?? "") ?? 0 >= 200)
        }
    }

    @Test func routingRewritesAndHeaderMutations() async throws {
        try await withHarness { endpoints in
            Harness.config(
                routes: [
                    RouteConfig(name: "api", match: RouteMatchConfig(path: .prefix("/api/"), methods: ["GET"]), destination: .cluster("second"),
                                prefixRewrite: "/internal/", hostRewrite: "backend.local",
                                requestHeaders: HeaderMutations(add: [HeaderValue(name: "x-added", value: "yes")], remove: ["x-secret"]),
                                responseHeaders: HeaderMutations(set: [HeaderValue(name: "x-served-by", value: "outrigger")])),
                    RouteConfig(name: "tenant", match: RouteMatchConfig(headers: [HeaderMatchConfig(name: "x-tenant", condition: .exact("blue"))]), destination: .cluster("second")),
                    RouteConfig(name: "exact", match: RouteMatchConfig(path: .exact("/only")), destination: .cluster("first")),
                ],
                clusters: [ClusterConfig(name: "first", endpoints: [endpoints[0]]), ClusterConfig(name: "second", endpoints: [endpoints[1]])]
            )
        } _: { (harness: Harness) async throws in
            let api = try await fetch(harness.url + "/api/users?id=7", ["-H", "X-Secret: s"])
            let echo = try #require(api.echo)
            #expect(echo.server == "echo-1")
            #expect(echo.path == "/internal/users?id=7")
            #expect(echo.headers["host"] == "backend.local")
            #expect(echo.headers["x-added"] == "yes")
            #expect(echo.headers["x-secret"] == nil)
            #expect(api.headers["x-served-by"] == "outrigger")

            #expect(try await fetch(harness.url + "/api/users", ["-X", "POST"]).headers["x-outrigger-reason"] == "no_route", "method does not match")
            #expect(try await fetch(harness.url + "/any", ["-H", "X-Tenant: blue"]).echo?.server == "echo-1")
            #expect(try await fetch(harness.url + "/only").echo?.server == "echo-0")
            let none = try await fetch(harness.url + "/only/not")
            #expect(none.status == 404)
            #expect(none.headers["x-outrigger-reason"] == "no_route")
            #expect(none.body.hasPrefix("no_route:"))
        }
    }

    @Test func virtualHostsSelectByHost() async throws {
        try await withHarness { endpoints in
            var config = Harness.config(routes: [], clusters: [ClusterConfig(name: "first", endpoints: [endpoints[0]]), ClusterConfig(name: "second", endpoints: [endpoints[1]])])
            config.listeners[0].virtualHosts = [
                VirtualHostConfig(name: "api", domains: ["api.example.com"], routes: [RouteConfig(destination: .cluster("first"))]),
                VirtualHostConfig(name: "wild", domains: ["*.example.com"], routes: [RouteConfig(destination: .cluster("second"))]),
            ]
            return config
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url, ["-H", "Host: api.example.com"]).echo?.server == "echo-0")
            #expect(try await fetch(harness.url, ["-H", "Host: www.Example.com:8080"]).echo?.server == "echo-1")
            #expect(try await fetch(harness.url, ["-H", "Host: other.org"]).headers["x-outrigger-reason"] == "no_route")
        }
    }

    @Test func hostnameEndpointsAreResolved() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("named"))],
                           clusters: [ClusterConfig(name: "named", endpoints: [HostPort(host: "localhost", port: endpoints[0].port)])])
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/named").echo?.server == "echo-0")
            #expect(try await fetch(harness.adminURL + "/config_dump").body.contains("\"localhost:"))
        }
    }

    @Test func statusLinesAlwaysCarryAReasonPhrase() async throws {
        try await withHarness(echoes: 1) { harness in
            let unknown = try await RawTCP.exchange(port: harness.port, "GET /?status=599 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(unknown.statusLines == ["HTTP/1.1 599 Server Error"])
            // h2load --h1 miscounts responses without a reason phrase: every one must count.
            // (h2load counts 4xx and 5xx as "failed"; "errored" is a response it could not read.)
            let load = try await run("h2load", ["--h1", "-n", "200", "-c", "4", harness.url + "/?status=599"])
            #expect(load.stdout.contains("200 done, 0 succeeded, 200 failed, 0 errored"), "\(load.stdout)")
            #expect(load.stdout.contains("status codes: 0 2xx, 0 3xx, 0 4xx, 200 5xx"), "\(load.stdout)")
            let mixed = try await run("h2load", ["--h1", "-n", "100", "-c", "2", harness.url + "/?status=204"])
            #expect(mixed.stdout.contains("100 done, 100 succeeded, 0 failed, 0 errored"), "\(mixed.stdout)")
        }
    }

    @Test func weightedClustersSplitTraffic() async throws {
        try await withHarness { endpoints in
            Harness.config(
                routes: [RouteConfig(destination: .weightedClusters([WeightedCluster(cluster: "first", weight: 3), WeightedCluster(cluster: "second", weight: 1)]))],
                clusters: [ClusterConfig(name: "first", endpoints: [endpoints[0]]), ClusterConfig(name: "second", endpoints: [endpoints[1]])]
            )
        } _: { (harness: Harness) async throws in
            let urls = Array(repeating: harness.url + "/w", count: 400)
            let result = try await curl(urls.flatMap { ["-H", "X-Probe: 1", $0] })
            let first = result.stdout.components(separatedBy: "\"server\":\"echo-0\"").count - 1
            let second = result.stdout.components(separatedBy: "\"server\":\"echo-1\"").count - 1
            #expect(first + second == 400)
            // 3:1 split; a binomial(400, 0.25) stays in 60...140 with probability above 1 - 1e-9.
            #expect((60...140).contains(second), "second got \(second) of 400")
        }
    }
}

@Suite("HTTP/1.1 Upgrade tunnels, end to end")
struct TunnelTests {
    static func tunnel(port: Int, size: Int, upgrade: String = "websocket") async throws -> [String: Any] {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/tunnel_client.py").path
        let result = try await run("python3", [script, String(port), String(size), upgrade])
        guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
            throw CurlFailure(status: result.status, stderr: result.stderr + result.stdout)
        }
        return object
    }

    @Test func websocketUpgradeIsTunnelledBothWays() async throws {
        try await withHarness(echoes: 1) { harness in
            let reply = try await Self.tunnel(port: harness.port, size: 8 << 20)
            let head = try #require(reply["head"] as? String)
            #expect(head.hasPrefix("HTTP/1.1 101 Switching Protocols"))
            #expect(head.lowercased().contains("upgrade: websocket"))
            #expect(reply["intact"] as? Bool == true, "8 MiB and the bytes sent with the request come back unchanged")
            // Both halves of the tunnel close when the client leaves.
            try await waitUntil {
                let stats = try await fetch(harness.adminURL + "/stats/prometheus").body
                return stats.contains("outrigger_upstream_connections_active{cluster=\"upstream\"} 0\n")
                    && stats.contains("outrigger_downstream_connections_active{listener=\"quickstart\"} 0\n")
            }
            #expect(try await fetch(harness.url + "/after").status == 200, "the proxy carries on with plain requests")
        }
    }

    /// The upstream's first tunnel bytes come in the same write as its `101`: they are read with the response and
    /// must reach the client, not stay behind in the parser (a server that speaks first, like SMTP or a greeting).
    @Test func bytesSentWithThe101ReachTheClient() async throws {
        let upstream = try await EarlyResponder.start(
            response: "HTTP/1.1 101 Switching Protocols\r\nupgrade: greeting\r\nconnection: upgrade\r\n\r\nHELLO-FROM-UPSTREAM")
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("greeter"))],
                           clusters: [ClusterConfig(name: "greeter", endpoints: [HostPort(host: "127.0.0.1", port: upstream.port)])])
        } _: { (harness: Harness) async throws in
            let client = try await RawTCP.Connection(port: harness.port)
            client.send("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: greeting\r\n\r\n")
            try await waitUntil { client.received.contains("HELLO-FROM-UPSTREAM") }
            #expect(client.received.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
            #expect(client.received.hasSuffix("\r\n\r\nHELLO-FROM-UPSTREAM"))
            await client.close()
        }
    }

    @Test func h2cUpgradeIsNotTunnelled() async throws {
        try await withHarness(echoes: 1) { harness in
            let reply = try await Self.tunnel(port: harness.port, size: 10, upgrade: "h2c")
            let head = try #require(reply["head"] as? String)
            #expect(head.hasPrefix("HTTP/1.1 200 OK"), "the upgrade is stripped and the request answered as HTTP/1.1")
            #expect(head.lowercased().contains("connection: close"), "the parser stops at an upgrade request, so the connection closes")
        }
    }
}
