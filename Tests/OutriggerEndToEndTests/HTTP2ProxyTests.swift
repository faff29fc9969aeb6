import Foundation
import OutriggerConfig
import Testing

/// Runs `Scripts/h2_request.py`: one HTTP/2 request with exactly these headers, valid or not.
func rawHTTP2(port: Int, headers: [(String, String)], bodyBytes: Int = 0, afterSettings: Bool = false, stopReading: Bool = false,
              clientSettings: [String: Int] = [:], ping: Bool = false) async throws -> [String: Any] {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/h2_request.py").path
    let json = String(decoding: try JSONSerialization.data(withJSONObject: headers.map { [$0.0, $0.1] }), as: UTF8.self)
    let settings = clientSettings.isEmpty ? [] : ["--settings", String(decoding: try JSONSerialization.data(withJSONObject: clientSettings), as: UTF8.self)]
    let result = try await run("python3", [script, String(port), json, String(bodyBytes)] + (afterSettings ? ["--after-settings"] : [])
                                   + (stopReading ? ["--stop-reading"] : []) + settings + (ping ? ["--ping"] : []))
    guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
        throw CurlFailure(status: result.status, stderr: result.stderr + result.stdout)
    }
    return object
}

/// The default harness with TLS (a fresh self-signed certificate) on its listener.
func withTLSHarness(_ body: (Harness, TLSConfig) async throws -> Void) async throws {
    let tls = try await makeTestCertificate()
    try await withHarness { endpoints in
        var config = Harness.defaultConfig(endpoints)
        config.listeners[0].tls = tls
        return config
    } _: { (harness: Harness) async throws in
        try await body(harness, tls)
    }
}

/// A self-signed certificate for localhost / 127.0.0.1, made with openssl in a temporary directory.
func makeTestCertificate() async throws -> TLSConfig {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-tls-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let certificate = directory.appendingPathComponent("cert.pem").path
    let key = directory.appendingPathComponent("key.pem").path
    let result = try await run("openssl", [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-keyout", key, "-out", certificate, "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ])
    guard result.status == 0 else { throw CurlFailure(status: result.status, stderr: result.stderr) }
    return TLSConfig(certificate: certificate, privateKey: key)
}

@Suite("HTTP/2 and TLS, end to end")
struct HTTP2ProxyTests {
    static func h2Upstream(_ endpoints: [HostPort]) -> SidecarConfig {
        // A 5 s connect timeout: the one connection every stream rides must not time out on a busy machine (a
        // full parallel run under 4x load once had every first byte wait 2.2 s and 80 of 400 answers be 5xx,
        // which two 1 s connect timeouts in a row would explain).
        Harness.config(routes: [RouteConfig(destination: .cluster("h2"))],
                       clusters: [ClusterConfig(name: "h2", endpoints: endpoints, upstreamProtocol: .http2, connectTimeout: .seconds(5))])
    }

    /// A finished stream is closed by the protocol: the sidecar sends no RST_STREAM for it. (It did, and a NIO
    /// server ends a connection whose client caused 200 stream errors: GOAWAY ENHANCE_YOUR_CALM, in-flight
    /// streams resent, a new connection every ~200 requests.) A client that leaves with streams in flight
    /// gets them reset upstream, and the connection keeps serving.
    @Test func anHTTP2UpstreamConnectionCarriesManyStreamsAndSurvivesAClientLeavingMidFlight() async throws {
        try await withHarness(echoes: 1) { endpoints in Self.h2Upstream(endpoints) } _: { (harness: Harness) async throws in
            let stats = harness.sidecar.configStore.stats.cluster("h2")
            let load = try await run("h2load", ["-n", "600", "-c", "2", "-m", "8", harness.url + "/?size=64"])
            #expect(load.stdout.contains("600 succeeded"), "\(load.stdout)")
            #expect(stats.connectionsTotal.current == 1, "one connection carried all 600 (the server never sent GOAWAY)")
            #expect(stats.retriesByReason["refused-stream"]?.current == 0)
            // Cut off mid-flight: its streams are reset upstream; the server's frames already on their way are
            // ignored, not taken for a protocol error.
            _ = try await run("h2load", ["-D", "1", "-c", "4", "-m", "16", harness.url + "/?size=64"])
            #expect(try await fetch(harness.url + "/after").status == 200)
            #expect(stats.connectionsTotal.current == 1)
        }
    }

    @Test func h2cPriorKnowledgeToHTTP1Upstream() async throws {
        try await withHarness { harness in
            let response = try await fetch(harness.url + "/h2?q=1", ["--http2-prior-knowledge", "-H", "X-Request-Id: h2-id"])
            #expect(response.statusLine.hasPrefix("HTTP/2 200"))
            let echo = try #require(response.echo)
            #expect(echo.protocol == "HTTP/1.1")
            #expect(echo.path == "/h2?q=1")
            #expect(echo.headers["host"] == "127.0.0.1:\(harness.port)", ":authority becomes Host")
            #expect(echo.headers["x-request-id"] == "h2-id")
            #expect(response.headers["x-outrigger-upstream-service-time"].flatMap(Int.init) != nil, "the proxy's own field, after the head's")
            // Without a body the head goes alone, its HEADERS frame ending the stream: the field is in it too.
            let bodiless = try await run("curl", ["-s", "--http2-prior-knowledge", "--head", harness.url + "/h2-head"]).stdout
            #expect(bodiless.hasPrefix("HTTP/2 200") && bodiless.contains("\r\nx-outrigger-upstream-service-time: "), "\(bodiless)")
            let post = try #require(try await fetch(harness.url + "/up", ["--http2-prior-knowledge", "--data-binary", String(repeating: "b", count: 70_000)]).echo)
            #expect(post.bodyBytes == 70_000)
        }
    }

    @Test func http1AndH2cToHTTP2Upstream() async throws {
        try await withHarness(Self.h2Upstream) { harness in
            let fromH1 = try #require(try await fetch(harness.url + "/a").echo)
            #expect(fromH1.protocol == "HTTP/2")
            let fromH2 = try #require(try await fetch(harness.url + "/b", ["--http2-prior-knowledge"]).echo)
            #expect(fromH2.protocol == "HTTP/2")
            // A trace started here (no trace header came) sends its try's `traceparent` beside the head's fields on
            // HTTP/1.1; to HTTP/2 it goes as one field of the HEADERS frame.
            for echo in [fromH1, fromH2] {
                let traceparent = TracingTests.fields(echo.headers["traceparent"])
                #expect(traceparent.count == 4 && traceparent[0] == "00" && traceparent[1].count == 32 && traceparent[2].count == 16, "\(traceparent)")
            }
            let upload = try #require(try await fetch(harness.url + "/c", ["-H", "Transfer-Encoding: chunked", "--data-binary", String(repeating: "c", count: 50_000)]).echo)
            #expect(upload.bodyBytes == 50_000)
            let noBody = try #require(try await fetch(harness.url + "/d", ["--http2-prior-knowledge", "-X", "DELETE"]).echo)
            #expect(noBody.method == "DELETE")
            #expect(noBody.bodyBytes == 0)
        }
    }

    @Test func trailersPassThroughHTTP2() async throws {
        try await withHarness(Self.h2Upstream) { harness in
            let result = try await run("nghttp", ["-v", harness.url + "/t?trailers=1"])
            #expect(result.status == 0)
            // The trailer block is a HEADERS frame after the DATA, carrying the echo server's trailer.
            let afterData = try #require(result.stdout.range(of: "recv DATA frame")).upperBound
            #expect(result.stdout[afterData...].contains("x-echo-trailer: done"), "\(result.stdout)")
        }
    }

    @Test func h2loadManyStreamsOverOneUpstreamConnection() async throws {
        try await withHarness(Self.h2Upstream) { harness in
            let result = try await run("h2load", ["-n", "400", "-c", "4", "-m", "20", harness.url + "/load"])
            #expect(result.stdout.contains("400 succeeded, 0 failed, 0 errored"), "\(result.stdout)")
            #expect(result.stdout.contains("status codes: 400 2xx"))
        }
    }

    @Test func tlsWithALPNServesHTTP2AndHTTP1() async throws {
        try await withTLSHarness { harness, tls in
            let https = "https://localhost:\(harness.port)/secure"
            let h2 = try await fetch(https, ["--http2", "--cacert", tls.certificate])
            #expect(h2.statusLine.hasPrefix("HTTP/2 200"))
            #expect(h2.echo?.headers["x-forwarded-proto"] == "https")
            let h1 = try await fetch(https, ["--http1.1", "--cacert", tls.certificate])
            #expect(h1.statusLine == "HTTP/1.1 200 OK")
            let plaintext = try await curl(["-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(harness.port)/"])
            #expect(plaintext.stdout != "200", "a TLS listener does not speak plaintext")
        }
    }

    /// RFC 9113 §8.2: malformed requests are stream errors, and nothing reaches the upstream.
    @Test(arguments: [
        ("uppercase name", [("X-Upper", "1")]),
        ("name beyond ASCII", [("x-\u{E9}", "1")]),
        ("connection header", [("connection", "keep-alive")]),
        ("te other than trailers", [("te", "gzip")]),
        ("newline in value", [("x-bad", "a\nb")]),
        ("nul in value", [("x-bad", "a\u{0}b")]),
        ("transfer-encoding", [("transfer-encoding", "chunked")]),
    ])
    func malformedHTTP2RequestsAreStreamErrors(_ name: String, extra: [(String, String)]) async throws {
        let upstream = try await RecordingUpstream.start()
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            Harness.defaultConfig([HostPort(host: "127.0.0.1", port: upstream.port)])
        } _: { (harness: Harness) async throws in
            let headers = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")] + extra
            let reply = try await rawHTTP2(port: harness.port, headers: headers)
            #expect(reply["reset"] as? Int == 1 || reply["goaway"] as? Int == 1, "\(name): expected PROTOCOL_ERROR, got \(reply)")
            #expect(upstream.receivedBytes == 0, "\(name): nothing is forwarded")
        }
    }

    /// A pseudo-field becomes part of the upstream's HTTP/1.1 request line: a space or control character in it would
    /// let the client write a request line of its own (smuggling), so it is malformed.
    @Test(arguments: [[(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/a HTTP/1.1")],
                      [(":method", "GET /x"), (":scheme", "http"), (":authority", "a"), (":path", "/")]])
    func aRequestLineCannotBeWrittenThroughPseudoFields(_ headers: [(String, String)]) async throws {
        let upstream = try await RecordingUpstream.start()
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            Harness.defaultConfig([HostPort(host: "127.0.0.1", port: upstream.port)])
        } _: { (harness: Harness) async throws in
            let reply = try await rawHTTP2(port: harness.port, headers: headers)
            #expect(reply["reset"] as? Int == 1, "PROTOCOL_ERROR: \(reply)")
            #expect(upstream.receivedBytes == 0, "nothing is forwarded")
        }
    }

    @Test func contentLengthThatDisagreesWithDataIsAStreamError() async throws {
        let upstream = try await RecordingUpstream.start()
        defer { Task { await upstream.stop() } }
        try await withHarness(echoes: 0) { _ in
            Harness.defaultConfig([HostPort(host: "127.0.0.1", port: upstream.port)])
        } _: { (harness: Harness) async throws in
            let headers = [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/"), ("content-length", "10")]
            let reply = try await rawHTTP2(port: harness.port, headers: headers, bodyBytes: 3)
            #expect(reply["reset"] as? Int == 1 || reply["goaway"] as? Int == 1, "got \(reply)")
        }
    }

    /// RFC 9113 §5.4.1: a connection error is answered with GOAWAY, then the connection closes.
    @Test func connectionErrorsGetGoaway() async throws {
        try await withHarness(echoes: 1) { harness in
            // The preface, then a DATA frame on stream 0 (a PROTOCOL_ERROR for the whole connection).
            var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
            bytes += [0, 0, 0, 0x4, 0, 0, 0, 0, 0]  // empty SETTINGS
            bytes += [0, 0, 1, 0x0, 0, 0, 0, 0, 0, 0x61]  // DATA, stream 0
            let reply = try await RawTCP.exchange(port: harness.port, bytes)
            #expect(reply.closedByPeer)
            let frames = HTTP2Frames(reply.bytes)
            let goaway = try #require(frames.first { $0.type == 0x7 }, "frames: \(frames.map(\.type))")
            #expect(goaway.errorCode == 1, "PROTOCOL_ERROR")
        }
    }

    /// A header block HPACK cannot decode leaves the two tables out of step for good: GOAWAY COMPRESSION_ERROR
    /// (RFC 9113 §4.3), whatever the block's fault — here index 0, and a Huffman string ending in a 0 bit.
    @Test(arguments: [[0x80] as [UInt8], [0x00, 0x01, 0x78, 0x81, 0x18]])
    func aBlockHPACKCannotDecodeEndsTheConnection(_ block: [UInt8]) async throws {
        try await withHarness(echoes: 1) { harness in
            var bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
            bytes += [0, 0, 0, 0x4, 0, 0, 0, 0, 0]  // empty SETTINGS
            bytes += [0, 0, UInt8(block.count), 0x1, 0x5, 0, 0, 0, 1] + block  // HEADERS, END_STREAM | END_HEADERS, stream 1
            let reply = try await RawTCP.exchange(port: harness.port, bytes)
            #expect(reply.closedByPeer)
            let frames = HTTP2Frames(reply.bytes)
            let goaway = try #require(frames.first { $0.type == 0x7 }, "frames: \(frames.map(\.type))")
            #expect(goaway.errorCode == 9, "COMPRESSION_ERROR")
        }
    }

    @Test func oversizedHTTP2HeadersAre431() async throws {
        try await withHarness(echoes: 1) { endpoints in
            Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints)]) {
                $0.maxRequestHeadersBytes = 20 * 1024
            }
        } _: { (harness: Harness) async throws in
            let base = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")]
            let small = try await rawHTTP2(port: harness.port, headers: base + [("x-big", String(repeating: "a", count: 10_000))], afterSettings: true)
            #expect(small["status"] as? Int == 200)
            let big = try await rawHTTP2(port: harness.port, headers: base + [("x-big", String(repeating: "a", count: 30_000))], afterSettings: true)
            #expect(big["status"] as? Int == 431, "\(big)")
            #expect((big["headers"] as? [String: String])?["x-outrigger-reason"] == "headers_too_large")
        }
    }

    /// A response without a body is one HEADERS frame with END_STREAM; a body's last DATA frame carries
    /// END_STREAM (no empty DATA frame after it). From an HTTP/2 upstream too, where the request the proxy sends
    /// says it is HEAD, so the upstream's `content-length` without DATA is no protocol error.
    @Test(arguments: [false, true])
    func responsesEndOnTheirLastFrame(http2Upstream: Bool) async throws {
        try await withHarness { endpoints in http2Upstream ? Self.h2Upstream(endpoints) : Harness.defaultConfig(endpoints) } _: { (harness: Harness) async throws in
            let request = [(":scheme", "http"), (":authority", "a"), (":path", "/frames")]
            let head = try await rawHTTP2(port: harness.port, headers: [(":method", "HEAD")] + request)
            #expect(head["status"] as? Int == 200, "\(head)")
            #expect(head["endedWithHeaders"] as? Bool == true, "\(head)")
            #expect(head["dataFrames"] as? Int == 0, "\(head)")
            let get = try await rawHTTP2(port: harness.port, headers: [(":method", "GET")] + request)
            #expect(get["status"] as? Int == 200, "\(get)")
            #expect(get["endedWithHeaders"] as? Bool == false)
            #expect(get["dataFrames"] as? Int == 1, "\(get)")
        }
    }

    /// The proxy gives flow-control credit back as the other side takes the bytes: an upload many times the
    /// stream's and the connection's windows arrives whole, and so does a download — to and from an HTTP/1.1
    /// upstream, and to and from an HTTP/2 one (both of the proxy's HTTP/2 sides).
    @Test(arguments: [false, true])
    func bodiesLargerThanTheFlowControlWindowsCrossWhole(http2Upstream: Bool) async throws {
        try await withHarness { endpoints in http2Upstream ? Self.h2Upstream(endpoints) : Harness.defaultConfig(endpoints) } _: { (harness: Harness) async throws in
            let upload = 3 << 20
            let posted = try await rawHTTP2(port: harness.port, headers: [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/up")],
                                            bodyBytes: upload)
            #expect(posted["status"] as? Int == 200, "\(posted)")
            let echo = try JSONSerialization.jsonObject(with: Data(((posted["text"] as? String) ?? "").utf8)) as? [String: Any]
            #expect(echo?["bodyBytes"] as? Int == upload, "\(posted)")
            let download = 5 << 20
            let fetched = try await rawHTTP2(port: harness.port, headers: [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/down?size=\(download)")])
            #expect(fetched["status"] as? Int == 200, "\(fetched)")
            #expect(fetched["body"] as? Int == download)
        }
    }

    /// The client's own SETTINGS are kept to: a stream window of 1,000 bytes (a 200 KB answer goes out in pieces as
    /// its credit comes back), no dynamic HPACK table when it allows none (nghttp2 holds the encoder to announcing
    /// the smaller table; Python's hpack does not check), and its PING is answered in kind.
    @Test func theClientsOwnSettingsAreKeptTo() async throws {
        try await withHarness { harness in
            let size = 200_000
            let reply = try await rawHTTP2(port: harness.port, headers: [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/down?size=\(size)")],
                                           clientSettings: ["initial_window_size": 1000], ping: true)
            #expect(reply["status"] as? Int == 200, "\(reply)")
            #expect(reply["body"] as? Int == size, "\(reply)")
            #expect(reply["dataFrames"] as? Int ?? 0 >= size / 1000, "no frame past the window: \(reply)")
            #expect(reply["pingAcked"] as? Bool == true, "\(reply)")
            let noTable = try await run("nghttp", ["-v", "--header-table-size=0", "-m", "3", "http://127.0.0.1:\(harness.port)/ok"])
            #expect(noTable.status == 0, "\(noTable.stdout)\(noTable.stderr)")
            #expect(noTable.stdout.components(separatedBy: ":status: 200").count == 4, "three answers: \(noTable.stdout)")
        }
    }

    /// A request waits for the cluster's one connection while its whole body and END_STREAM arrive (held, their
    /// credit held back). Once leased, the body is handed on and its credit is due — but not for the stream, which
    /// the client has half-closed: NIO refuses that WINDOW_UPDATE as a stream error, and the request was cut with
    /// RST_STREAM CANCEL (intermittently, under load, before this was fixed).
    @Test func aBodyHeldPastItsEndStreamIsForwardedWhole() async throws {
        // The upstream holds its GET answers until told: the one connection stays busy for as long as needed.
        let (upstream, upstreamPort) = try await startScriptServer("held_answer_server.py")
        defer { upstream.kill() }
        let endpoint = HostPort(host: "127.0.0.1", port: upstreamPort)
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("held"))],
                           clusters: [ClusterConfig(name: "held", endpoints: [endpoint], limits: ClusterLimits(maxConnections: 1))])
        } _: { (harness: Harness) async throws in
            let stats = harness.sidecar.configStore.stats.cluster("held")
            async let first = fetch(harness.url + "/held")
            try await upstream.waitForOutput(containing: "held 1")
            // Within the stream's 1 MiB window, and large enough that taking it makes a stream update due.
            let upload = 1_040_000
            async let posted = rawHTTP2(port: harness.port, headers: [(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", "/up")],
                                        bodyBytes: upload)
            try await waitUntil { stats.pendingRequests.current == 1 }
            #expect(try await fetch("http://127.0.0.1:\(upstreamPort)/release").status == 200)
            let reply = try await posted
            #expect(reply["status"] as? Int == 200, "\(reply)")
            #expect(reply["text"] as? String == String(upload), "\(reply)")
            #expect(try await first.status == 200)
        }
    }

    /// The upstream side holds a server to RFC 9113 as the downstream side holds a client: a malformed response is
    /// reset (502, `upstream_protocol_error`), never relayed; a body short of its content-length is cut; a push,
    /// though push is off, ends the connection with GOAWAY PROTOCOL_ERROR.
    @Test func anHTTP2UpstreamThatBreaksTheRulesIsNotRelayed() async throws {
        let (upstream, upstreamPort) = try await startScriptServer("h2_misbehaving_server.py")
        defer { upstream.kill() }
        try await withHarness(echoes: 0) { _ in Self.h2Upstream([HostPort(host: "127.0.0.1", port: upstreamPort)]) } _: { (harness: Harness) async throws in
            let valid = try await fetch(harness.url + "/upload", ["--data-binary", String(repeating: "u", count: 100_000)])
            #expect(valid.status == 200 && valid.body == "100000")
            for path in ["/status-101", "/upper-case", "/connection", "/early-end"] {
                let reply = try await fetch(harness.url + path, ["--http2-prior-knowledge"])
                #expect(reply.status == 502 && reply.headers["x-outrigger-reason"] == "upstream_protocol_error", "\(path): \(reply.statusLine) \(reply.headers)")
            }
            // Its head was passed on before the body fell short: the client's connection closes, the response unfinished
            // (curl: 18, closed short of its content-length, or 52, nothing came — the head was not yet flushed).
            let short = try await curl([harness.url + "/short"])
            #expect([18, 52].contains(short.status), "\(short.status) \(short.stderr)")
            let pushed = try await fetch(harness.url + "/push")
            #expect(pushed.status == 502, "\(pushed.statusLine) \(pushed.headers)")
            try await upstream.waitForOutput(containing: "goaway 1")
            #expect(try await fetch(harness.url + "/after").status == 200, "a new connection serves")
        }
    }

    /// A connection error's GOAWAY that cannot leave — the upstream reads nothing, and the socket is full of the
    /// request's body — does not hold the connection open: it closes after a second (it stayed open, and in its pool,
    /// for as long as the upstream held it), and the next request opens a new one.
    @Test func aGoAwayStuckBehindUnreadBytesDoesNotHoldTheConnectionOpen() async throws {
        let (upstream, upstreamPort) = try await startScriptServer("h2_misbehaving_server.py")
        defer { upstream.kill() }
        try await withHarness(echoes: 0) { _ in Self.h2Upstream([HostPort(host: "127.0.0.1", port: upstreamPort)]) } _: { (harness: Harness) async throws in
            let stats = harness.sidecar.configStore.stats.cluster("h2")
            // 64 MiB: more than the sockets between the sidecar and the upstream hold.
            async let upload = run("/bin/sh", ["-c", "head -c 67108864 /dev/zero | curl -sS --max-time 60 -o /dev/null -T - \(harness.url)/deaf"])
            try await upstream.waitForOutput(containing: "deaf")
            try await upstream.waitForOutput(containing: "closed by the client", timeout: .seconds(20))
            try await waitUntil(timeout: .seconds(20)) { stats.connectionsActive.current == 0 }
            _ = try await upload
            #expect(try await fetch(harness.url + "/after").status == 200, "a new connection serves")
            #expect(stats.connectionsTotal.current == 2)
        }
    }

    /// An upstream that sends GOAWAY and then answers a request whole before its body has all gone (RFC 9113 §8.1):
    /// the connection has left its pool by then, and the stream, its request unfinished, must still be reset —
    /// the connection lives on until its channel closes (its streams hold it only weakly), so the RST_STREAM gets
    /// out. The next request opens a new connection.
    @Test func aStreamAnsweredEarlyAfterAGoAwayIsStillReset() async throws {
        let (upstream, upstreamPort) = try await startScriptServer("h2_misbehaving_server.py")
        defer { upstream.kill() }
        try await withHarness(echoes: 0) { _ in Self.h2Upstream([HostPort(host: "127.0.0.1", port: upstreamPort)]) } _: { (harness: Harness) async throws in
            let stats = harness.sidecar.configStore.stats.cluster("h2")
            // 7 bytes of a 1,000-byte body, and no more: the request is still sending when the answer comes. The
            // client reads until it has the answer's body.
            async let upload = run("python3", ["-c", """
                import socket, sys
                client = socket.create_connection(("127.0.0.1", \(harness.port)), timeout=60)
                client.sendall(b"POST /goaway-early HTTP/1.1\\r\\nHost: h2\\r\\nContent-Length: 1000\\r\\n\\r\\nstarted")
                received = b""
                while not received.endswith(b"early"):
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                sys.stdout.write(received.decode())
                """])
            try await upstream.waitForOutput(containing: "early answered")
            try await upstream.waitForOutput(containing: "reset 8")  // RST_STREAM CANCEL
            #expect(try await fetch(harness.url + "/after").status == 200, "a new connection serves")
            #expect(stats.connectionsTotal.current == 2)
            let uploaded = try await upload
            #expect(uploaded.stdout.hasPrefix("HTTP/1.1 200") && uploaded.stdout.hasSuffix("\r\n\r\nearly"),
                    "the early answer was relayed: \(uploaded.stdout) \(uploaded.stderr)")
        }
    }

    /// Requests past the upstream's SETTINGS_MAX_CONCURRENT_STREAMS wait in the codec, in order, for a stream to close
    /// (the cluster's one connection is full, so the pool places them there): none is reset or refused.
    @Test func requestsPastTheUpstreamsStreamLimitWaitForAStreamToClose() async throws {
        let (upstream, upstreamPort) = try await startScriptServer("h2_misbehaving_server.py", ["limit", "2"])
        defer { upstream.kill() }
        try await withHarness(echoes: 0) { _ in
            Harness.config(routes: [RouteConfig(destination: .cluster("h2"))],
                           clusters: [ClusterConfig(name: "h2", endpoints: [HostPort(host: "127.0.0.1", port: upstreamPort)], upstreamProtocol: .http2,
                                                    connectTimeout: .seconds(5), limits: ClusterLimits(maxConnections: 1))])
        } _: { (harness: Harness) async throws in
            let stats = harness.sidecar.configStore.stats.cluster("h2")
            // One request first: the upstream's SETTINGS (2 streams at once) are known before the burst.
            #expect(try await fetch(harness.url + "/first").status == 200)
            let load = try await run("h2load", ["-n", "12", "-c", "1", "-m", "12", harness.url + "/burst"])
            #expect(load.stdout.contains("12 succeeded"), "\(load.stdout)")
            let served = try await upstream.waitForOutput(containing: "answered 13")
            #expect(!served.contains("over the limit") && !served.contains("peak 3"), "\(served)")
            #expect(served.contains("peak 2"), "the streams did run two at a time")
            #expect(stats.connectionsTotal.current == 1)
            #expect(stats.retriesByReason["refused-stream"]?.current == 0)
        }
    }

    @Test func validRawHTTP2RequestSucceeds() async throws {
        try await withHarness { harness in
            let reply = try await rawHTTP2(port: harness.port, headers: [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/ok"), ("te", "trailers")])
            #expect(reply["status"] as? Int == 200)
        }
    }
}

/// Just enough HTTP/2 frame parsing to read what a server sent back.
struct HTTP2Frames: Sequence {
    struct Frame {
        var type: UInt8
        var payload: ArraySlice<UInt8>
        /// For GOAWAY: the error code after the last stream id.
        var errorCode: UInt32? {
            guard type == 0x7, payload.count >= 8 else { return nil }
            return payload.dropFirst(4).prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
        }
    }

    private var frames: [Frame] = []

    init(_ bytes: [UInt8]) {
        var offset = 0
        while offset + 9 <= bytes.count {
            let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            guard offset + 9 + length <= bytes.count else { break }
            frames.append(Frame(type: bytes[offset + 3], payload: bytes[(offset + 9)..<(offset + 9 + length)]))
            offset += 9 + length
        }
    }

    func makeIterator() -> IndexingIterator<[Frame]> { frames.makeIterator() }
}
