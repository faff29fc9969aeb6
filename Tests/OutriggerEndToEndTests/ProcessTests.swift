import Foundation
import OutriggerConfig
import Testing

/// The real `outrigger` process: its command line, signals, exit codes and memory.
@Suite("The outrigger process, end to end")
struct ProcessTests {
    /// Starts `outrigger echo` on port 0 and returns it with its port.
    static func startEcho(name: String, extra: [String] = []) async throws -> (ChildProcess, Int) {
        let echo = try ChildProcess(try outriggerExecutable(), ["echo", "--listen", "127.0.0.1:0", "--name", name] + extra)
        let text = try await echo.waitForOutput(containing: "listening on 127.0.0.1:")
        return (echo, try port(in: text, after: "listening on 127.0.0.1:"))
    }

    /// Starts `outrigger proxy ARGS` and returns it with its first listener's port and its admin port.
    static func startProxy(_ arguments: [String], listener: String = "quickstart") async throws -> (ChildProcess, port: Int, admin: Int) {
        let proxy = try ChildProcess(try outriggerExecutable(), ["proxy"] + arguments)
        let text = try await proxy.waitForOutput(containing: "outrigger: admin on")
        return (proxy, try port(in: text, after: "listener \(listener) on 127.0.0.1:"), try port(in: text, after: "admin on 127.0.0.1:"))
    }

    static func port(in text: String, after marker: String) throws -> Int {
        let range = try #require(text.range(of: marker))
        return try #require(Int(text[range.upperBound...].prefix(while: \.isNumber)))
    }

    @Test func validateReportsEveryErrorWithPosition() async throws {
        let file = try ConfigFile()
        try file.write("""
        listeners:
          - name: in
            address: 127.0.0.1:15006
            routes:
              - cluster: missing
                timout: 5s
        clusters:
          - {name: local, endpoints: [127.0.0.1:8080], protocol: http3}
        """)
        let bad = try await run(try outriggerExecutable(), ["validate", file.path])
        #expect(bad.status == 1)
        #expect(bad.stdout.contains("\(file.path):5:18: listeners[0].routes[0].cluster: unknown cluster 'missing'"))
        #expect(bad.stdout.contains("\(file.path):6:9: listeners[0].routes[0].timout: unknown key 'timout'; did you mean 'timeout'?"))
        #expect(bad.stdout.contains("\(file.path):8:58: clusters[0].protocol: expected one of http1, http2"))

        let example = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../config/sidecar.yaml").standardized.path
        let good = try await run(try outriggerExecutable(), ["validate", example])
        #expect(good.status == 0, "\(good.stdout)")
        #expect(good.stdout == "\(example): ok\n")
    }

    @Test func proxyRefusesToStartOnABadConfig() async throws {
        let file = try ConfigFile()
        try file.write("listeners: []\nclusters: []\n")
        let result = try await run(try outriggerExecutable(), ["proxy", "--config", file.path], environment: ["SWIFT_BACKTRACE": "enable=no"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(file.path):1:12: listeners: expected at least one listener"))
        #expect(result.stderr.contains("refusing to start"))
    }

    @Test func quickStartServesHTTP1AndHTTP2RoundRobin() async throws {
        let (echoA, portA) = try await Self.startEcho(name: "a")
        let (echoB, portB) = try await Self.startEcho(name: "b")
        let (proxy, port, _) = try await Self.startProxy([
            "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(portA),127.0.0.1:\(portB)", "--admin", "127.0.0.1:0", "--concurrency", "1",
        ])
        defer { proxy.kill(); echoA.kill(); echoB.kill() }
        let first = try #require(try await fetch("http://127.0.0.1:\(port)/").echo)
        let second = try #require(try await fetch("http://127.0.0.1:\(port)/", ["--http2-prior-knowledge"]).echo)
        #expect(Set([first.server, second.server]) == ["a", "b"])
    }

    @Test func quickStartTakesALoadBalancerAndEchoTakesADelay() async throws {
        let (slow, slowPort) = try await Self.startEcho(name: "slow", extra: ["--delay", "300"])
        let (proxy, port, admin) = try await Self.startProxy([
            "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(slowPort)", "--admin", "127.0.0.1:0", "--lb", "peak_ewma",
        ])
        defer { proxy.kill(); slow.kill() }
        let dump = try await fetch("http://127.0.0.1:\(admin)/config_dump").body
        #expect(dump.contains("\"policy\" : \"peak_ewma\"") || dump.contains("\"policy\":\"peak_ewma\""), "\(dump)")
        let response = try await fetch("http://127.0.0.1:\(port)/", ["-w", "\n%{time_total}"])
        #expect(response.status == 200)
        let seconds = Double(response.body.split(separator: "\n").last ?? "") ?? 0
        #expect(seconds >= 0.3, "the echo's --delay holds every response: \(seconds) s")

        let bad = try await run(try outriggerExecutable(), ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--lb", "fastest"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("fastest"))
        let keyless = try await run(try outriggerExecutable(), ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--lb", "maglev"])
        #expect(keyless.status != 0)
        #expect(keyless.stderr.contains("--lb maglev needs --hash-on header:NAME, cookie:NAME or client-address"))
    }

    @Test func quickStartHealthChecksItsUpstreams() async throws {
        let (echo, echoPort) = try await Self.startEcho(name: "up")
        let refusing = try RefusingPort()
        defer { refusing.close() }
        let (proxy, port, admin) = try await Self.startProxy([
            "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(echoPort),127.0.0.1:\(refusing.port)", "--admin", "127.0.0.1:0",
            "--health-check", "http:/healthz",
        ])
        defer { proxy.kill(); echo.kill() }
        // The first check decides at once: the refusing endpoint is out, the echo in.
        try await waitUntil {
            let clusters = try await fetch("http://127.0.0.1:\(admin)/clusters").body
            return clusters.components(separatedBy: "\"health\" : \"unhealthy\"").count == 2
                && clusters.components(separatedBy: "\"health\" : \"healthy\"").count == 2
        }
        for _ in 0..<6 { #expect(try await fetch("http://127.0.0.1:\(port)/").status == 200, "no request goes to the refusing endpoint") }

        let bad = try await run(try outriggerExecutable(), ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--health-check", "http:healthz"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--health-check: expected http:/PATH, tcp or grpc[:SERVICE], found 'http:healthz'"))
    }

    @Test func aTakenPortIsNamedWithItsListenerAndEchoStopsCleanly() async throws {
        // The echo holds a port; the proxy's admin asks for the same one.
        let (echo, echoPort) = try await Self.startEcho(name: "taken")
        let proxy = try ChildProcess(try outriggerExecutable(), ["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(echoPort)",
                                                                  "--admin", "127.0.0.1:\(echoPort)"])
        #expect(await proxy.waitForExit() == 1)
        #expect(proxy.text.contains("cannot bind the admin to 127.0.0.1:\(echoPort): Address already in use (errno 98)"), "\(proxy.text)")
        echo.signal(SIGTERM)
        #expect(await echo.waitForExit() == 0, "outrigger echo exits 0 on SIGTERM")
        let version = try await run(try outriggerExecutable(), ["--version"])
        #expect(version.status == 0 && version.stdout.hasPrefix("outrigger "), "\(version)")
    }

    /// A SIGTERM sent the moment a process says it is ready (a supervisor stopping what it just started) stops it
    /// cleanly: the proxy, the control plane and the echo app take their signals before they announce themselves.
    @Test func aSIGTERMTheMomentAProcessIsReadyStopsItCleanly() async throws {
        let mesh = try ConfigFile()
        try mesh.write("services: []\n")
        for (arguments, ready) in [(["proxy", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--admin", "127.0.0.1:0"], "outrigger: admin on"),
                                   (["control", "--mesh", mesh.path, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], "xds on"),
                                   (["echo", "--listen", "127.0.0.1:0"], "listening on")] {
            let process = try ChildProcess(try outriggerExecutable(), arguments)
            defer { process.kill() }
            try await process.waitForOutput(containing: ready)
            process.signal(SIGTERM)
            #expect(await process.waitForExit() == 0, "\(arguments[0]): \(process.text)")
        }
    }

    @Test func sigtermDrainsInFlightRequestsAndExitsZero() async throws {
        // The upstream holds its answer until the test lets it go: the request is in flight for as long as needed (a
        // fixed delay could end before a busy machine's first look at it).
        let (upstream, upstreamPort) = try await startScriptServer("held_answer_server.py")
        let (proxy, port, _) = try await Self.startProxy(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(upstreamPort)", "--admin", "127.0.0.1:0"])
        defer { proxy.kill(); upstream.kill() }
        async let slow = fetch("http://127.0.0.1:\(port)/held")
        try await upstream.waitForOutput(containing: "held 1")
        proxy.signal(SIGTERM)
        try await proxy.waitForOutput(containing: "draining: 1 connections asked")
        #expect(try await fetch("http://127.0.0.1:\(upstreamPort)/release").status == 200)
        let response = try await slow
        #expect(response.status == 200, "the request in flight finishes")
        #expect(await proxy.waitForExit() == 0)
        #expect(proxy.text.components(separatedBy: "quickstart").count == 2, "startup names the listener once: \(proxy.text)")
        #expect(try await curl(["http://127.0.0.1:\(port)/"]).status != 0, "nothing listens after exit")
    }

    @Test func sigtermSendsHTTP2ClientsAGoAwayAndFinishesTheirStreams() async throws {
        // The upstream holds its answer until the test lets it go: the request is in flight for as long as needed.
        let (upstream, upstreamPort) = try await startScriptServer("held_answer_server.py")
        let (proxy, port, _) = try await Self.startProxy(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(upstreamPort)", "--admin", "127.0.0.1:0"])
        defer { proxy.kill(); upstream.kill() }
        // nghttp, not Python's h2: that one takes any GOAWAY for the end of the connection.
        async let slow = run("nghttp", ["-v", "http://127.0.0.1:\(port)/held"])
        try await upstream.waitForOutput(containing: "held 1")
        proxy.signal(SIGTERM)
        // Logged once every connection has been asked (its GOAWAY written): only then does the answer come.
        try await proxy.waitForOutput(containing: "draining: 1 connections asked")
        #expect(try await fetch("http://127.0.0.1:\(upstreamPort)/release").status == 200)
        let reply = try await slow
        #expect(reply.stdout.contains("error_code=NO_ERROR"), "told to open no more streams: \(reply.stdout)")
        let afterGoAway = try #require(reply.stdout.range(of: "recv GOAWAY")).upperBound
        #expect(reply.stdout[afterGoAway...].contains(":status: 200"), "the stream in flight finishes: \(reply.stdout)")
        #expect(reply.status == 0, "\(reply.stderr)")
        #expect(await proxy.waitForExit() == 0)
    }

    @Test func sighupAndFileChangesReloadTheRunningProcess() async throws {
        let (echoA, portA) = try await Self.startEcho(name: "a")
        let (echoB, portB) = try await Self.startEcho(name: "b")
        let file = try ConfigFile()
        try file.write(ConfigFile.yaml(cluster: "a", clusters: ["a": portA, "b": portB]))
        let accessLog = file.path + ".access.log"
        let (proxy, port, _) = try await Self.startProxy(["--config", file.path, "--watch-interval-milliseconds", "50", "--access-log", accessLog],
                                                         listener: "main")
        defer { proxy.kill(); echoA.kill(); echoB.kill() }
        #expect(try await fetch("http://127.0.0.1:\(port)/").echo?.server == "a")

        // A change to the file is picked up without a signal.
        try file.write(ConfigFile.yaml(cluster: "b", clusters: ["a": portA, "b": portB]))
        try await proxy.waitForOutput(containing: "config reloaded")
        #expect(try await fetch("http://127.0.0.1:\(port)/").echo?.server == "b")

        // A bad file is rejected and the running config kept.
        try file.write("listeners: [oops\n")
        try await proxy.waitForOutput(containing: "config rejected")
        #expect(try await fetch("http://127.0.0.1:\(port)/").echo?.server == "b")

        // SIGHUP reloads too.
        try file.write(ConfigFile.yaml(cluster: "a", clusters: ["a": portA, "b": portB]))
        try await proxy.waitForOutput(containing: "config reloaded", count: 2)
        proxy.signal(SIGHUP)
        try await proxy.waitForOutput(containing: "config reloaded", count: 3)
        #expect(try await fetch("http://127.0.0.1:\(port)/").echo?.server == "a")
        // The command line's --access-log outlives the reloads: every request has its line.
        try await waitUntil { ((try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? "").split(separator: "\n").count == 4 }
    }

    /// Per-request state must not outlive its request: a leak of even a few hundred bytes per HTTP/2
    /// stream shows as tens of MiB over these requests.
    @Test func manyRequestsDoNotGrowMemory() async throws {
        let (echo, echoPort) = try await Self.startEcho(name: "many")
        let (proxy, port, _) = try await Self.startProxy(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(echoPort)", "--admin", "127.0.0.1:0", "--concurrency", "1"])
        defer { proxy.kill(); echo.kill() }
        let url = "http://127.0.0.1:\(port)/?size=64"
        _ = try await run("h2load", ["-n", "3000", "-c", "4", "-m", "8", url])
        _ = try await run("h2load", ["--h1", "-n", "3000", "-c", "4", url])
        let before = proxy.memoryKiB().resident
        let h2 = try await run("h2load", ["-n", "15000", "-c", "4", "-m", "8", url])
        #expect(h2.stdout.contains("15000 succeeded"), "\(h2.stdout)")
        let h1 = try await run("h2load", ["--h1", "-n", "10000", "-c", "4", url])
        #expect(h1.stdout.contains("10000 succeeded"), "\(h1.stdout)")
        // A leaked HTTP/2 stream handler costs ~870 bytes: 15,000 of them would be ~12 MiB.
        let growthMiB = (proxy.memoryKiB().resident - before) / 1024
        #expect(growthMiB < 6, "resident memory grew by \(growthMiB) MiB over 25,000 requests")
    }

    /// 1 GiB each way through the sidecar: bodies stream with backpressure, never buffered whole.
    @Test func gigabyteUploadAndDownloadStreamInBoundedMemory() async throws {
        let (echo, echoPort) = try await Self.startEcho(name: "bulk")
        let (proxy, port, _) = try await Self.startProxy(["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:\(echoPort)", "--admin", "127.0.0.1:0", "--concurrency", "1"])
        defer { proxy.kill(); echo.kill() }
        _ = try await fetch("http://127.0.0.1:\(port)/warm-up")
        let before = proxy.memoryKiB().resident
        let gigabyte = 1 << 30

        let download = try await curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download}", "http://127.0.0.1:\(port)/?size=\(gigabyte)"])
        #expect(download.stdout == "200 \(gigabyte)")

        let upload = try await run("bash", ["-c", "head -c \(gigabyte) /dev/zero | curl -sS -T - -H 'Content-Type: application/octet-stream' http://127.0.0.1:\(port)/upload"])
        #expect(upload.stdout.contains("\"bodyBytes\":\(gigabyte)"), "\(upload.stdout) \(upload.stderr)")

        let growthMiB = (proxy.memoryKiB().peak - before) / 1024
        #expect(growthMiB < 64, "peak resident memory grew by \(growthMiB) MiB")
    }
}
