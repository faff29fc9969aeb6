import ArgumentParser
import Foundation
import Logging
import NIOCore
import OutriggerConfig
import OutriggerControl
import OutriggerEcho
import OutriggerProxy

@main
struct Outrigger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outrigger",
        abstract: "A service-mesh sidecar proxy: retries, timeouts, load balancing and stats for HTTP/1.1 and HTTP/2.",
        version: "outrigger 0.1.0",
        subcommands: [Proxy.self, Control.self, Validate.self, Echo.self, Demo.self, Bench.self]
    )
}

/// Options every long-running subcommand shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    func bootstrap(label: String) -> Logger {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Writes a line to standard output unbuffered, so scripts and tests waiting for it see it at once.
func announce(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

extension SocketAddress {
    /// `127.0.0.1:15001` / `[::1]:15001`, the form the config uses.
    var hostPort: String {
        HostPort(host: ipAddress ?? "?", port: port ?? 0).description
    }
}

extension HostPort: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(parsing: argument)
    }
}

extension ClusterConfig.UpstreamProtocol: ExpressibleByArgument {}
extension LoadBalancerConfig.Policy: ExpressibleByArgument {}

struct Proxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the sidecar.",
        discussion: """
        Either from a config file:
          outrigger proxy --config config/sidecar.yaml
        or, for one service with nothing to write, in quick-start mode:
          outrigger proxy --listen 127.0.0.1:15006 --upstream 127.0.0.1:8080,127.0.0.1:8081
        Quick start serves HTTP/1.1 and HTTP/2 (h2c prior knowledge) on --listen and forwards round robin.
        SIGHUP or an edit to the config file reloads it (a bad file is rejected and the running config
        kept); SIGTERM drains in-flight requests, then exits 0.
        """
    )

    @Option(name: .customLong("config"), help: "Sidecar config file (YAML).")
    var configPath: String?

    @Option(help: "Quick start: the address to listen on, HOST:PORT.")
    var listen: HostPort?

    @Option(help: "Quick start: upstream endpoints, HOST:PORT[,HOST:PORT...].")
    var upstream: String?

    @Option(help: "Quick start: the upstream protocol, http1 or http2.")
    var upstreamProtocol: ClusterConfig.UpstreamProtocol = .http1

    @Option(help: "Quick start: the load balancer, round_robin, random, least_request, peak_ewma, ring_hash or maglev.")
    var lb: LoadBalancerConfig.Policy?

    @Option(help: "Quick start, ring_hash and maglev: the hash key, header:NAME, cookie:NAME or client-address.")
    var hashOn: String?

    @Option(help: "Quick start: check every upstream's health, http:/PATH, tcp or grpc[:SERVICE] (every 5 s; 3 failures take it out, 2 passes bring it back).")
    var healthCheck: String?

    @Option(help: "Write an access log line per request to PATH (stdout, stderr or a file) in text, for every listener that has none.")
    var accessLog: String?

    @Option(help: "Admin listener HOST:PORT (default 127.0.0.1:15000; overrides the config file's).")
    var admin: HostPort?

    @Flag(help: "Run without the admin listener.")
    var noAdmin = false

    @Option(help: "Event loops (default: one per core; overrides the config file's).")
    var concurrency: Int?

    @Option(help: "Follow a control plane (xDS over gRPC): HOST:PORT[,HOST:PORT...], tried in turn. Needs --node and --service; --config, if given, is only the start-up config.")
    var control: String?

    @Option(help: "With --control: this sidecar's node id (unique in the mesh).")
    var node: String?

    @Option(help: "With --control: the service this sidecar fronts.")
    var service: String?

    @Option(help: "With --control: where the local service listens; the inbound listener forwards to it.")
    var app: HostPort?

    @Option(help: "With --control and no --config: the outbound listener (the app's calls to other services).")
    var outbound: HostPort = HostPort(host: "127.0.0.1", port: 15001)

    @Option(help: "With --control and no --config: the inbound listener (calls to this service), served when --app is given.")
    var inbound: HostPort = HostPort(host: "127.0.0.1", port: 15006)

    @Option(help: "With --control: this sidecar's zone.")
    var zone: String?

    @Option(help: "With --control: xDS over TLS, verifying the control plane's certificate against this CA bundle (PEM).")
    var controlCa: String?

    @Option(help: "With --control: keep the last accepted config in this directory, and start from it while the control plane is down.")
    var stateDir: String?

    @Option(help: "With --control: on SIGTERM, how long to wait after telling the control plane this sidecar is draining (so callers stop picking it) before closing, in milliseconds.")
    var drainNoticeMilliseconds: Int64 = 1000

    @Option(help: ArgumentHelp("How often the config file is checked for changes, in milliseconds.", visibility: .hidden))
    var watchIntervalMilliseconds: Int64 = 1000

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let control {
            for item in control.split(separator: ",") where HostPort(parsing: String(item)) == nil {
                throw ValidationError("--control: expected HOST:PORT, found '\(item)'")
            }
            if node == nil || service == nil { throw ValidationError("--control needs --node ID and --service NAME") }
            if listen != nil || upstream != nil { throw ValidationError("--control and quick-start flags (--listen, --upstream) do not mix") }
        } else if node != nil || service != nil || app != nil || stateDir != nil || controlCa != nil {
            throw ValidationError("--node, --service, --app, --state-dir and --control-ca go with --control")
        }
        if configPath == nil && control == nil && (listen == nil || upstream == nil) {
            throw ValidationError("give --config FILE, --control HOST:PORT, or --listen HOST:PORT and --upstream HOST:PORT[,...]")
        }
        if configPath != nil && (listen != nil || upstream != nil) {
            throw ValidationError("--config and quick-start flags (--listen, --upstream, --lb) do not mix")
        }
        if lb?.isConsistentHash == true && hashOn.flatMap(QuickStartFlag.hashPolicy) == nil {
            throw ValidationError("--lb \(lb!.rawValue) needs --hash-on header:NAME, cookie:NAME or client-address")
        }
        if hashOn != nil && lb?.isConsistentHash != true {
            throw ValidationError("--hash-on applies to --lb ring_hash and maglev only")
        }
        if configPath != nil && (lb != nil || healthCheck != nil) {
            throw ValidationError("--config and quick-start flags (--listen, --upstream, --lb, --health-check) do not mix")
        }
        if let healthCheck, QuickStartFlag.healthCheck(healthCheck) == nil {
            throw ValidationError("--health-check: expected http:/PATH, tcp or grpc[:SERVICE], found '\(healthCheck)'")
        }
        if let concurrency, concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
        if let upstream {
            for item in upstream.split(separator: ",") where HostPort(parsing: String(item)) == nil {
                throw ValidationError("--upstream: expected HOST:PORT, found '\(item)'")
            }
        }
    }

    func run() async throws {
        let logger = logging.bootstrap(label: "outrigger")
        // Taken from here on: a SIGTERM sent the moment the listeners are announced is acted on, not lost.
        let signals = ProcessSignals.stream([SIGHUP, SIGTERM, SIGINT])
        // Connections are file descriptors: take all the system allows (the default maxConnections is half).
        ProcessLimits.raiseFileDescriptorLimit()
        var config: SidecarConfig
        var endpointSites: [EndpointSite] = []
        if let configPath {
            do {
                let loaded = try SidecarConfig.loadWithEndpointSites(contentsOf: configPath)
                config = loaded.config
                endpointSites = loaded.endpointSites
            } catch {
                FileHandle.standardError.write(Data("\(error)\nrefusing to start: \(configPath) is invalid\n".utf8))
                throw ExitCode(2)
            }
        } else if control != nil {
            // Listeners with no routes (404 no_route) until the first push.
            var listeners = [ListenerConfig(name: MeshView.outboundListener, address: outbound, direction: .outbound, virtualHosts: [])]
            if app != nil { listeners.append(ListenerConfig(name: MeshView.inboundListener, address: inbound, direction: .inbound, virtualHosts: [])) }
            config = SidecarConfig(zone: zone, listeners: listeners, clusters: [])
        } else {
            let upstreams = upstream!.split(separator: ",").compactMap { HostPort(parsing: String($0)) }
            config = SidecarConfig.quickStart(listen: listen!, upstreams: upstreams, admin: AdminConfig.defaultAddress,
                                              concurrency: nil, upstreamProtocol: upstreamProtocol,
                                              loadBalancer: LoadBalancerConfig(policy: lb ?? .roundRobin,
                                                                               hashPolicy: hashOn.flatMap(QuickStartFlag.hashPolicy)),
                                              healthCheck: healthCheck.flatMap(QuickStartFlag.healthCheck))
        }
        // The control plane to follow: the flags', else the file's `controlPlane`.
        var following = config.controlPlane
        if let control, let node, let service {
            following = ControlPlaneConfig(addresses: control.split(separator: ",").compactMap { HostPort(parsing: String($0)) }, node: node,
                                           service: service, app: app, stateDirectory: stateDir, trustedCertificates: controlCa,
                                           drainNotice: .milliseconds(drainNoticeMilliseconds))
        }
        config.controlPlane = following
        // The flags win over the file, at start and at every reload.
        let (accessLog, admin, noAdmin, concurrency) = (self.accessLog, self.admin, self.noAdmin, self.concurrency)
        let overrides: @Sendable (inout SidecarConfig) -> Void = { config in
            if let accessLog {
                for index in config.listeners.indices where config.listeners[index].accessLog == nil {
                    config.listeners[index].accessLog = AccessLogConfig(path: accessLog)
                }
            }
            if let admin { config.admin = AdminConfig(address: admin) }
            if noAdmin { config.admin = nil }
            if let concurrency { config.concurrency = concurrency }
        }
        overrides(&config)
        let sidecar: Sidecar
        do {
            // Under a control plane the file is only the start-up config: pushes, not edits, change it.
            sidecar = try await Sidecar.start(config: config, configPath: following == nil ? configPath : nil, endpointSites: endpointSites,
                                              overrides: overrides, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        for (name, address) in sidecar.listenerAddresses.sorted(by: { $0.key < $1.key }) {
            announce("outrigger: listener \(name) on \(address.hostPort)")
        }
        if let admin = sidecar.adminAddress { announce("outrigger: admin on \(admin.hostPort)") }
        var streaming: Task<Void, Never>?
        var controlClient: ControlPlaneClient?
        if let following {
            let listeners = sidecar.listenerAddresses.compactMapValues { address in
                address.port.map { HostPort(host: address.ipAddress ?? "127.0.0.1", port: $0) }
            }
            let admin = sidecar.adminAddress.flatMap { address in address.port.map { HostPort(host: address.ipAddress ?? "127.0.0.1", port: $0) } }
            let identity = SidecarIdentity(node: following.node, service: following.service, zone: zone ?? config.zone, listeners: listeners,
                                           app: following.app, admin: admin)
            if let directory = following.stateDirectory { try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
            let client = ControlPlaneClient(addresses: following.addresses, identity: identity, sidecar: sidecar, base: config,
                                            stateDirectory: following.stateDirectory, trustedCertificates: following.trustedCertificates,
                                            overrides: overrides, logger: logger)
            await client.restore()
            streaming = Task { await client.run() }
            controlClient = client
        }
        let (notice, announcer) = (following?.drainNotice ?? .zero, controlClient)
        await sidecar.runUntilStopped(signals: signals, watchInterval: .milliseconds(watchIntervalMilliseconds)) {
            guard let announcer else { return }
            announcer.announceDraining()
            try? await Task.sleep(for: notice)
        }
        streaming?.cancel()
        logger.info("drained; exiting")
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check sidecar config files and control-plane mesh files, like nginx -t.",
        discussion: """
        Prints every error as FILE:LINE:COLUMN: KEY.PATH: what was expected. Exit status 0 when all files are valid, 1 otherwise.
        Endpoint names that do not resolve now are warnings (the sidecar starts without them and keeps resolving).
        """
    )

    @Argument(help: "Config files to check.")
    var files: [String]

    func run() throws {
        var failed = false
        for file in files {
            // A mesh file (the control plane's) has top-level `services`; a sidecar file has `listeners`.
            if let text = try? String(contentsOfFile: file, encoding: .utf8), text.split(separator: "\n").contains(where: { $0.hasPrefix("services:") }) {
                do {
                    _ = try MeshConfig.decode(yaml: text, file: file)
                    print("\(file): ok (mesh)")
                } catch {
                    failed = true
                    print(error.description)
                }
                continue
            }
            do {
                let loaded = try SidecarConfig.loadWithEndpointSites(contentsOf: file)
                let config = loaded.config
                for site in loaded.endpointSites where !site.endpoint.isIPLiteral {
                    do {
                        _ = try EndpointResolver.resolve(site.endpoint)
                    } catch {
                        let refresh = config.clusters.first { $0.name == site.cluster }?.dnsRefreshInterval ?? ClusterConfig.defaultDNSRefreshInterval
                        print(site.warning(EndpointSite.doesNotResolve(site.endpoint, cluster: site.cluster, error: "\(error)", retryEvery: refresh)))
                    }
                }
                print("\(file): ok")
            } catch {
                failed = true
                print(error.description)
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct Echo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the built-in demo/test upstream (HTTP/1.1 and h2c).",
        discussion: """
        Answers with what it received (method, path, headers, body size) as JSON. Per request, by query
        parameter or x-echo-* header: status=N, delay=MS, size=N (an N-byte body), reset=1 (close instead
        of answering), close=1 (close after answering), trailers=1.
        """
    )

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: HostPort = HostPort(host: "127.0.0.1", port: 8080)

    @Option(help: "Name reported in x-echo-server and the JSON body.")
    var name: String?

    @Option(help: "Event loops.")
    var threads: Int = 1

    @Option(help: "Milliseconds added to every response's delay: a uniformly slow instance.")
    var delay: Int = 0

    func validate() throws {
        if delay < 0 { throw ValidationError("--delay must be 0 or more milliseconds") }
    }

    func run() async throws {
        // SIGTERM and SIGINT stop it cleanly (exit 0), as process supervisors expect; taken before it says it listens.
        let signals = ProcessSignals.stream([SIGTERM, SIGINT])
        let server = try await EchoServer.start(host: listen.host, port: listen.port, name: name ?? listen.description,
                                                threads: threads, delay: .milliseconds(delay))
        announce("outrigger echo: listening on \(server.localAddress.hostPort)")
        // The signal only closes the listener: the event loops are shut down after the wait, never under it (a
        // wait that began after they were gone never returned).
        let stopping = Task {
            for await _ in signals {
                await server.closeListener()
                break
            }
        }
        await server.waitUntilClosed()
        stopping.cancel()
        await server.stop()
    }
}
