import Foundation
import Logging
import NIOCore
import OutriggerConfig
import OutriggerEcho
import OutriggerProxy

/// Echo upstreams and a sidecar in front of them, all on port 0 of loopback, in this process.
final class Harness: Sendable {
    let sidecar: Sidecar
    let echoes: [EchoServer]

    /// Silent unless OUTRIGGER_TEST_LOG is set (then debug-level logs go to standard error).
    static let quietLogger = Logger(label: "test") { label in
        guard ProcessInfo.processInfo.environment["OUTRIGGER_TEST_LOG"] != nil else { return SwiftLogNoOpLogHandler() }
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .debug
        return handler
    }

    private init(sidecar: Sidecar, echoes: [EchoServer]) {
        self.sidecar = sidecar
        self.echoes = echoes
    }

    /// Starts `echoes` echo servers (named echo-0, echo-1, …), then a sidecar whose config `makeConfig`
    /// builds from their addresses (by default: one listener routing everything round robin).
    /// `echoDelays[i]` slows every response of echo `i` (missing: no delay).
    static func start(
        echoes count: Int = 2,
        echoDelays: [Duration] = [],
        configPath: String? = nil,
        _ makeConfig: ([HostPort]) throws -> SidecarConfig = Harness.defaultConfig
    ) async throws -> Harness {
        var echoes: [EchoServer] = []
        for index in 0..<count {
            let delay = index < echoDelays.count ? echoDelays[index] : .zero
            echoes.append(try await EchoServer.start(host: "127.0.0.1", port: 0, name: "echo-\(index)", delay: delay))
        }
        let endpoints = echoes.map { HostPort(host: "127.0.0.1", port: $0.localAddress.port!) }
        do {
            let sidecar = try await Sidecar.start(config: try makeConfig(endpoints), configPath: configPath, logger: quietLogger)
            return Harness(sidecar: sidecar, echoes: echoes)
        } catch {
            for echo in echoes { await echo.stop() }
            throw error
        }
    }

    static func defaultConfig(_ endpoints: [HostPort]) -> SidecarConfig {
        SidecarConfig.quickStart(listen: HostPort(host: "127.0.0.1", port: 0), upstreams: endpoints,
                                 admin: HostPort(host: "127.0.0.1", port: 0), concurrency: 1)
    }

    /// A one-listener config with the given routes and clusters; concurrency 1 so rotation is predictable.
    static func config(
        routes: [RouteConfig],
        clusters: [ClusterConfig],
        listener: (inout ListenerConfig) -> Void = { _ in }
    ) -> SidecarConfig {
        var listenerConfig = ListenerConfig(
            name: "main", address: HostPort(host: "127.0.0.1", port: 0),
            virtualHosts: [VirtualHostConfig(name: "all", domains: ["*"], routes: routes)]
        )
        listener(&listenerConfig)
        return SidecarConfig(admin: AdminConfig(address: HostPort(host: "127.0.0.1", port: 0)), concurrency: 1,
                             drainTimeout: .seconds(5), listeners: [listenerConfig], clusters: clusters)
    }

    var port: Int { sidecar.listenerAddresses.values.first?.port ?? 0 }
    /// The port of a listener, or 0 (which no request can reach) when there is no such listener.
    func port(of listener: String) -> Int { sidecar.listenerAddresses[listener]?.port ?? 0 }
    var adminPort: Int { sidecar.adminAddress!.port! }
    var url: String { "http://127.0.0.1:\(port)" }
    var adminURL: String { "http://127.0.0.1:\(adminPort)" }

    func stop() async {
        await sidecar.shutdown()
        for echo in echoes { await echo.stop() }
    }
}

/// Runs `body` with a harness and always stops it, even when an expectation throws.
func withHarness<T>(
    echoes: Int = 2,
    echoDelays: [Duration] = [],
    configPath: String? = nil,
    _ makeConfig: ([HostPort]) throws -> SidecarConfig = Harness.defaultConfig,
    _ body: (Harness) async throws -> T
) async throws -> T {
    let harness = try await Harness.start(echoes: echoes, echoDelays: echoDelays, configPath: configPath, makeConfig)
    do {
        let result = try await body(harness)
        await harness.stop()
        return result
    } catch {
        await harness.stop()
        throw error
    }
}

/// A test fixture that could not be set up.
struct SetupError: Error, CustomStringConvertible {
    let description: String
}

/// A loopback port that refuses connections: a socket is bound to it but never listens, so the kernel
/// answers every SYN with a reset. The socket stays bound until `close()`, so no other test's port-0
/// bind (which skips bound ports; this socket has no SO_REUSEADDR to share) can be given the port meanwhile.
final class RefusingPort: @unchecked Sendable {
    // `@unchecked`: the descriptor is written once in `init` and closed once in `close`.
    let port: Int
    private var descriptor: Int32

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.descriptor = descriptor
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        guard bound == 0 else { throw SetupError(description: "bind for a refusing port failed: errno \(errno)") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// From now on the port accepts connections (the kernel completes handshakes into the accept queue)
    /// without anybody reading them: enough for a TCP health check to pass, with no moment the port is free.
    func startListening() {
        listen(descriptor, 16)
    }

    func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }
}

/// A loopback port whose accept queue is full, so a new connection attempt hangs: the kernel drops the
/// SYN while the queue is full. Connect timeouts are tested against it without leaving loopback.
final class UnansweredPort: @unchecked Sendable {
    // `@unchecked`: the descriptors are written once in `init` and closed once in `close`.
    let port: Int
    private var descriptors: [Int32] = []

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        listen(listener, 0)
        descriptors.append(listener)
        port = Int(UInt16(bigEndian: address.sin_port))
        // Fill the accept queue with connections nobody accepts.
        for _ in 0..<4 {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) } }
            descriptors.append(client)
        }
        usleep(100_000)  // let the handshakes land in the queue (set-up, not a wait for the code under test)
    }

    func close() {
        for descriptor in descriptors { Glibc.close(descriptor) }
        descriptors = []
    }
}
