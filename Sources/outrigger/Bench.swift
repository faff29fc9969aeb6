import ArgumentParser
import Foundation
import NIOHTTP1
import OutriggerBench
import OutriggerConfig

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test an HTTP/1.1 or HTTP/2 endpoint (cleartext or TLS): open loop at a fixed rate, or closed loop at the maximum.",
        discussion: """
        Open loop (--rate): request i is due at start + i/rate whether or not the target keeps up, and its
        latency counts from that due time (coordinated-omission corrected, as wrk2 does). Closed loop
        (--max): every connection sends its next request as soon as the last one is answered.
        Latency goes into an HdrHistogram; the report gives sent/completed/failed by outcome, the achieved
        rate and min/p50/p90/p99/p99.9/max, as a table and, with --json, as a file.
          outrigger bench http://127.0.0.1:15001/ --rate 1000 --duration 10s
          outrigger bench http://127.0.0.1:15001/ --max --connections 32 --json result.json
          outrigger bench http://127.0.0.1:15001/ --http2 -c 4 -m 16 --rate 2000
          outrigger bench https://localhost:15443/ --http2 --cacert ca.pem -c 2 -m 32 --max
        """
    )

    @Argument(help: "The URL: http://HOST:PORT/PATH, or https:// for TLS.")
    var url: String

    @Option(help: "Requests per second (open loop).")
    var rate: Double?

    @Flag(help: "Closed loop: as fast as the target answers.")
    var max = false

    @Option(name: .shortAndLong, help: "Keep-alive connections.")
    var connections: Int = 16

    @Flag(help: "HTTP/2 instead of HTTP/1.1: prior knowledge (h2c) over http://, ALPN h2 over https://.")
    var http2 = false

    @Option(help: "https: PEM file of the CA that signed the target's certificate (default: the system's).")
    var cacert: String?

    @Flag(name: [.customShort("k"), .long], help: "https: do not verify the target's certificate.")
    var insecure = false

    @Option(name: [.customShort("m"), .long], help: "Concurrent streams per HTTP/2 connection.")
    var streams: Int = 1

    @Option(help: "Measured duration, e.g. 10s.")
    var duration: String = "10s"

    @Option(help: "Load sent before measuring starts, e.g. 1s (0s for none).")
    var warmup: String = "1s"

    @Option(help: "A request with no response after this long counts as a timeout.")
    var timeout: String = "10s"

    @Option(help: "HTTP method.")
    var method: String = "GET"

    @Option(name: [.customShort("H"), .long], help: "A request header, 'Name: value' (repeatable).")
    var header: [String] = []

    @Option(help: "Request body size in bytes.")
    var bodySize: Int = 0

    @Option(help: "Also write the report as JSON to this file.")
    var json: String?

    func validate() throws {
        if (rate == nil) == !max { throw ValidationError("give either --rate N (open loop) or --max (closed loop)") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        if connections < 1 { throw ValidationError("--connections must be at least 1") }
        if streams < 1 { throw ValidationError("--streams must be at least 1") }
        guard let parsed = BenchOptions(url: url) else {
            throw ValidationError("expected a URL such as http://127.0.0.1:15001/path, found '\(url)'")
        }
        if !parsed.tls, cacert != nil || insecure { throw ValidationError("--cacert and --insecure apply to https:// URLs only") }
        for text in [duration, timeout] where ConfigDuration.parse(text).map({ $0 <= .zero }) ?? true {
            throw ValidationError("expected a positive duration such as 250ms or 10s, found '\(text)'")
        }
        if warmup != "0s", ConfigDuration.parse(warmup) == nil { throw ValidationError("expected a duration such as 1s, found '\(warmup)'") }
        for line in header where !line.contains(":") { throw ValidationError("expected a header 'Name: value', found '\(line)'") }
    }

    func run() async throws {
        var options = BenchOptions(url: url)!
        options.rate = max ? nil : rate
        options.connections = connections
        options.http2 = http2
        options.streams = streams
        options.caCertificatePath = cacert
        options.insecure = insecure
        options.duration = ConfigDuration.parse(duration)!
        options.warmup = warmup == "0s" ? .zero : ConfigDuration.parse(warmup)!
        options.timeout = ConfigDuration.parse(timeout)!
        options.method = HTTPMethod(rawValue: method.uppercased())
        options.bodySize = bodySize
        options.headers = header.map { line in
            let colon = line.firstIndex(of: ":")!
            return (String(line[..<colon]).trimmingCharacters(in: .whitespaces), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        let mode = (options.rate.map { String(format: "open loop at %.0f req/s", $0) } ?? "closed loop") + (http2 ? (options.tls ? ", h2 over TLS" : ", h2c") : (options.tls ? ", HTTP/1.1 over TLS" : ", HTTP/1.1"))
        let concurrency = http2 ? "\(connections) connections × \(streams) streams" : "\(connections) connections"
        FileHandle.standardError.write(Data("outrigger bench: \(url), \(mode), \(concurrency), \(duration) (+\(warmup) warm-up)\n".utf8))
        let results = try await LoadGenerator.run(options) { line in
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
        announce(results.table(title: "outrigger bench: \(url) (\(mode))"))
        if let json { try results.json().write(to: URL(fileURLWithPath: json)) }
        if results.answered == 0 {
            // A run where nothing got an answer (refused, reset, timed out) is a failed run, for scripts as for people.
            FileHandle.standardError.write(Data("outrigger bench: no request got a response\n".utf8))
            throw ExitCode(1)
        }
    }
}
