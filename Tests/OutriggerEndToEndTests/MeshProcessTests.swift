import Foundation
import OutriggerConfig
import OutriggerEcho
import Testing

/// The real processes: `outrigger control` and three `outrigger proxy --control` sidecars (a caller, and two
/// instances of the service it calls, each in front of its own app), under load.
@Suite("A mesh of real processes: control plane, sidecars, apps", .serialized)
struct MeshProcessTests {
    /// A sidecar process and what it announced.
    struct SidecarProcess {
        let process: ChildProcess
        let outbound: Int
        let inbound: Int?
    }

    static func startControl(mesh: String, port: Int = 0) async throws -> (ChildProcess, xds: Int, admin: Int) {
        let control = try ChildProcess(try outriggerExecutable(), ["control", "--mesh", mesh, "--listen", "127.0.0.1:\(port)", "--admin", "127.0.0.1:0",
                                                                    "--registration-grace-milliseconds", "300", "--watch-interval-milliseconds", "100"])
        let text = try await control.waitForOutput(containing: "xds on 127.0.0.1:")
        return (control, try ProcessTests.port(in: text, after: "xds on 127.0.0.1:"), try ProcessTests.port(in: text, after: "admin on 127.0.0.1:"))
    }

    /// - Parameter admin: with an admin listener (a rollout's gate reads its `/metrics`).
    static func startSidecar(node: String, service: String, control: Int, app: Int? = nil, inbound: Int = 0, stateDir: String? = nil,
                             controlAlso: [Int] = [], admin: Bool = false) async throws -> SidecarProcess {
        let controls = ([control] + controlAlso).map { "127.0.0.1:\($0)" }.joined(separator: ",")
        var arguments = ["proxy", "--control", controls, "--node", node, "--service", service, "--outbound", "127.0.0.1:0",
                         "--concurrency", "1", "--drain-notice-milliseconds", "1000"]
        arguments += admin ? ["--admin", "127.0.0.1:0"] : ["--no-admin"]
        if let app { arguments += ["--app", "127.0.0.1:\(app)", "--inbound", "127.0.0.1:\(inbound)"] }
        if let stateDir { arguments += ["--state-dir", stateDir] }
        let process = try ChildProcess(try outriggerExecutable(), arguments)
        let text = try await process.waitForOutput(containing: "listener outbound on")
        let inboundPort = app == nil ? nil : try ProcessTests.port(in: try await process.waitForOutput(containing: "listener inbound on"), after: "listener inbound on 127.0.0.1:")
        return SidecarProcess(process: process, outbound: try ProcessTests.port(in: text, after: "listener outbound on 127.0.0.1:"), inbound: inboundPort)
    }

    static func mesh(canary: Int?, canaryPort: Int) -> String {
        var text = """
        services:
          - name: users
            domains: [users, "*"]
            endpoints: []
            connectTimeout: 2s

        """
        if let canary {
            text += """
                routes:
                  - weightedClusters:
                      - {cluster: users, weight: \(100 - canary)}
                      - {cluster: users-canary, weight: \(canary)}
              - name: users-canary
                endpoints: [127.0.0.1:\(canaryPort)]

            """
        }
        return text
    }

    /// The app that answered a GET through `port`, or the failure.
    static func answer(_ port: Int, host: String = "users") async throws -> String {
        let result = try await curl(["-s", "-o", "/dev/null", "-D", "-", "-H", "Host: \(host)", "http://127.0.0.1:\(port)/"])
        guard let line = result.stdout.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("x-echo-server:") }) else {
            return "no answer: \(result.stdout.split(separator: "\r\n").first ?? "") \(result.stderr)"
        }
        return line.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces)
    }

    static func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("timed out waiting until \(what)")
        throw SetupError(description: "timed out waiting until \(what)")
    }

    /// Open-loop load through `port` at `rate` req/s for `seconds`; the report's JSON.
    static func load(_ port: Int, seconds: Int, rate: Int) async throws -> [String: Any] {
        let result = try await run(try outriggerExecutable(), ["bench", "http://127.0.0.1:\(port)/?size=16", "--rate", "\(rate)", "-c", "8",
                                                              "--duration", "\(seconds)s", "--warmup", "0s", "--json", "/dev/stdout"])
        let json = String(result.stdout[result.stdout.firstIndex(of: "{")!...])
        return try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    @Test func routeChangesAndRollingRestartsLoseNoRequestAndALostControlPlaneChangesNothing() async throws {
        let apps = [try await EchoServer.start(host: "127.0.0.1", port: 0, name: "users-1-app"),
                    try await EchoServer.start(host: "127.0.0.1", port: 0, name: "users-2-app")]
        let canary = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "canary-app")
        let file = try ConfigFile()
        try file.write(Self.mesh(canary: nil, canaryPort: canary.localAddress.port!))
        var (control, xds, admin) = try await Self.startControl(mesh: file.path)
        let stateDirs = (0..<2).map { _ in FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-state-\(UUID().uuidString)").path }
        var users: [SidecarProcess] = []
        var web: SidecarProcess?
        defer {
            control.kill()
            web?.process.kill()
            for sidecar in users { sidecar.process.kill() }
            for directory in stateDirs { try? FileManager.default.removeItem(atPath: directory) }
        }
        for index in 0..<2 {
            users.append(try await Self.startSidecar(node: "users-\(index + 1)", service: "users", control: xds, app: apps[index].localAddress.port!,
                                                     stateDir: stateDirs[index]))
        }
        // The caller names its control plane in its config file (the others on the command line).
        let webConfig = try ConfigFile()
        try webConfig.write("""
        admin: {address: 127.0.0.1:0}
        listeners: [{name: outbound, address: 127.0.0.1:0, direction: outbound, routes: []}]
        controlPlane: {addresses: [127.0.0.1:\(xds)], node: web-1, service: web}
        """)
        let webProcess = try ChildProcess(try outriggerExecutable(), ["proxy", "--config", webConfig.path, "--concurrency", "1"])
        let webText = try await webProcess.waitForOutput(containing: "listener outbound on")
        web = SidecarProcess(process: webProcess, outbound: try ProcessTests.port(in: webText, after: "listener outbound on 127.0.0.1:"), inbound: nil)
        let caller = web!.outbound

        // Registration: both instances of users are endpoints of it for the caller.
        var seen: Set<String> = []
        try await Self.eventually("the caller reaches both registered instances") {
            seen.insert(try await Self.answer(caller))
            return seen.isSuperset(of: ["users-1-app", "users-2-app"])
        }

        // A route change under load, with a cluster new in the same push: no request fails.
        async let during = Self.load(caller, seconds: 4, rate: 400)
        try await Task.sleep(for: .seconds(1))
        try file.write(Self.mesh(canary: 50, canaryPort: canary.localAddress.port!))
        let changed = try await during
        #expect(changed["failed"] as? Int == 0 && (changed["completed"] as? Int ?? 0) >= 1200, "\(changed)")
        #expect(canary.requestsServed > 100, "the canary took its share after the push: \(canary.requestsServed)")

        // A rolling restart of both instances under load: each says it is draining, callers stop picking it,
        // it closes, it comes back (same node, same port) and registers again. No request fails.
        // 200 req/s: the suite runs this beside everything else on two cores.
        async let rolling = Self.load(caller, seconds: 12, rate: 200)
        for index in 0..<2 {
            try await Task.sleep(for: .seconds(1))
            let old = users[index]
            old.process.signal(SIGTERM)
            #expect(await old.process.waitForExit() == 0)
            users[index] = try await Self.startSidecar(node: "users-\(index + 1)", service: "users", control: xds, app: apps[index].localAddress.port!,
                                                       inbound: old.inbound!, stateDir: stateDirs[index])
            try await Task.sleep(for: .seconds(2))
        }
        let restarted = try await rolling
        #expect(restarted["failed"] as? Int == 0 && (restarted["completed"] as? Int ?? 0) >= 2000, "\(restarted)")

        // The control plane goes away: nothing changes for traffic.
        control.kill()
        _ = await control.waitForExit()
        let served = apps.map(\.requestsServed)
        for _ in 0..<20 { #expect(try await Self.answer(caller).hasSuffix("-app")) }
        #expect(apps.map(\.requestsServed) != served, "the instances keep serving")

        // An instance restarted while the control plane is down serves from its persisted config.
        let lonely = users[0]
        lonely.process.signal(SIGTERM)
        _ = await lonely.process.waitForExit()
        users[0] = try await Self.startSidecar(node: "users-1", service: "users", control: xds, app: apps[0].localAddress.port!,
                                                inbound: lonely.inbound!, stateDir: stateDirs[0])
        try await users[0].process.waitForOutput(containing: "serving the persisted control-plane config")
        #expect(try await Self.answer(users[0].inbound!, host: "anything") == "users-1-app", "its inbound listener routes to its app from the persisted config")

        // The control plane comes back on its address: every sidecar reconnects and is SYNCED.
        (control, xds, admin) = try await Self.startControl(mesh: file.path, port: xds)
        try await Self.eventually("all three sidecars are connected and SYNCED", timeout: .seconds(40)) {
            let status = try await run(try outriggerExecutable(), ["control", "status", "--admin", "127.0.0.1:\(admin)"])
            let rows = status.stdout.split(separator: "\n").dropFirst()
            return rows.filter { $0.contains("SYNCED") }.count == 3
        }
        #expect(try await Self.answer(caller).hasSuffix("-app"))
        for app in apps { await app.stop() }
        await canary.stop()
    }
}
