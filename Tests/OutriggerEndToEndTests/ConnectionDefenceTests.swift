import Foundation
import NIOCore
import OutriggerConfig
import OutriggerCore
import Testing

/// Connections that send nothing, or not enough, are closed; connection limits hold per listener and per process.
@Suite("Connection-level defences, end to end")
struct ConnectionDefenceTests {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let emptySettings: [UInt8] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0]
    /// HPACK: :method GET, :scheme http, :path /, :authority 127.0.0.1 (literal, indexed name).
    static let requestBlock: [UInt8] = [0x82, 0x86, 0x84, 0x01, 0x09] + Array("127.0.0.1".utf8)

    static func headersFrame(stream: UInt8, flags: UInt8) -> [UInt8] {
        [0, 0, UInt8(requestBlock.count), 0x1, flags, 0, 0, 0, stream] + requestBlock
    }

    /// Short timeouts, so the tests wait for the proxy's own timers, not for minutes; long enough for a client
    /// that does its part to do it on a busy machine (a TLS handshake in a debug build takes a while). The
    /// cluster's connect timeout is 10 s: the whole suite on two cores can starve the in-process upstream
    /// past the default 1 s.
    static func config(_ endpoints: [HostPort], tls: TLSConfig? = nil, handshakeTimeout: Duration = .seconds(1), maxConnections: Int? = nil) -> SidecarConfig {
        Harness.config(routes: [RouteConfig(destination: .cluster("c"))], clusters: [ClusterConfig(name: "c", endpoints: endpoints, connectTimeout: .seconds(10))]) { listener in
            listener.tls = tls
            listener.handshakeTimeout = handshakeTimeout
            listener.requestHeadersTimeout = .milliseconds(300)
            listener.idleTimeout = .milliseconds(600)
            listener.maxConnections = maxConnections
        }
    }

    /// The frames in bytes a server sent: (type, flags, stream id, payload).
    static func frames(in bytes: [UInt8]) -> [(type: UInt8, payload: [UInt8])] {
        var scanner = HTTP2FrameHeaderScanner()
        let buffer = ByteBuffer(bytes: bytes)
        var frames: [(UInt8, [UInt8])] = []
        scanner.scan(buffer) { header, payload in
            frames.append((header.type, buffer.getBytes(at: payload, length: min(header.length, buffer.writerIndex - payload)) ?? []))
        }
        return frames
    }

    static func closedCount(_ harness: Harness, _ reason: DownstreamConnectionCloseReason, listener: String = "main") async throws -> String {
        let text = try await fetch(harness.adminURL + "/stats/prometheus").body
        let prefix = "outrigger_downstream_connections_closed_total{listener=\"\(listener)\",reason=\"\(reason.rawValue)\"} "
        return text.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) } ?? "absent"
    }

    @Test func silentAndHalfSentConnectionsAreClosedByTheHandshakeTimeout() async throws {
        try await withHarness(echoes: 1) { Self.config($0) } _: { (harness: Harness) async throws in
            let silent = try await HeldConnection.open(port: harness.port)
            let halfPreface = try await HeldConnection.open(port: harness.port)
            halfPreface.send(Array(Self.preface.prefix(10)))
            #expect(try await silent.closedByPeer(), "a connection that sends nothing is closed")
            #expect(try await halfPreface.closedByPeer(), "part of the HTTP/2 preface is not enough")
            #expect(silent.bytes.isEmpty && halfPreface.bytes.isEmpty)
            #expect(try await Self.closedCount(harness, .handshakeTimeout) == "2")
            #expect(try await fetch(harness.url).status == 200, "the listener still serves")
        }
    }

    @Test func tlsClientsThatNeverFinishTheHandshakeAreClosed() async throws {
        let tls = try await makeTestCertificate()
        try await withHarness(echoes: 1) { Self.config($0, tls: tls, handshakeTimeout: .seconds(2)) } _: { (harness: Harness) async throws in
            let silent = try await HeldConnection.open(port: harness.port)
            let halfHello = try await HeldConnection.open(port: harness.port)
            halfHello.send([0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00])  // a record header and the start of a ClientHello
            #expect(try await silent.closedByPeer())
            #expect(try await halfHello.closedByPeer())
            #expect(try await Self.closedCount(harness, .handshakeTimeout) == "2")
            let served = try await fetch(harness.url.replacingOccurrences(of: "http:", with: "https:"), ["--cacert", tls.certificate])
            #expect(served.status == 200, "a client that completes its handshake is served")
        }
    }

    @Test func anIdleHTTP2ConnectionGetsAGoAwayNamingItsLastStreamAndIsClosed() async throws {
        try await withHarness(echoes: 1) { Self.config($0, handshakeTimeout: .seconds(60)) } _: { (harness: Harness) async throws in
            // After one request: idle once its stream closed.
            let used = try await HeldConnection.open(port: harness.port)
            used.send(Self.preface + Self.emptySettings + Self.headersFrame(stream: 1, flags: 0x5))
            // Only the preface and SETTINGS, then nothing.
            let unused = try await HeldConnection.open(port: harness.port)
            unused.send(Self.preface + Self.emptySettings)
            #expect(try await used.closedByPeer())
            #expect(try await unused.closedByPeer())
            let frames = Self.frames(in: used.bytes)
            #expect(frames.contains { $0.type == 0x1 }, "the request was answered: \(frames.map(\.type))")
            let goAway = frames.last { $0.type == 0x7 }
            #expect(goAway?.payload.prefix(8) == [0, 0, 0, 1, 0, 0, 0, 0], "GOAWAY, last stream 1, NO_ERROR: \(frames.map(\.type))")
            #expect(Self.frames(in: unused.bytes).last?.type == 0x7)
            #expect(try await Self.closedCount(harness, .idleTimeout) == "2")
        }
    }

    @Test func aHeaderBlockLeftUnfinishedClosesTheConnection() async throws {
        try await withHarness(echoes: 1) { Self.config($0, handshakeTimeout: .seconds(60)) } _: { (harness: Harness) async throws in
            // HEADERS without END_HEADERS; its CONTINUATION never comes (no other frame may come between: RFC 9113 §6.10).
            let connection = try await HeldConnection.open(port: harness.port)
            connection.send(Self.preface + Self.emptySettings + Self.headersFrame(stream: 1, flags: 0x1))
            #expect(try await connection.closedByPeer())
            #expect(try await Self.closedCount(harness, .requestHeadersTimeout) == "1")
            #expect(harness.echoes[0].requestsServed == 0)
        }
    }

    /// A send timeout of a second; the other timeouts long enough not to cut first.
    static func sendTimeoutConfig(_ endpoints: [HostPort]) -> SidecarConfig {
        var config = config(endpoints, handshakeTimeout: .seconds(60))
        config.listeners[0].sendTimeout = .seconds(1)
        config.listeners[0].idleTimeout = .seconds(60)
        return config
    }

    /// A client that stops reading a large response is cut once it has taken nothing for `sendTimeout`; one
    /// that reads is not.
    @Test func aClientThatStopsReadingIsCutAfterTheSendTimeout() async throws {
        try await withHarness(echoes: 1, Self.sendTimeoutConfig) { (harness: Harness) async throws in
            let stalled = try await HeldConnection.open(port: harness.port, reading: false)
            stalled.send(Array("GET /?size=268435456 HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
            #expect(try await stalled.closedByPeer(within: .seconds(60)), "cut")
            #expect(try await Self.closedCount(harness, .sendTimeout) == "1")
            // HTTP/2: a stream whose client gives no flow-control credit back is reset; the connection stays.
            let stream = try await rawHTTP2(port: harness.port, headers: [(":method", "GET"), (":scheme", "http"), (":path", "/?size=16777216"), (":authority", "a")],
                                            stopReading: true)
            #expect(stream["status"] as? Int == 200 && stream["reset"] as? Int == 8, "CANCEL: \(stream)")
            #expect(try await Self.closedCount(harness, .sendTimeout) == "2")
            let reader = try await curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download}", harness.url + "/?size=16777216"])
            #expect(reader.stdout == "200 16777216", "\(reader.stdout) \(reader.stderr)")
            #expect(try await Self.closedCount(harness, .sendTimeout) == "2")
        }
    }

    /// A tunnel's client that stops reading what its upstream sends is cut by the send timeout too: the connection's
    /// HTTP/1.1 handler, which keeps the timer, leaves when the tunnel starts.
    @Test func aTunnelsClientThatStopsReadingIsCutAfterTheSendTimeout() async throws {
        try await withHarness(echoes: 1, Self.sendTimeoutConfig) { (harness: Harness) async throws in
            let stalled = try await HeldConnection.open(port: harness.port, reading: false)
            // The echo sends back what the tunnel carries: 16 MiB, more than the buffers between hold.
            stalled.send(Array("GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".utf8)
                         + [UInt8](repeating: 0x61, count: 16 << 20))
            #expect(try await stalled.closedByPeer(within: .seconds(60)), "cut")
            #expect(try await Self.closedCount(harness, .sendTimeout) == "1")
        }
    }

    @Test func aPartialRequestOnTheAdminPortGets408() async throws {
        try await withHarness(echoes: 1) { Self.config($0) } _: { (harness: Harness) async throws in
            let reply = try await RawTCP.exchange(port: harness.adminPort, "GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ", timeout: .seconds(30))
            #expect(reply.closedByPeer)
            #expect(reply.statusLines.first?.hasPrefix("HTTP/1.1 408") == true, "\(reply.text)")
        }
    }

    @Test func aListenerAtItsConnectionLimitClosesNewConnectionsAndTheAdminStillAnswers() async throws {
        try await withHarness(echoes: 1) { endpoints in
            var config = Self.config(endpoints, handshakeTimeout: .seconds(60), maxConnections: 2)
            config.listeners[0].idleTimeout = .seconds(60)
            return config
        } _: { (harness: Harness) async throws in
            let first = try await HeldConnection.open(port: harness.port)
            let second = try await HeldConnection.open(port: harness.port)
            try await waitUntil { try await fetch(harness.adminURL + "/stats").body.contains("\"connections_active\" : 2") }
            let third = try await HeldConnection.open(port: harness.port)
            #expect(try await third.closedByPeer(), "over the limit: closed at once")
            #expect(try await Self.closedCount(harness, .listenerLimit) == "1")
            await first.close()
            try await waitUntil { try await fetch(harness.adminURL + "/stats").body.contains("\"connections_active\" : 1") }
            #expect(try await fetch(harness.url).status == 200, "a slot freed is used again")
            await second.close()
        }
    }

    @Test func theProcessLimitHoldsAcrossListeners() async throws {
        try await withHarness(echoes: 1) { endpoints in
            var config = Self.config(endpoints, handshakeTimeout: .seconds(60))
            var second = config.listeners[0]
            second.name = "second"
            config.listeners.append(second)
            config.maxConnections = 1
            return config
        } _: { (harness: Harness) async throws in
            let held = try await HeldConnection.open(port: harness.port(of: "main"))
            try await waitUntil { try await fetch(harness.adminURL + "/stats").body.contains("\"connections_active\" : 1") }
            let refused = try await HeldConnection.open(port: harness.port(of: "second"))
            #expect(try await refused.closedByPeer())
            #expect(try await Self.closedCount(harness, .processLimit, listener: "second") == "1")
            await held.close()
        }
    }
}

/// The real process at its file-descriptor limit.
@Suite("Connection limits at the file-descriptor limit, end to end (real process)")
struct DescriptorLimitTests {
    static let descriptorLimit = 96

    /// `outrigger proxy` with at most `descriptorLimit` file descriptors, from a config file that may set `maxConnections`.
    static func startProxy(echoPort: Int, maxConnections: Int?) async throws -> (ChildProcess, port: Int, admin: Int, file: ConfigFile) {
        let file = try ConfigFile()
        // Connections held open without a byte must outlast the test however slowly it opens them.
        var yaml = ConfigFile.yaml(cluster: "a", clusters: ["a": echoPort])
            .replacingOccurrences(of: "    address: 127.0.0.1:0\n", with: "    address: 127.0.0.1:0\n    handshakeTimeout: 5m\n")
        if let maxConnections { yaml = "maxConnections: \(maxConnections)\n" + yaml }
        try file.write(yaml)
        // The shell's exec keeps the process id (prlimit would fork): the CPU read below is the proxy's.
        let proxy = try ChildProcess("/bin/sh", ["-c", "ulimit -n \(descriptorLimit) && exec \"$0\" proxy --config \"$1\"", try outriggerExecutable(), file.path])
        let text = try await proxy.waitForOutput(containing: "outrigger: admin on")
        return (proxy, try ProcessTests.port(in: text, after: "listener main on 127.0.0.1:"), try ProcessTests.port(in: text, after: "admin on 127.0.0.1:"), file)
    }

    /// CPU seconds the process used so far (user + system), from /proc.
    static func cpuSeconds(_ pid: Int32) -> Double {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        // Fields after the command name (which ends at the last ')'): utime and stime are the 12th and 13th.
        let fields = stat[(stat.lastIndex(of: ")").map { stat.index($0, offsetBy: 2) } ?? stat.startIndex)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    @Test func byDefaultHalfTheDescriptorsServeClientsAndTheAdminKeepsAnswering() async throws {
        let (echo, echoPort) = try await ProcessTests.startEcho(name: "fd")
        let (proxy, port, admin, _) = try await Self.startProxy(echoPort: echoPort, maxConnections: nil)
        defer { proxy.kill(); echo.kill() }
        #expect(proxy.text.contains("downstream connections limited to \(Self.descriptorLimit / 2)"), "\(proxy.text)")
        var held: [HeldConnection] = []
        for _ in 0..<(Self.descriptorLimit / 2 + 10) { held.append(try await HeldConnection.open(port: port)) }
        try await waitUntil { try await fetch("http://127.0.0.1:\(admin)/stats/prometheus").body.contains("reason=\"process_limit\"} 10\n") }
        #expect(try await fetch("http://127.0.0.1:\(admin)/ready").status == 200, "the admin answers at the limit")
        for connection in held { await connection.close() }
        try await waitUntil { (try? await fetch("http://127.0.0.1:\(port)/"))?.status == 200 }
    }

    @Test func atDescriptorExhaustionAcceptingBacksOffInsteadOfSpinning() async throws {
        let (echo, echoPort) = try await ProcessTests.startEcho(name: "emfile")
        // A limit above what the descriptors allow: accept itself fails (EMFILE).
        let (proxy, port, _, _) = try await Self.startProxy(echoPort: echoPort, maxConnections: 10_000)
        defer { proxy.kill(); echo.kill() }
        var held: [HeldConnection] = []
        for _ in 0..<(Self.descriptorLimit + 20) { held.append(try await HeldConnection.open(port: port)) }
        // The backlog holds the connections accept could not take; a spinning accept loop burns a core meanwhile.
        try await Task.sleep(for: .seconds(1))
        let before = Self.cpuSeconds(proxy.pid)
        try await Task.sleep(for: .seconds(2))
        let used = Self.cpuSeconds(proxy.pid) - before
        #expect(used < 0.5, "\(used) CPU seconds in 2 s at EMFILE")
        for connection in held { await connection.close() }
        try await waitUntil { (try? await fetch("http://127.0.0.1:\(port)/"))?.status == 200 }
    }
}

/// Requests whose Host is missing, doubled or malformed are refused before routing, and nothing goes upstream.
@Suite("Host validation, end to end")
struct HostValidationEndToEndTests {
    @Test(arguments: [
        ("GET / HTTP/1.1\r\n\r\n", "no Host"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Host lines"),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "a space in Host"),
    ])
    func badHostsAreRefusedWith400(request: String, what: String) async throws {
        try await withHarness(echoes: 1) { (harness: Harness) async throws in
            let reply = try await RawTCP.exchange(port: harness.port, request)
            #expect(reply.statusLines.first?.hasPrefix("HTTP/1.1 400") == true, "\(what): \(reply.text)")
            #expect(reply.text.lowercased().contains("x-outrigger-reason: invalid_host"), "\(what)")
            #expect(reply.closedByPeer, "\(what): the connection closes")
            #expect(harness.echoes[0].requestsServed == 0, "\(what): nothing reached the upstream")
        }
    }

    @Test func http10WithoutHostIsServed() async throws {
        try await withHarness(echoes: 1) { (harness: Harness) async throws in
            let reply = try await RawTCP.exchange(port: harness.port, "GET / HTTP/1.0\r\n\r\n")
            #expect(reply.statusLines.first?.hasPrefix("HTTP/1.0 200") == true, "\(reply.text)")
        }
    }

    @Test func http2HostMustAgreeWithAuthority() async throws {
        try await withHarness(echoes: 1) { (harness: Harness) async throws in
            let base = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a.example")]
            let disagreeing = try await rawHTTP2(port: harness.port, headers: base + [("host", "b.example")])
            #expect(disagreeing["status"] as? Int == 400, "\(disagreeing)")
            #expect((disagreeing["headers"] as? [String: String])?["x-outrigger-reason"] == "invalid_host")
            #expect(harness.echoes[0].requestsServed == 0)
            let agreeing = try await rawHTTP2(port: harness.port, headers: base + [("host", "a.example")])
            #expect(agreeing["status"] as? Int == 200, "\(agreeing)")
        }
    }

    @Test func http2FieldValuesHTTP1CannotCarryAreRefused() async throws {
        try await withHarness(echoes: 1) { (harness: Harness) async throws in
            // HTTP/2 forbids only NUL, CR and LF in a value; the HTTP/1.1 upstream may take no control character.
            let base = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
            for value in ["a\u{01}b", "del\u{7F}", "\u{1B}[31m"] {
                let reply = try await rawHTTP2(port: harness.port, headers: base + [("x-note", value)])
                #expect(reply["status"] as? Int == 400, "\(reply)")
                #expect((reply["headers"] as? [String: String])?["x-outrigger-reason"] == "bad_request")
            }
            #expect(harness.echoes[0].requestsServed == 0)
            let tab = try await rawHTTP2(port: harness.port, headers: base + [("x-note", "a\tb")])
            #expect(tab["status"] as? Int == 200, "a tab is a field value's own character: \(tab)")
        }
    }
}

/// Runs `Scripts/h2_rapid_reset.py`: `connections` connections in turn from `source`, each sending `streams`
/// HEADERS, each followed at once by its RST_STREAM.
func rapidReset(port: Int, connections: Int, streams: Int, from source: String) async throws -> (sent: Int, resets: Int, served: Int, refused: Int, goAways: [String: Int]) {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/h2_rapid_reset.py").path
    let result = try await run("python3", [script, String(port), String(connections), String(streams), source])
    guard result.status == 0, let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
          let sent = object["sent"] as? Int, let resets = object["resets"] as? Int, let served = object["served"] as? Int,
          let refused = object["refused"] as? Int else {
        throw CurlFailure(status: result.status, stderr: result.stderr + result.stdout)
    }
    return (sent, resets, served, refused, object["goaways"] as? [String: Int] ?? [:])
}

@Suite("Rapid reset across reconnects, end to end")
struct RapidResetTests {
    static func config(_ endpoints: [HostPort], maxResetsPerAddress: Int) -> SidecarConfig {
        var config = ConnectionDefenceTests.config(endpoints, handshakeTimeout: .seconds(60))
        config.listeners[0].rapidReset = RapidResetConfig(maxResetsPerAddress: maxResetsPerAddress, window: .seconds(60), refuseFor: .seconds(600))
        config.listeners[0].idleTimeout = .seconds(60)
        config.listeners[0].requestHeadersTimeout = .seconds(10)
        return config
    }

    /// CVE-2023-44487 spread over connections, each under the codec's per-connection limit (200): the address
    /// is refused once it passes `maxResetsPerAddress`, its streams cost the upstream (almost) nothing, and
    /// other clients are served throughout.
    @Test func anAddressResettingStreamsAcrossConnectionsIsRefusedAndOthersAreServed() async throws {
        try await withHarness(echoes: 1) { Self.config($0, maxResetsPerAddress: 300) } _: { (harness: Harness) async throws in
            let attack = try await rapidReset(port: harness.port, connections: 8, streams: 100, from: "127.0.0.2")
            #expect(attack.sent == 800 && attack.resets >= 300, "\(attack)")
            #expect(attack.refused >= 1 && attack.served <= 5, "the address is refused after about 300 resets: \(attack)")
            let refusedNow = try await rapidReset(port: harness.port, connections: 1, streams: 1, from: "127.0.0.2")
            #expect(refusedNow.refused == 1, "still refused: \(refusedNow)")
            let closed = try await ConnectionDefenceTests.closedCount(harness, .rapidReset)
            #expect((Int(closed) ?? 0) >= attack.refused + 1, "counted: \(closed)")
            // A stream reset in the read that opened it is never sent upstream; only a HEADERS and its
            // RST_STREAM split between two reads can reach it.
            #expect(harness.echoes[0].requestsServed <= attack.resets / 20, "requests that reached the upstream: \(harness.echoes[0].requestsServed)")
            // Another address is served, over HTTP/2 and HTTP/1.1.
            let other = try await rawHTTP2(port: harness.port, headers: [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")])
            #expect(other["status"] as? Int == 200, "\(other)")
            #expect(try await fetch(harness.url).status == 200)
        }
    }

    /// A busy client whose cancellations add up past the limit is not refused: fewer than three quarters of its
    /// streams were reset.
    @Test func aClientThatResetsAFewOfManyStreamsIsNotRefused() async throws {
        try await withHarness(echoes: 1) { Self.config($0, maxResetsPerAddress: 50) } _: { (harness: Harness) async throws in
            // 30 resets (the address is counted from its first), then 400 requests answered on 4 connections
            // (h2load: -n total, -c connections), then 60 resets: 90, more than the limit, but of 490 streams.
            let first = try await rapidReset(port: harness.port, connections: 1, streams: 30, from: "127.0.0.1")
            #expect(first.refused == 0 && first.goAways.isEmpty, "\(first)")
            let load = try await run("h2load", ["-n", "400", "-c", "4", "-m", "10", harness.url + "/"])
            #expect(load.status == 0 && load.stdout.contains("400 succeeded"), "\(load.stdout)")
            let resets = try await rapidReset(port: harness.port, connections: 2, streams: 30, from: "127.0.0.1")
            #expect(resets.refused == 0 && resets.goAways.isEmpty, "\(resets)")
            #expect(try await fetch(harness.url).status == 200)
        }
    }
}
