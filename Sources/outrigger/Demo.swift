import ArgumentParser
import Foundation
import Logging
import OutriggerConfig
import OutriggerControl
import OutriggerEcho
import OutriggerProxy

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a small mesh on this machine (what `make run` runs).",
        discussion: """
        Nothing to configure: a control plane with an embedded mesh file, two services — users (two instances)
        and orders (one) — each instance an echo app behind its own sidecar, and a caller's sidecar (web) whose
        outbound listener routes to both by host name. Edit the printed mesh file to push a change live.
        """
    )

    @Option(help: "The caller's outbound listener.")
    var listen: HostPort = HostPort(host: "127.0.0.1", port: 15001)

    @Option(help: "The control plane's xDS address.")
    var control: HostPort = HostPort(host: "127.0.0.1", port: 15010)

    @Option(help: "The control plane's admin (/status, /metrics).")
    var controlAdmin: HostPort = HostPort(host: "127.0.0.1", port: 15014)

    @Option(help: "The caller sidecar's admin listener.")
    var admin: HostPort = AdminConfig.defaultAddress

    @Option(help: "First port of the three echo apps.")
    var echoPort: Int = 18081

    @OptionGroup var logging: LoggingOptions

    static let mesh = """
    # The demo mesh. Edit and save: the control plane pushes the change to every sidecar within a second.
    # Try: give users a canary split (uncomment the routes below), or add retries to orders.
    services:
      - name: users
        endpoints: []              # its instances register themselves: two sidecars of service 'users'
        loadBalancer: {policy: round_robin}
        # routes:
        #   - weightedClusters:
        #       - {cluster: users, weight: 50}
        #       - {cluster: orders, weight: 50}
      - name: orders
        endpoints: []
        routes:
          - timeout: 2s
            cluster: orders
    """

    /// Until `sidecars` sidecars are connected and each has ACKed everything it was sent (or `limit` passes: the demo
    /// starts anyway, and says so).
    private static func waitUntilSynced(_ plane: ControlPlane, sidecars: Int, within limit: Duration, logger: Logger) async {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let status = plane.status()
            if status.count >= sidecars, status.allSatisfy({ $0.sync == "SYNCED" && $0.types.values.contains { $0.acked != nil } }) { return }
            try? await Task.sleep(for: .milliseconds(20))
        }
        logger.warning("not every sidecar has its config after \(limit): see `outrigger control status`")
    }

    func run() async throws {
        let logger = logging.bootstrap(label: "outrigger")
        let signals = ProcessSignals.stream([SIGHUP, SIGTERM, SIGINT])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-demo-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let meshPath = directory.appendingPathComponent("mesh.yaml").path
        try Self.mesh.write(toFile: meshPath, atomically: true, encoding: .utf8)

        let store = MeshFileStore(path: meshPath)
        let snapshot = try store.snapshot()
        let plane = ControlPlane(mesh: snapshot.mesh, version: snapshot.version, store: store, registrationGrace: .seconds(2),
                                 logger: Logger(label: "outrigger.control"))
        _ = try await plane.bindAdmin(host: controlAdmin.host, port: controlAdmin.port)
        let (ready, readySink) = AsyncStream<Int>.makeStream()
        let serving = Task {
            do {
                try await plane.serve(host: control.host, port: control.port) { readySink.yield($0) }
            } catch where Task.isCancelled {
                // Ctrl-C: the demo is stopping.
            } catch {
                logger.critical("the control plane stopped: \(error)")
                readySink.finish()
            }
        }
        var waitForPlane = ready.makeAsyncIterator()
        guard await waitForPlane.next() != nil else { throw ExitCode(1) }
        let watching = Task { await plane.follow() }

        // The apps, each behind its own sidecar (inbound listener only; they register with the control plane).
        let instances = [("users", "users-1"), ("users", "users-2"), ("orders", "orders-1")]
        var echoes: [EchoServer] = []
        var sidecars: [Sidecar] = []
        var following: [Task<Void, Never>] = []
        for (index, (service, node)) in instances.enumerated() {
            let echo = try await EchoServer.start(host: "127.0.0.1", port: echoPort + index, name: node)
            echoes.append(echo)
            let base = SidecarConfig(admin: nil, concurrency: 1, listeners: [
                ListenerConfig(name: MeshView.inboundListener, address: HostPort(host: "127.0.0.1", port: 0), direction: .inbound, virtualHosts: []),
            ], clusters: [])
            let sidecar = try await Sidecar.start(config: base, logger: Logger(label: "outrigger.\(node)"))
            sidecars.append(sidecar)
            let client = ControlPlaneClient(addresses: [control], identity: SidecarIdentity(
                node: node, service: service, listeners: Self.bound(sidecar), app: HostPort(host: "127.0.0.1", port: echoPort + index)),
                sidecar: sidecar, base: base, logger: Logger(label: "outrigger.\(node)"))
            following.append(Task { await client.run() })
        }

        // The caller's sidecar: its outbound listener is where the app 'web' would send its calls.
        let callerBase = SidecarConfig(admin: AdminConfig(address: admin), listeners: [
            ListenerConfig(name: MeshView.outboundListener, address: listen, direction: .outbound,
                           accessLog: AccessLogConfig(path: AccessLogConfig.standardOutput), virtualHosts: []),
        ], clusters: [])
        let caller = try await Sidecar.start(config: callerBase, logger: logger)
        let callerClient = ControlPlaneClient(addresses: [control], identity: SidecarIdentity(node: "web-1", service: "web", listeners: Self.bound(caller)),
                                              sidecar: caller, base: callerBase, overrides: { config in
                                                  // A line per request on stdout, whatever the pushes say.
                                                  for index in config.listeners.indices { config.listeners[index].accessLog = AccessLogConfig(path: AccessLogConfig.standardOutput) }
                                              }, logger: logger)
        following.append(Task { await callerClient.run() })
        // The commands below work as soon as they show: every sidecar has its config first (a request sent the
        // moment the listener opened could find no route yet).
        await Self.waitUntilSynced(plane, sidecars: instances.count + 1, within: .seconds(10), logger: logger)

        let base = "http://\(listen)"
        announce("""

        Outrigger demo: a control plane (xDS on \(control)) and four sidecars in one process.
          users  = users-1, users-2 (echo apps on :\(echoPort), :\(echoPort + 1), each behind its own sidecar)
          orders = orders-1 (echo app on :\(echoPort + 2), behind its sidecar)
          web    = the caller; its sidecar's outbound listener is \(listen)

          curl -s -H 'Host: users' \(base)/hello            # round robin over users' two instances: run it twice
          curl -s -H 'Host: orders' \(base)/hello           # orders
          curl -s --http2-prior-knowledge -H 'Host: users' \(base)/hello
          curl -si -H 'Host: nobody' \(base)/                # 404 no_route: no such service
          .build/debug/outrigger control status --admin \(controlAdmin)   # every sidecar: SYNCED, versions
          curl -s http://\(controlAdmin)/metrics             # pushes, ACKs, NACKs, convergence histogram
          curl -s http://\(admin)/config_dump               # what the caller's sidecar was pushed

        Open in a browser: http://\(admin)/dashboard (the caller's sidecar, live) and http://\(controlAdmin)/mesh
        (the mesh as the control plane sees it).

        Push a change live: edit \(meshPath)
        (uncomment the canary split under users, save, and curl users again; a mistake is refused and logged).

        Ctrl-C drains and stops.

        """)
        await caller.runUntilStopped(signals: signals)
        for task in following { task.cancel() }
        watching.cancel()
        serving.cancel()
        for sidecar in sidecars { await sidecar.shutdown() }
        for echo in echoes { await echo.stop() }
        try? FileManager.default.removeItem(at: directory)
    }

    /// A sidecar's listeners where they are bound.
    static func bound(_ sidecar: Sidecar) -> [String: HostPort] {
        sidecar.listenerAddresses.compactMapValues { address in address.port.map { HostPort(host: address.ipAddress ?? "127.0.0.1", port: $0) } }
    }
}
