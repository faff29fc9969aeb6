import ArgumentParser
import Foundation
import OutriggerConfig
import OutriggerEcho
import OutriggerProxy

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a sidecar in front of two built-in echo upstreams (what `make run` runs).",
        discussion: "Nothing to configure: the config is embedded. Prints the commands to try."
    )

    @Option(help: "Where the sidecar listens.")
    var listen: HostPort = HostPort(host: "127.0.0.1", port: 15001)

    @Option(help: "Admin listener.")
    var admin: HostPort = AdminConfig.defaultAddress

    @Option(help: "First port of the two echo upstreams.")
    var echoPort: Int = 18081

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let logger = logging.bootstrap(label: "outrigger")
        let echoes = [
            try await EchoServer.start(host: "127.0.0.1", port: echoPort, name: "echo-a"),
            try await EchoServer.start(host: "127.0.0.1", port: echoPort + 1, name: "echo-b"),
        ]
        let endpoints = [HostPort(host: "127.0.0.1", port: echoPort), HostPort(host: "127.0.0.1", port: echoPort + 1)]
        let config = SidecarConfig(
            admin: AdminConfig(address: admin),
            listeners: [
                ListenerConfig(
                    name: "demo", address: listen, direction: .outbound, accessLog: AccessLogConfig(path: AccessLogConfig.standardOutput),
                    virtualHosts: [
                        VirtualHostConfig(name: "demo", domains: ["*"], routes: [
                            RouteConfig(name: "only-a", match: RouteMatchConfig(path: .prefix("/a/")), destination: .cluster("echo-a-only"), prefixRewrite: "/"),
                            RouteConfig(name: "default", destination: .cluster("echo")),
                        ])
                    ]
                )
            ],
            clusters: [
                ClusterConfig(name: "echo", endpoints: endpoints, healthCheck: HealthCheckConfig(kind: .http, path: "/healthz")),
                ClusterConfig(name: "echo-a-only", endpoints: [endpoints[0]]),
            ]
        )
        let sidecar = try await Sidecar.start(config: config, logger: logger)
        let base = "http://\(listen)"
        announce("""

        Outrigger demo: a sidecar on \(listen) in front of echo-a (:\(echoPort)) and echo-b (:\(echoPort + 1)).

          curl -s \(base)/hello                              # round robin: run it twice, see x-echo-server flip
          curl -s --http2-prior-knowledge \(base)/hello      # the same over HTTP/2 (h2c)
          curl -si \(base)/a/anything                        # prefix route: only echo-a, path rewritten to /anything
          curl -si '\(base)/slow?delay=300'                  # the upstream waits 300 ms
          curl -si '\(base)/fail?status=503'                 # the upstream answers 503
          curl -si '\(base)/boom?reset=1'                    # the upstream resets: 502 with x-outrigger-reason
          curl -s http://\(admin)/stats/prometheus | grep outrigger_
          curl -s http://\(admin)/config_dump
          curl -s http://\(admin)/clusters                     # each endpoint's health, drain, load

        Admin: http://\(admin)/  — Ctrl-C drains and stops.

        """)
        await sidecar.runUntilStopped()
        for echo in echoes { await echo.stop() }
    }
}
