import ArgumentParser
import Dispatch
import Foundation
import Logging
import OutriggerConfig
import OutriggerControl
import OutriggerProxy

struct Control: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the control plane: serve every sidecar its view of the mesh over xDS (ADS).",
        subcommands: [Serve.self, Status.self],
        defaultSubcommand: Serve.self
    )
}

extension Control {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve xDS (the default: `outrigger control --mesh FILE` is `outrigger control serve --mesh FILE`).",
            discussion: """
            Sidecars connect with `outrigger proxy --control HOST:PORT --node ID --service NAME`. Each gets an
            outbound listener routing to every service by host name, an inbound listener to its own app, one
            cluster per service; a connected sidecar is an endpoint of its service until its stream has been gone
            for --registration-grace. SIGHUP or an edit to the mesh file pushes the change; a bad file is refused
            and the running mesh kept. Any xDS v3 client (Envoy, grpcio's xDS resolver) can connect too.
            """
        )

        @Option(help: "The mesh file (YAML): services, their traffic policy and routes.")
        var mesh: String

        @Option(help: "Address for xDS (gRPC), HOST:PORT.")
        var listen: HostPort = HostPort(host: "127.0.0.1", port: 15010)

        @Option(help: "Admin listener HOST:PORT: /status (JSON), /metrics (Prometheus).")
        var admin: HostPort = HostPort(host: "127.0.0.1", port: 15014)

        @Flag(help: "Run without the admin listener.")
        var noAdmin = false

        @Option(help: "How long a disconnected sidecar stays an endpoint of its service, in milliseconds.")
        var registrationGraceMilliseconds: Int64 = 5000

        @Option(help: ArgumentHelp("How often the mesh file is checked for changes, in milliseconds.", visibility: .hidden))
        var watchIntervalMilliseconds: Int64 = 1000

        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let logger = logging.bootstrap(label: "outrigger.control")
            let meshConfig: MeshConfig
            do {
                meshConfig = try MeshConfig.load(contentsOf: mesh)
            } catch {
                FileHandle.standardError.write(Data("\(error)\nrefusing to start: \(mesh) is invalid\n".utf8))
                throw ExitCode(2)
            }
            let plane = ControlPlane(mesh: meshConfig, meshPath: mesh, registrationGrace: .milliseconds(registrationGraceMilliseconds), logger: logger)
            let meshPath = mesh
            let interval = watchIntervalMilliseconds
            if !noAdmin {
                do {
                    let channel = try await plane.bindAdmin(host: admin.host, port: admin.port)
                    announce("outrigger control: admin on \(HostPort(host: admin.host, port: channel.localAddress?.port ?? admin.port))")
                } catch {
                    logger.critical("cannot bind the admin listener: \(error)")
                    throw ExitCode(1)
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await plane.serve(host: listen.host, port: listen.port) { port in
                        announce("outrigger control: xds on \(HostPort(host: listen.host, port: port))")
                    }
                }
                group.addTask {
                    var stamp = FileStamp(path: meshPath)
                    while !Task.isCancelled {
                        try await Task.sleep(for: .milliseconds(interval))
                        let now = FileStamp(path: meshPath)
                        if now != stamp, now != nil {
                            stamp = now
                            plane.reload()
                        }
                    }
                }
                group.addTask {
                    for await number in ProcessSignals.stream([SIGHUP, SIGTERM, SIGINT]) {
                        if number == SIGHUP { plane.reload(); continue }
                        break
                    }
                    throw CancellationError()
                }
                do {
                    try await group.next()
                } catch is CancellationError {}
                group.cancelAll()
            }
        }
    }

    /// `outrigger control status`: every connected sidecar, like `istioctl proxy-status`.
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show every connected sidecar: service, connected since, per type the version sent and ACKed, SYNCED / STALE / NACKED."
        )

        @Option(help: "The control plane's admin listener, HOST:PORT.")
        var admin: HostPort = HostPort(host: "127.0.0.1", port: 15014)

        @Flag(help: "Print the JSON of /status instead of a table.")
        var json = false

        func run() async throws {
            let (status, body) = try await ControlPlane.fetch(host: admin.host, port: admin.port, path: "/status")
            guard status == 200, let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
                FileHandle.standardError.write(Data("outrigger control status: \(admin) answered \(status)\n".utf8))
                throw ExitCode(1)
            }
            print(json ? body : ControlPlane.statusTable(object), terminator: "")
        }
    }
}
