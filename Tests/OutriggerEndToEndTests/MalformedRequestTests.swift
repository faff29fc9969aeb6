import Foundation
import OutriggerConfig
import Testing

@Suite("Malformed HTTP/1.1 gets a 4xx and a closed connection, end to end")
struct MalformedRequestTests {
    @Test(arguments: [
        ("bad request line", "GARBAGE\r\n\r\n"),
        ("content-length and transfer-encoding", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("differing content-lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("header without colon", "GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n  folded\r\n\r\n"),
        ("bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
        ("NUL in header value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\u{0}b\r\n\r\n"),
    ])
    func badRequestIs400AndClosedWithNothingUpstream(_ name: String, request: String) async throws {
        let upstream = try await RecordingUpstream.start()
        defer { Task { await upstream.stop() } }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-400-\(UUID()).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        try await withHarness(echoes: 0) { _ in
            var config = Harness.defaultConfig([HostPort(host: "127.0.0.1", port: upstream.port)])
            config.listeners[0].accessLog = AccessLogConfig(path: log, format: .json)
            return config
        } _: { (harness: Harness) async throws in
            let reply = try await RawTCP.exchange(port: harness.port, request)
            #expect(reply.statusLines == ["HTTP/1.1 400 Bad Request"], "\(name)")
            #expect(reply.text.contains("x-outrigger-reason: bad_request"))
            #expect(reply.closedByPeer, "\(name): the connection is closed")
            #expect(upstream.receivedBytes == 0, "\(name): nothing is sent upstream")
            // One access log line, whether the head was broken or the body of a request in flight.
            let lines = try await AccessLogEndToEndTests.lines(in: log, count: 1)
            #expect(lines.count == 1 && lines[0]["status"] as? Int == 400 && lines[0]["reason"] as? String == "bad_request", "\(name): \(lines)")
        }
    }

    @Test(arguments: [70 * 1024, 90 * 1024])
    func oversizedHeadersAre431(size: Int) async throws {
        try await withHarness(echoes: 1) { harness in
            let reply = try await RawTCP.exchange(port: harness.port, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: size))\r\n\r\n")
            #expect(reply.statusLines == ["HTTP/1.1 431 Request Header Fields Too Large"])
            #expect(reply.text.contains("x-outrigger-reason: headers_too_large"))
            #expect(reply.closedByPeer)
        }
    }

    @Test func headerLimitIsConfigurable() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)]) {
                $0.maxRequestHeadersBytes = 1024
            }
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url, ["-H", "X-Small: \(String(repeating: "a", count: 500))"]).status == 200)
            let big = try await fetch(harness.url, ["-H", "X-Big: \(String(repeating: "a", count: 2000))"])
            #expect(big.status == 431)
            #expect(big.headers["x-outrigger-reason"] == "headers_too_large")
        }
    }

    @Test func bodyOverTheLimitIs413() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)]) {
                $0.maxRequestBodyBytes = 1000
            }
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url, ["--data-binary", String(repeating: "a", count: 1000)]).status == 200)
            let declared = try await fetch(harness.url, ["--data-binary", String(repeating: "a", count: 1001)])
            #expect(declared.status == 413)
            #expect(declared.headers["x-outrigger-reason"] == "body_too_large")
            let streamed = try await fetch(harness.url, ["-H", "Transfer-Encoding: chunked", "--data-binary", String(repeating: "a", count: 5000)])
            #expect(streamed.status == 413, "a chunked body is counted as it streams")
            let h2 = try await fetch(harness.url, ["--http2-prior-knowledge", "--data-binary", String(repeating: "a", count: 5000)])
            #expect(h2.status == 413)
        }
    }

    @Test func h2cUpgradeIsNeverTunnelled() async throws {
        try await withHarness(echoes: 1) { harness in
            let response = try await fetch(harness.url + "/", ["--http2"])  // curl asks for Upgrade: h2c on plaintext
            #expect(response.statusLine == "HTTP/1.1 200 OK")
            let echo = try #require(response.echo)
            #expect(echo.headers["upgrade"] == nil)
            #expect(echo.headers["http2-settings"] == nil)
        }
    }

    @Test func connectionsAreNotLeakedByBadClients() async throws {
        try await withHarness(echoes: 1) { harness in
            for _ in 0..<20 { _ = try await RawTCP.exchange(port: harness.port, "GARBAGE\r\n\r\n") }
            try await waitUntil {
                try await fetch(harness.adminURL + "/stats/prometheus").body.contains("outrigger_downstream_connections_active{listener=\"quickstart\"} 0\n")
            }
        }
    }
}
