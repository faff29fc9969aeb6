import ArgumentParser
import Dispatch
import Foundation
import Logging
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerControl
import OutriggerEtcd
import OutriggerProxy

struct Control: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the control plane: serve every sidecar its view of the mesh over xDS (ADS).",
        subcommands: [Serve.self, Apply.self, Rollout.self, Status.self, Simulate.self],
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

        @Option(help: "The mesh: a YAML file, or a directory whose .yaml files together are one mesh (services, their traffic policy and routes).")
        var mesh: String?

        @OptionGroup var etcd: EtcdOptions

        @Option(help: "Address for xDS (gRPC), HOST:PORT.")
        var listen: HostPort = HostPort(host: "127.0.0.1", port: 15010)

        @Option(help: "xDS over TLS: the control plane's certificate chain (PEM); sidecars verify it with --control-ca.")
        var tlsCertificate: String?

        @Option(help: "xDS over TLS: the private key of --tls-certificate (PEM).")
        var tlsPrivateKey: String?

        @Option(help: "Admin listener HOST:PORT: /status (JSON), /metrics (Prometheus).")
        var admin: HostPort = HostPort(host: "127.0.0.1", port: 15014)

        @Flag(help: "Run without the admin listener.")
        var noAdmin = false

        @Option(help: "How long a disconnected sidecar stays an endpoint of its service, in milliseconds.")
        var registrationGraceMilliseconds: Int64 = 5000

        @Option(help: "With --store: how long a sidecar stays registered, in seconds, once no replica keeps its registration alive (its replica died).")
        var registrationTTLSeconds: Int64 = 10

        @Option(help: "With --store: how long a replica that died stays listed, in seconds; when it led, the next replica leads after it.")
        var replicaTTLSeconds: Int64 = 5

        @Option(help: ArgumentHelp("How often the mesh file is checked for changes, in milliseconds.", visibility: .hidden))
        var watchIntervalMilliseconds: Int64 = 1000

        @OptionGroup var logging: LoggingOptions

        func run() async throws {
            let logger = logging.bootstrap(label: "outrigger.control")
            // Taken from here on: a SIGTERM sent the moment the ports are announced is acted on, not lost.
            let signals = ProcessSignals.stream([SIGHUP, SIGTERM, SIGINT])
            let store: any MeshStore
            var registrations: EtcdRegistrations?
            var etcdStore: EtcdMeshStore?
            let replicaID = UUID().uuidString
            switch (mesh, etcd.store) {
            case (.some(let mesh), nil): store = MeshFileStore(path: mesh, pollInterval: .milliseconds(watchIntervalMilliseconds))
            case (nil, .some):
                let shared = try etcd.meshStore(logger: logger)
                store = shared
                etcdStore = shared
                registrations = EtcdRegistrations(client: shared.client, prefix: shared.prefix, replica: replicaID, ttl: registrationTTLSeconds, logger: logger)
            default:
                FileHandle.standardError.write(Data("give the mesh as --mesh FILE or --store etcd://HOST:PORT, one of the two\n".utf8))
                throw ExitCode(2)
            }
            var snapshot: MeshSnapshot?
            do {
                snapshot = try await store.snapshot()
            } catch EtcdMeshStoreError.empty {
                // A new store: serve an empty mesh until the first `outrigger control apply`.
                logger.warning("\(store.description) holds no mesh yet; serving none until `outrigger control apply`")
            } catch let error as MeshStoreUnreadable {
                // Serving an empty mesh instead would take every sidecar's routes away.
                FileHandle.standardError.write(Data("\(error)\nrefusing to start: cannot read the mesh from \(store.description)\n".utf8))
                throw ExitCode(2)
            } catch {
                FileHandle.standardError.write(Data("\(error)\nrefusing to start: \(store.description) is invalid\n".utf8))
                throw ExitCode(2)
            }
            let plane = ControlPlane(mesh: snapshot?.mesh ?? MeshConfig(services: []), version: snapshot?.version, store: store,
                                     registrations: registrations, registrationGrace: .milliseconds(registrationGraceMilliseconds), logger: logger)
            let tls: TLSConfig?
            switch (tlsCertificate, tlsPrivateKey) {
            case (.some(let certificate), .some(let key)): tls = TLSConfig(certificate: certificate, privateKey: key)
            case (nil, nil): tls = nil
            default:
                FileHandle.standardError.write(Data("--tls-certificate and --tls-private-key go together\n".utf8))
                throw ExitCode(2)
            }
            var adminAddress: HostPort?
            if !noAdmin {
                do {
                    let channel = try await plane.bindAdmin(host: admin.host, port: admin.port)
                    adminAddress = HostPort(host: admin.host, port: channel.localAddress?.port ?? admin.port)
                    announce("outrigger control: admin on \(adminAddress!)")
                } catch {
                    logger.critical("cannot bind the admin listener: \(error)")
                    throw ExitCode(1)
                }
            }
            let (listening, listeningSink) = AsyncStream<Int>.makeStream()
            let (registrationsRead, registrationsReadSink) = AsyncStream<Void>.makeStream()
            try await withThrowingTaskGroup(of: Void.self) { group in
                // The first task to end stops the others: each runs until cancelled.
                if registrations != nil {
                    group.addTask { await plane.followRegistrations { registrationsReadSink.finish() } }
                } else {
                    registrationsReadSink.finish()
                }
                group.addTask {
                    // Serving before the shared registrations are read would send sidecars views without them.
                    for await _ in registrationsRead {}
                    try await plane.serve(host: listen.host, port: listen.port, tls: tls) { port in
                        announce("outrigger control: xds on \(HostPort(host: listen.host, port: port))")
                        listeningSink.yield(port)
                    }
                }
                if let etcdStore {
                    // Among the replicas once it serves: where, and which of them leads.
                    group.addTask { [adminAddress, replicaTTLSeconds] in
                        var ports = listening.makeAsyncIterator()
                        guard let port = await ports.next() else { return }
                        let me = EtcdReplicas.Member(id: replicaID, xds: HostPort(host: listen.host, port: port).description, admin: adminAddress?.description)
                        let (standings, standing) = AsyncStream<EtcdReplicas.Standing>.makeStream()
                        let replicas = EtcdReplicas(client: etcdStore.client, prefix: etcdStore.prefix, me: me, ttl: replicaTTLSeconds, logger: logger) { now in
                            plane.standing(replicaID, now)
                            standing.yield(now)
                        }
                        // The rollouts: every replica takes part; the leader drives them.
                        let rollouts = RolloutCoordinator(plane: plane, store: etcdStore, replicas: replicas, logger: logger)
                        await withDiscardingTaskGroup { group in
                            group.addTask { await replicas.run() }
                            group.addTask { await rollouts.run(standings: standings) }
                        }
                    }
                }
                group.addTask { await plane.follow() }
                group.addTask {
                    for await number in signals {
                        if number == SIGHUP { await plane.reload(); continue }
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

    /// `outrigger control apply`: a mesh into the store the replicas share.
    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a mesh and make it the current one in etcd, where every control-plane replica follows it.",
            discussion: """
            Errors are printed as `outrigger validate` prints them (FILE:LINE:COLUMN: KEY.PATH: what was expected),
            and nothing is written; exit status 1. The change is one etcd transaction: replicas see the old mesh or
            the new one. Applying the mesh the store already holds changes nothing.
            """
        )

        @Argument(help: "The mesh: a YAML file, or a directory whose .yaml files together are one mesh.")
        var mesh: String

        @OptionGroup var etcd: EtcdOptions

        func run() async throws {
            let sources = try etcd.read(mesh, for: "apply")
            let store = try etcd.meshStore(logger: Logger(label: "outrigger.control"))
            let outcome: Result<EtcdMeshStore.Applied, any Error>
            do {
                outcome = .success(try await store.apply(sources, path: mesh))
            } catch {
                outcome = .failure(error)
            }
            await store.client.close()
            switch outcome {
            case .success(.unchanged(let version)):
                print("\(store.description): mesh \(version) is already the current one; nothing written")
            case .success(.applied(let version, let revision)):
                print("\(store.description): mesh \(version) applied at revision \(revision)")
            case .failure(let error as ConfigErrors):
                print(error.description)
                throw ExitCode(1)
            case .failure(let error):
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    /// `outrigger control rollout`: a mesh to every sidecar as one generation, through the replicas' leader.
    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Roll a mesh out to every sidecar as one generation: prepared everywhere first, then committed, in waves behind a gate.",
            discussion: """
            The mesh is validated as `apply` validates it and staged in etcd; the leading replica then drives the
            rollout. Phase 1: every sidecar, on whichever replica, gets the generation to validate and warm without
            serving it, and answers. Phase 2: all prepared within --prepare-timeout → the decision commit is written
            to etcd, and the sidecars switch, wave by wave (--wave: cumulative percentages); else abort, and they
            drop it. After each wave but the last, the gate (--gate) is read over the switched sidecars' /stats/prometheus
            for --soak: a breach rolls them back to the mesh before, and says why. A leader that dies is replaced,
            and the next one finishes from the log (no decision written: abort). Exit status 0 when completed,
            1 when aborted or rolled back (and for a mesh `validate` refuses).
            """
        )

        @Argument(help: "The mesh: a YAML file, or a directory whose .yaml files together are one mesh.")
        var mesh: String

        @OptionGroup var etcd: EtcdOptions

        @Option(help: "The waves: cumulative percentages of the sidecars, growing, the last 100 (e.g. 1,10,50,100).")
        var wave = "100"

        @Option(help: "How long every sidecar has to prepare the generation (e.g. 5s, 500ms).")
        var prepareTimeout = "5s"

        @Option(help: "How long the gate watches each wave before the next (e.g. 10s).")
        var soak = "10s"

        @Option(help: "What a wave must hold: error-ratio<1%, p99<300ms, or both (comma-separated); none by default.")
        var gate = ""

        @Option(help: "How long after the leader writes a wave its sidecars switch, all at that instant (their clocks' skew apart), however long their COMMITs take to arrive; 0s: each on its COMMIT.")
        var switchAfter = "150ms"

        @Flag(help: "Print the generation requested and exit, without following the rollout.")
        var noWait = false

        func run() async throws {
            let options: RolloutOptions
            do {
                options = try RolloutOptions(waves: wave, prepareTimeout: prepareTimeout, soak: soak, switchAfter: switchAfter, gate: gate)
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                throw ExitCode(2)
            }
            let sources = try etcd.read(mesh, for: "rollout")
            let store = try etcd.meshStore(logger: Logger(label: "outrigger.control"))
            let log = EtcdRollouts(client: store.client, prefix: store.prefix)
            let outcome: Result<RolloutRecord.State?, any Error>
            do {
                outcome = .success(try await request(sources, store: store, log: log, options: options))
            } catch {
                outcome = .failure(error)
            }
            await store.client.close()
            switch outcome {
            case .success(.completed), .success(nil): return
            case .success: throw ExitCode(1)
            case .failure(let error as ConfigErrors):
                print(error.description)
                throw ExitCode(1)
            case .failure(EtcdMeshStoreError.unchanged(_, let version)):
                print("\(store.description): mesh \(version) is already the current one; nothing to roll out")
            case .failure(let error):
                FileHandle.standardError.write(Data("outrigger control rollout: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }

        /// Stages the mesh, asks for its rollout, and (unless --no-wait) prints its course until it ends: the
        /// state it ended in.
        private func request(_ sources: [MeshConfig.Source], store: EtcdMeshStore, log: EtcdRollouts,
                             options: RolloutOptions) async throws -> RolloutRecord.State? {
            guard !(try await EtcdReplicas.list(client: store.client, prefix: store.prefix).members.isEmpty) else {
                throw ValidationError("no control-plane replica serves \(store.description): nobody would carry the rollout out")
            }
            let staged = try await store.stage(sources, path: mesh)
            let generation: UInt64
            do {
                generation = try await log.request(staged, store: store, options: options)
            } catch {
                // The chunks staged for nothing go, unless the rollout under way is of this very mesh.
                if try await log.latest().map({ $0.isFinished || $0.version != staged.version }) ?? true {
                    _ = try? await store.client.transaction(store.discarding(staged))
                }
                throw error
            }
            announce("generation \(generation): mesh \(staged.version) (replacing \(staged.previous ?? "none")) requested")
            guard !noWait else { return nil }
            let seen = NIOLockedValueBox<RolloutRecord?>(nil)
            // etcd out of reach is waited out (the rollout goes on without this command) for a minute at most.
            var failingSince: ContinuousClock.Instant?
            var failures = 0
            while true {
                // (A typed-throws catch in this loop crashes Swift 6.3's compiler: the watch's end is kept as a Result.)
                let watched: Result<Void, EtcdError>
                do {
                    let read = try await store.client.read(.key(log.recordKey(generation)))
                    if let record = read.pairs.first.flatMap({ try? JSONDecoder().decode(RolloutRecord.self, from: $0.value) }) {
                        await Self.report(record, after: seen.withLockedValue { $0 })
                        seen.withLockedValue { $0 = record }
                        if record.isFinished { return record.state }
                    }
                    failingSince = nil
                    try await store.client.watch(.key(log.recordKey(generation)), from: read.revision + 1) { update in
                        guard case .changes(let events, _) = update else { return true }
                        for event in events {
                            guard let record = try? JSONDecoder().decode(RolloutRecord.self, from: event.kv.value) else { continue }
                            await Self.report(record, after: seen.withLockedValue { $0 })
                            seen.withLockedValue { $0 = record }
                            if record.isFinished { return false }
                        }
                        return true
                    }
                    watched = .success(())
                } catch {
                    watched = .failure(error)
                }
                if let last = seen.withLockedValue({ $0 }), last.isFinished { return last.state }
                if case .failure(let error) = watched, !error.isCompacted {
                    let since = failingSince ?? .now
                    failingSince = since
                    guard ContinuousClock.now - since < .seconds(60) else {
                        FileHandle.standardError.write(Data("""
                            outrigger control rollout: lost track of generation \(generation) for a minute: \(error)
                            it goes on without this command; see `outrigger control status --store ...`

                            """.utf8))
                        throw ExitCode(3)
                    }
                    failures += 1
                    try await Task.sleep(for: ReconnectBackoff.delay(after: failures))
                }
            }
        }

        /// A line for each step the record took since `before`.
        static func report(_ record: RolloutRecord, after before: RolloutRecord?) async {
            guard record != before else { return }
            // A wave is told once its sidecars have switched: at the instant the record names for them.
            if let switchAt = record.switchAt, switchAt != before?.switchAt {
                try? await Task.sleep(for: StagedGenerations.wait(until: switchAt))
            }
            let total = record.targets.count
            let name = "generation \(record.generation)"
            if record.state == .preparing, before?.state != .preparing {
                announce("\(name): preparing on the sidecars of \(record.voters.count) replica(s), leader \(record.leader ?? "?")")
            }
            // The decision commit may come in the same write as the first wave, or the whole rollout.
            let committed: Set<RolloutRecord.State> = [.committed, .completed, .rolledBack]
            if committed.contains(record.state), !committed.contains(before?.state ?? .requested) {
                announce("\(name): committed (\(total) sidecars prepared)")
            }
            if record.state == .committed, record.activated.count != before?.activated.count {
                announce("\(name): activated on \(record.activated.count) of \(total)")
            }
            switch record.state {
            case .completed: announce("\(name): completed: every sidecar (\(total)) serves mesh \(record.version)")
            case .aborted: announce("\(name): aborted: \(record.reason ?? "?")")
            case .rolledBack: announce("\(name): rolled back to mesh \(record.previous ?? "none"): \(record.reason ?? "?")")
            default: break
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

        @OptionGroup var etcd: EtcdOptions

        func run() async throws {
            if etcd.store != nil {
                try await replicasStatus()
                return
            }
            let (status, body) = try await ControlPlane.fetch(host: admin.host, port: admin.port, path: "/status")
            guard status == 200, let object = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
                FileHandle.standardError.write(Data("outrigger control status: \(admin) answered \(status)\n".utf8))
                throw ExitCode(1)
            }
            print(json ? body : ControlPlane.statusTable(object), terminator: "")
        }

        /// Every replica sharing the store (the leader first), the store's revision, and every replica's sidecars.
        private func replicasStatus() async throws {
            let store = try etcd.meshStore(logger: Logger(label: "outrigger.control"))
            let listing: EtcdReplicas.Listing
            let version: String
            let rollout: RolloutRecord?
            do {
                listing = try await EtcdReplicas.list(client: store.client, prefix: store.prefix)
                version = await store.currentVersion()
                rollout = try await EtcdRollouts(client: store.client, prefix: store.prefix).latest()
            } catch {
                await store.client.close()
                FileHandle.standardError.write(Data("outrigger control status: \(error)\n".utf8))
                throw ExitCode(1)
            }
            await store.client.close()
            var sidecars: [[String: Any]] = []
            var unreachable: [String] = []
            for member in listing.members {
                guard let admin = member.admin.flatMap(HostPort.init(parsing:)) else { continue }
                guard let (status, body) = try? await ControlPlane.fetch(host: admin.host, port: admin.port, path: "/status"), status == 200,
                      let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
                else {
                    unreachable.append("\(member.id) (admin \(admin)) did not answer")
                    continue
                }
                sidecars += (object["sidecars"] as? [[String: Any]] ?? []).map { $0.merging(["replica": member.id]) { _, new in new } }
            }
            if json {
                let object: [String: Any] = [
                    "store": store.description, "revision": listing.revision, "mesh": version,
                    "replicas": listing.members.map { ["id": $0.id, "xds": $0.xds, "admin": $0.admin ?? "", "leader": $0 == listing.leader] },
                    "sidecars": sidecars,
                    "rollout": try rollout.map { try JSONSerialization.jsonObject(with: JSONEncoder().encode($0)) } ?? NSNull(),
                ]
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
                return
            }
            print("\(store.description) at revision \(listing.revision), mesh \(version.isEmpty ? "(none applied)" : version)\n")
            var rows = [["REPLICA", "ROLE", "XDS", "ADMIN"]]
            for member in listing.members {
                rows.append([member.id, member == listing.leader ? "leader" : "follower", member.xds, member.admin ?? "-"])
            }
            print(ControlPlane.table(rows))
            if let rollout {
                var line = "rollout: generation \(rollout.generation) \(rollout.state.rawValue), mesh \(rollout.version) replacing \(rollout.previous ?? "none")"
                if !rollout.targets.isEmpty { line += ", activated on \(rollout.activated.count) of \(rollout.targets.count)" }
                if let reason = rollout.reason { line += "\n  why: \(reason)" }
                print(line + "\n")
            }
            print(ControlPlane.statusTable(["sidecars": sidecars]), terminator: "")
            for line in unreachable { print(line) }
        }
    }

    /// `outrigger control simulate`: N sidecars against a running control plane, timing mesh changes.
    struct Simulate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Open N ADS streams that behave like sidecars (one connection each; decode, ACK) and time mesh changes.",
            discussion: """
            Against a running `outrigger control --mesh FILE`: writes FILE (SERVICES services and a route split
            between two of them), sends the control plane SIGHUP, then CHANGES times moves the split, timing each
            from the write to every simulated sidecar's ACK of the new routes (debounce included). Reports
            p50/p99/max per change, the control plane's CPU seconds per change and its RSS (from /proc).
            Against replicas sharing etcd (`--store`): the sidecars are spread over the --control addresses, and
            each change is an apply to the store.
            """
        )

        @Option(help: "The control plane's xDS address, HOST:PORT, or the replicas' (HOST:PORT,HOST:PORT...): sidecar i connects to the i-th, round robin.")
        var control: String

        @Option(help: "The control plane's process id, or the replicas' (PID,PID...): their CPU and memory are read; with --mesh, the (one) control plane is sent SIGHUP after each edit.")
        var controlPid: String

        @Option(help: "The control plane's mesh file, rewritten by the simulation.")
        var mesh: String?

        @OptionGroup var etcd: EtcdOptions

        @Option(help: "Simulated sidecars.")
        var sidecars: Int = 100

        @Option(help: "Services in the mesh (one cluster each for every sidecar).")
        var services: Int = 20

        @Option(help: "Mesh changes to time.")
        var changes: Int = 5

        @Option(help: "Also write the report as JSON to this file.")
        var json: String?

        @Flag(help: "With --store: each change a two-phase rollout (one wave) instead of an apply; reports how long until every sidecar switched, the window from the first switch to the last, and etcd's writes and bytes.")
        var rollout = false

        @Option(help: "With --rollout: the rollouts' --switch-after, in milliseconds (0: each sidecar switches on its COMMIT).")
        var switchAfterMilliseconds: Int64 = 150

        func run() async throws {
            let controls = try control.split(separator: ",").map { item in
                guard let address = HostPort(parsing: String(item)) else { throw ValidationError("--control: '\(item)' is not HOST:PORT") }
                return address
            }
            let pids = try controlPid.split(separator: ",").map { item in
                guard let pid = Int32(item) else { throw ValidationError("--control-pid: '\(item)' is not a process id") }
                return pid
            }
            let changer: ControlPlaneSimulator.Changer
            var store: EtcdMeshStore?
            switch (mesh, etcd.store) {
            case (.some(let mesh), nil):
                guard let pid = pids.first, pids.count == 1 else { throw ValidationError("--mesh: one control plane, one --control-pid") }
                changer = .file(mesh, pid: pid)
            case (nil, .some):
                store = try etcd.meshStore(logger: Logger(label: "outrigger.simulate"))
                changer = rollout ? .rollout(store!, switchAfter: switchAfterMilliseconds) : .etcd(store!)
            default:
                throw ValidationError("give the mesh as --mesh FILE or --store etcd://HOST:PORT, one of the two")
            }
            let simulator = ControlPlaneSimulator(controls: controls, sidecars: sidecars)
            let outcome: Result<ControlPlaneSimulator.Report, any Error>
            do {
                outcome = .success(try await simulator.run(changer: changer, services: services, changes: changes, controlPIDs: pids))
            } catch {
                outcome = .failure(error)
            }
            await store?.client.close()
            let report = try outcome.get()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(report)
            if let json { try data.write(to: URL(fileURLWithPath: json)) }
            var lines = ["outrigger control simulate: \(sidecars) sidecars, \(services) services, connected and synced in \(String(format: "%.2f", report.connectSeconds)) s"]
            for (index, change) in report.changes.enumerated() {
                lines.append(String(format: "change %d: p50 %.1f ms  p99 %.1f ms  max %.1f ms  (%d sidecars)  control plane CPU %.3f s",
                                    index + 1, change.p50Milliseconds, change.p99Milliseconds, change.maxMilliseconds, change.converged, change.controlCPUSeconds))
                if let total = change.rolloutMilliseconds, let window = change.windowMilliseconds {
                    lines.append(String(format: "  rollout: last switch %.1f ms after the request, window %.1f ms; etcd %d writes, %d bytes; simulator CPU %.3f s",
                                        total, window, change.etcdWrites ?? 0, change.etcdBytes ?? 0, change.simulatorCPUSeconds ?? 0))
                }
            }
            lines.append(String(format: "control plane RSS %.1f MiB (peak %.1f MiB); simulator RSS %.1f MiB", report.controlRSSMiB, report.controlPeakRSSMiB, report.simulatorRSSMiB))
            announce(lines.joined(separator: "\n"))
        }
    }
}

/// Where the control plane's replicas keep the mesh they share.
struct EtcdOptions: ParsableArguments {
    @Option(help: "The mesh's store: etcd://HOST:PORT[,HOST:PORT...] (the cluster's members; IP addresses, or one host name).")
    var store: String?

    @Option(help: "The key prefix everything of this mesh is kept under, in etcd.")
    var prefix: String = "/outrigger"

    /// The mesh files `command` writes to the store: without --store, exit status 2; a file that cannot be read,
    /// its error printed as `validate` prints it, exit status 1.
    func read(_ mesh: String, for command: String) throws -> [MeshConfig.Source] {
        guard store != nil else {
            FileHandle.standardError.write(Data("\(command) needs --store etcd://HOST:PORT[,HOST:PORT...]\n".utf8))
            throw ExitCode(2)
        }
        do {
            return try MeshConfig.read(mesh)
        } catch {
            print(error.description)
            throw ExitCode(1)
        }
    }

    func meshStore(logger: Logger) throws -> EtcdMeshStore {
        guard let store else { throw ValidationError("no --store given") }
        guard store.hasPrefix("etcd://") else { throw ValidationError("--store: expected etcd://HOST:PORT[,HOST:PORT...], got '\(store)'") }
        let list = store.dropFirst("etcd://".count).split(separator: ",", omittingEmptySubsequences: false)
        var endpoints: [HostPort] = []
        for item in list {
            guard let endpoint = HostPort(parsing: String(item)) else {
                throw ValidationError("--store: '\(item)' is not HOST:PORT (in '\(store)')")
            }
            endpoints.append(endpoint)
        }
        guard prefix.hasPrefix("/") else { throw ValidationError("--prefix: expected a key prefix starting with /, got '\(prefix)'") }
        do {
            return EtcdMeshStore(client: try EtcdClient(endpoints: endpoints), prefix: prefix, logger: logger)
        } catch {
            throw ValidationError("--store: \(error)")
        }
    }
}
