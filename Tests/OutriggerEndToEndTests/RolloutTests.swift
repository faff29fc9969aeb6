import Foundation
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerControl
import OutriggerEcho
import OutriggerEtcd
import Testing

/// `outrigger control rollout`: a mesh to every sidecar of every replica as one generation — prepared everywhere,
/// then committed through the log in etcd, in waves behind a gate — with real processes: etcd, replicas, sidecars.
@Suite("Mesh-wide rollouts: two-phase commit across replicas", .serialized)
struct RolloutTests {
    /// users served by the echo on `port`; `extra` appended to the service.
    static func mesh(users port: Int, extra: String = "") -> String {
        "services:\n  - name: users\n    endpoints: [127.0.0.1:\(port)]\n    connectTimeout: 2s\n" + extra
    }

    static func write(_ text: String) throws -> ConfigFile {
        let file = try ConfigFile()
        try file.write(text)
        return file
    }

    static func apply(_ mesh: ConfigFile, store: String) async throws {
        let applied = try await run(try outriggerExecutable(), ["control", "apply", mesh.path, "--store", store])
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
    }

    static func rollout(_ mesh: ConfigFile, store: String, _ flags: [String] = []) throws -> ChildProcess {
        try ChildProcess(try outriggerExecutable(), ["control", "rollout", mesh.path, "--store", store] + flags)
    }

    /// The rollout record etcd holds last.
    static func lastRollout(_ client: EtcdClient) async throws -> [String: Any]? {
        guard let last = try await client.read(.key("/outrigger/rollouts/last")).pairs.first else { return nil }
        let generation = try #require(UInt64(String(decoding: last.value, as: UTF8.self)))
        guard let pair = try await client.read(.key(EtcdRollouts(client: client).recordKey(generation))).pairs.first else { return nil }
        return try JSONSerialization.jsonObject(with: pair.value) as? [String: Any]
    }

    static func keys(_ client: EtcdClient, under prefix: String) async throws -> [String] {
        try await client.read(.prefix(prefix)).pairs.map { String(decoding: $0.key, as: UTF8.self) }
    }

    /// What a test runs against: etcd (one member, or a 3-member cluster), a client of it, echo apps, and the
    /// processes it starts (killed at the end).
    final class Fixture: Sendable {
        /// The 3-member cluster, when the test runs on one; else the one member.
        let cluster: EtcdCluster?
        let member: EtcdMember?
        let members: [HostPort]
        let client: EtcdClient
        let echoes: [EchoServer]
        private let started = NIOLockedValueBox<[ChildProcess]>([])

        init(cluster: EtcdCluster?, member: EtcdMember?, echoes: [EchoServer]) throws {
            self.cluster = cluster
            self.member = member
            let members = cluster?.clients ?? member.map { [$0.client] } ?? []
            self.members = members
            self.client = try EtcdClient(endpoints: members)
            self.echoes = echoes
        }

        var store: String { "etcd://" + members.map(\.description).joined(separator: ",") }
        func port(_ echo: Int) -> Int { echoes[echo].localAddress.port! }

        @discardableResult
        func keep(_ process: ChildProcess) -> ChildProcess {
            started.withLockedValue { $0.append(process) }
            return process
        }

        func stop() async {
            for process in started.withLockedValue({ $0 }) { process.kill() }
            await client.close()
            for echo in echoes { await echo.stop() }
        }

        /// Runs `body` with echo apps named `echoes` and the mesh `users` → the first applied, then cleans up.
        static func run(cluster: Bool = false, echoes names: [String], _ body: (Fixture) async throws -> Void) async throws {
            let (etcdCluster, member) = cluster ? (try await EtcdCluster.start(), nil) : (nil, try await EtcdMember.start())
            var echoes: [EchoServer] = []
            for name in names { echoes.append(try await EchoServer.start(host: "127.0.0.1", port: 0, name: name)) }
            let fixture = try Fixture(cluster: etcdCluster, member: member, echoes: echoes)
            do {
                try await RolloutTests.apply(try RolloutTests.write(RolloutTests.mesh(users: fixture.port(0))), store: fixture.store)
                try await body(fixture)
            } catch {
                await fixture.stop()
                throw error
            }
            await fixture.stop()
        }
    }

    /// Two replicas, a sidecar on each: a rollout is prepared on both and committed on both; a sidecar that
    /// refuses it aborts it for everyone, and one that does not answer in time too; nobody serves what was not
    /// committed, and an aborted generation leaves nothing in etcd.
    @Test func aRolloutCommitsOnEverySidecarOfEveryReplicaAndOneRefusalOrSilenceAbortsIt() async throws {
        try await Fixture.run(echoes: ["users-v1", "users-v2"]) { f in
            let v1 = try Self.write(Self.mesh(users: f.port(0)))
            let (replicaA, a, adminA) = try await ControlReplicaTests.startReplica(store: f.members[0])
            f.keep(replicaA)
            let (replicaB, b, _) = try await ControlReplicaTests.startReplica(store: f.members[0])
            f.keep(replicaB)
            let web1 = try await MeshProcessTests.startSidecar(node: "web-1", service: "web", control: a)
            f.keep(web1.process)
            let web2 = try await MeshProcessTests.startSidecar(node: "web-2", service: "web", control: b)
            f.keep(web2.process)
            for web in [web1, web2] {
                try await MeshProcessTests.eventually("web serves users-v1") { try await MeshProcessTests.answer(web.outbound) == "users-v1" }
        }

        // Committed: both switch, and the mesh pointer moved with the rollout's end.
        let v2 = try Self.write(Self.mesh(users: f.port(1)))
        let committed = try Self.rollout(v2, store: f.store)
        #expect(await committed.waitForExit() == 0, "\(committed.text)")
        #expect(committed.text.contains("committed (2 sidecars prepared)") && committed.text.contains("completed: every sidecar (2)"), "\(committed.text)")
        // Switched at the instant the rollout named (the command reports it then): each sidecar's swap follows.
        for web in [web1, web2] {
            try await MeshProcessTests.eventually("web serves users-v2") { try await MeshProcessTests.answer(web.outbound) == "users-v2" }
        }
        let record = try #require(try await Self.lastRollout(f.client))
        #expect(record["state"] as? String == "completed" && (record["activated"] as? [String])?.sorted() == ["web-1", "web-2"])
        let status = try await ControlReplicaTests.storeStatus(f.members[0])
        #expect(status["mesh"] as? String == record["version"] as? String, "\(status)")
        #expect((status["sidecars"] as? [[String: Any]])?.allSatisfy { $0["mesh"] as? String == record["version"] as? String } == true, "\(status)")

        // The sidecars cannot prepare it: its upstream CA file is readable (the control plane checks that) but
        // holds no certificate. Aborted for both, saying why.
        let garbage = try Self.write("not a certificate\n")
        let refused = try Self.write(Self.mesh(users: f.port(0), extra: "    tls: {caFile: \(garbage.path)}\n"))
        let aborted = try Self.rollout(refused, store: f.store)
        #expect(await aborted.waitForExit() == 1, "\(aborted.text)")
        // The first refusal to arrive decides.
        #expect(aborted.text.contains("aborted: web-") && aborted.text.contains("refused generation 2: cluster 'users': its tls files do not load"),
                "\(aborted.text)")
        for web in [web1, web2] { #expect(try await MeshProcessTests.answer(web.outbound) == "users-v2", "nothing uncommitted served") }
        let abortedRecord = try #require(try await Self.lastRollout(f.client))
        let abortedVersion = try #require(abortedRecord["version"] as? String)
        #expect(try await Self.keys(f.client, under: "/outrigger/mesh/blobs/\(abortedVersion)/").isEmpty, "an aborted mesh leaves no chunks")
        #expect(try await Self.keys(f.client, under: "/outrigger/rollouts/active").isEmpty)

        // One sidecar does not answer (stopped): the prepare times out, and the rollout is aborted.
        web2.process.signal(SIGSTOP)
        let v1Again = try Self.write(Self.mesh(users: f.port(0), extra: "    # again\n"))
        // The replica waits four fifths of the prepare timeout for its sidecars, then votes: with 1 s, its vote's
        // 200 ms margin was missed under load, and the leader aborted for the missing vote instead.
        let silent = try Self.rollout(v1Again, store: f.store, ["--prepare-timeout", "3s"])
        let silentStatus = await silent.waitForExit()
        web2.process.signal(SIGCONT)
        #expect(silentStatus == 1, "\(silent.text)")
        #expect(silent.text.contains("aborted: web-2 refused generation 3: did not answer within"), "\(silent.text)")
        try await MeshProcessTests.eventually("web-2 answers again") { try await MeshProcessTests.answer(web2.outbound) == "users-v2" }
        #expect(try await MeshProcessTests.answer(web1.outbound) == "users-v2")

        // While a rollout is under way (web-2 stopped again, the prepare waits for it), apply and another rollout
        // are refused, saying why; web-2 woken answers late but in time, and the rollout commits.
        web2.process.signal(SIGSTOP)
        let slow = try Self.rollout(v1Again, store: f.store, ["--prepare-timeout", "60s"])
        try await slow.waitForOutput(containing: "preparing on the sidecars of 2 replica(s)")
        let applied = try await run(try outriggerExecutable(), ["control", "apply", v1.path, "--store", f.store])
        let refusedToo = try await run(try outriggerExecutable(), ["control", "rollout", v1.path, "--store", f.store])
        web2.process.signal(SIGCONT)
        for result in [applied, refusedToo] {
            #expect(result.status == 1 && result.stderr.contains("the rollout of generation 4 is under way; nothing was written"), "\(result.stdout)\(result.stderr)")
        }
        #expect(await slow.waitForExit() == 0, "\(slow.text)")
        for web in [web1, web2] {
            try await MeshProcessTests.eventually("web serves users-v1") { try await MeshProcessTests.answer(web.outbound) == "users-v1" }
        }
        let replicaStatus = try await ControlReplicaTests.status(admin: adminA)
        #expect(replicaStatus["rollout"] == nil, "a completed rollout leaves no overlay: \(replicaStatus)")
        }
    }

    /// A wave whose canary starts failing is rolled back automatically, under load: the gate reads the canary's
    /// `/stats/prometheus` over the soak, finds its error ratio over the limit, and the canary is served the mesh before
    /// again; the sidecar of the next wave never switched.
    @Test func aCanaryWaveThatStartsFailingIsRolledBackUnderLoad() async throws {
        try await Fixture.run(echoes: ["users-v1"]) { f in
            let (replica, xds, _) = try await ControlReplicaTests.startReplica(store: f.members[0])
            f.keep(replica)
            let canary = try await MeshProcessTests.startSidecar(node: "web-1", service: "web", control: xds, admin: true)
            f.keep(canary.process)
            let next = try await MeshProcessTests.startSidecar(node: "web-2", service: "web", control: xds, admin: true)
            f.keep(next.process)
            for web in [canary, next] {
                try await MeshProcessTests.eventually("web serves users-v1") { try await MeshProcessTests.answer(web.outbound) == "users-v1" }
        }

        // Load through both sidecars for as long as the rollout lasts; each answer's status counted.
        let counts = NIOLockedValueBox<[String: Int]>([:])
        let load = Task {
            while !Task.isCancelled {
                for (name, web) in [("web-1", canary), ("web-2", next)] {
                    let status = try? await curl(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: users", "http://127.0.0.1:\(web.outbound)/"]).stdout
                    counts.withLockedValue { $0["\(name) \(status ?? "none")", default: 0] += 1 }
                }
            }
        }
        // The change: users has no endpoint left. Every request to it is a local 503.
        let broken = try Self.write("services:\n  - name: users\n    endpoints: []\n")
        let rollout = try Self.rollout(broken, store: f.store, ["--wave", "50,100", "--soak", "2s", "--gate", "error-ratio<5%,p99<2s"])
        let status = await rollout.waitForExit()
        load.cancel()
        _ = await load.value
        #expect(status == 1, "\(rollout.text)")
        #expect(rollout.text.contains("activated on 1 of 2"), "\(rollout.text)")
        #expect(rollout.text.contains("rolled back to mesh") && rollout.text.contains("wave 1 (1 of 2 sidecars): error ratio"), "\(rollout.text)")
        let seen = counts.withLockedValue { $0 }
        #expect((seen["web-1 503"] ?? 0) > 0, "the canary failed requests while it ran the change: \(seen)")
        #expect(seen["web-2 503"] == nil, "the next wave never switched: \(seen)")
        try await MeshProcessTests.eventually("the canary serves users-v1 again") { try await MeshProcessTests.answer(canary.outbound) == "users-v1" }
        let record = try #require(try await Self.lastRollout(f.client))
        #expect(record["state"] as? String == "rolledBack" && (record["reason"] as? String)?.contains("is not below 5%") == true, "\(record)")
        let listed = try await ControlReplicaTests.storeStatus(f.members[0])
        #expect((listed["rollout"] as? [String: Any])?["state"] as? String == "rolledBack", "\(listed)")
        #expect(listed["mesh"] as? String == record["previous"] as? String, "the mesh pointer never moved")
        }
    }

    /// On a 3-member etcd cluster: the leader killed between two waves → the next replica leads and finishes the
    /// rollout from the log (committed: it completes). The leader killed while sidecars prepare → its successor
    /// finds no decision and aborts (presumed abort): no sidecar ever serves that generation. Quorum lost →
    /// rollouts are refused with etcd's error, and the sidecars keep serving.
    @Test func aLeaderKilledMidRolloutIsReplacedAndItsSuccessorFinishesFromTheLog() async throws {
        try await Fixture.run(cluster: true, echoes: ["users-v1", "users-v2"]) { f in
            let v1 = try Self.write(Self.mesh(users: f.port(0)))
            let (replicaA, a, adminA) = try await ControlReplicaTests.startReplica(stores: f.members)
            f.keep(replicaA)
            try await MeshProcessTests.eventually("A leads") {
                (try await ControlReplicaTests.status(admin: adminA)["replica"] as? [String: Any])?["leading"] as? Bool == true
        }
        let (replicaB, b, adminB) = try await ControlReplicaTests.startReplica(stores: f.members)
        f.keep(replicaB)
        let web1 = try await MeshProcessTests.startSidecar(node: "web-1", service: "web", control: a, controlAlso: [b])
        f.keep(web1.process)
        let web2 = try await MeshProcessTests.startSidecar(node: "web-2", service: "web", control: b, controlAlso: [a])
        f.keep(web2.process)
        for web in [web1, web2] {
            try await MeshProcessTests.eventually("web serves users-v1") { try await MeshProcessTests.answer(web.outbound) == "users-v1" }
        }

        // Committed, the first wave (web-1) activated: A is killed during the soak.
        let v2 = try Self.write(Self.mesh(users: f.port(1)))
        let rollout = try Self.rollout(v2, store: f.store, ["--wave", "50,100", "--soak", "5s"])
        try await rollout.waitForOutput(containing: "activated on 1 of 2")
        try await MeshProcessTests.eventually("web-1 serves users-v2") { try await MeshProcessTests.answer(web1.outbound) == "users-v2" }
        #expect(try await MeshProcessTests.answer(web2.outbound) == "users-v1", "the second wave waits for the soak")
        replicaA.kill()
        #expect(await rollout.waitForExit() == 0, "B finished it from the log: \(rollout.text)")
        #expect(rollout.text.contains("completed: every sidecar (2)"), "\(rollout.text)")
        for web in [web1, web2] {
            try await MeshProcessTests.eventually("web serves users-v2") { try await MeshProcessTests.answer(web.outbound) == "users-v2" }
        }
        let finished = try #require(try await Self.lastRollout(f.client))
        let leaderB = try #require((try await ControlReplicaTests.status(admin: adminB)["replica"] as? [String: Any])?["id"] as? String)
        #expect(finished["leader"] as? String == leaderB, "\(finished)")

        // C joins; web-2 stops answering, so B's vote waits; B (the leader) is killed while they prepare.
        let (replicaC, _, adminC) = try await ControlReplicaTests.startReplica(stores: f.members)
        f.keep(replicaC)
        web2.process.signal(SIGSTOP)
        let v3 = try Self.write(Self.mesh(users: f.port(0), extra: "    # v3\n"))
        let undecided = try Self.rollout(v3, store: f.store, ["--prepare-timeout", "60s"])
        try await undecided.waitForOutput(containing: "preparing on the sidecars of 2 replica(s)")
        replicaB.kill()
        let undecidedStatus = await undecided.waitForExit()
        web2.process.signal(SIGCONT)
        #expect(undecidedStatus == 1, "\(undecided.text)")
        #expect(undecided.text.contains("aborted: the leader changed before generation 2 was decided (presumed abort)"), "\(undecided.text)")
        #expect((try await ControlReplicaTests.status(admin: adminC)["replica"] as? [String: Any])?["leading"] as? Bool == true)
        for web in [web1, web2] {
            try await MeshProcessTests.eventually("web moved to C and serves users-v2, never the undecided v3") {
                try await MeshProcessTests.answer(web.outbound) == "users-v2"
            }
        }

        // Quorum lost: a rollout is refused with etcd's error; the sidecars keep serving.
        let cluster = try #require(f.cluster)
        await cluster.stop(1)
        await cluster.stop(2)
        let refused = try await run(try outriggerExecutable(), ["control", "rollout", v1.path, "--store", f.store])
        #expect(refused.status == 1 && refused.stderr.contains("outrigger control rollout:"), "\(refused.stdout)\(refused.stderr)")
        for web in [web1, web2] { #expect(try await MeshProcessTests.answer(web.outbound) == "users-v2") }
        }
    }

    /// The rollout benchmark's path (`outrigger control simulate --rollout`), small: simulated sidecars on two replicas
    /// ACK PREPARE and COMMIT; every rollout completes and is measured, with etcd's writes (one wave: the staged chunk,
    /// the request, preparing, two votes, the decision with the wave and the end).
    @Test func theRolloutBenchmarkMeasuresEveryRollout() async throws {
        try await Fixture.run(echoes: ["users-v1"]) { f in
            let (replicaA, a, _) = try await ControlReplicaTests.startReplica(store: f.members[0])
            f.keep(replicaA)
            let (replicaB, b, _) = try await ControlReplicaTests.startReplica(store: f.members[0])
            f.keep(replicaB)
            let report = try ConfigFile()
            let simulated = try await run(try outriggerExecutable(), [
                "control", "simulate", "--store", f.store, "--control", "127.0.0.1:\(a),127.0.0.1:\(b)",
                "--control-pid", "\(replicaA.pid),\(replicaB.pid)", "--sidecars", "20", "--services", "3", "--changes", "2", "--rollout",
                "--json", report.path,
            ])
            #expect(simulated.status == 0, "\(simulated.stdout)\(simulated.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report.path))) as? [String: Any])
            let changes = try #require(object["changes"] as? [[String: Any]])
            #expect(changes.count == 2)
            for change in changes {
                #expect(change["converged"] as? Int == 20 && change["etcdWrites"] as? Int == 6, "\(change)")
                let total = try #require(change["rolloutMilliseconds"] as? Double)
                let window = try #require(change["windowMilliseconds"] as? Double)
                #expect(total > 0 && window >= 0 && window <= total, "\(change)")
            }
        }
    }
}
