import Foundation
import OutriggerConfig
import OutriggerEcho
import OutriggerEtcd
import Testing

/// `outrigger control --store etcd://…`: replicas (real processes) sharing one etcd: the mesh and every sidecar's
/// registration, whichever replica it talks to.
@Suite("Control-plane replicas sharing one etcd", .serialized)
struct ControlReplicaTests {
    static func startReplica(store: HostPort) async throws -> (ChildProcess, xds: Int, admin: Int) {
        try await startReplica(stores: [store])
    }

    /// A replica of a store of several members (`etcd://A,B,C`).
    static func startReplica(stores: [HostPort]) async throws -> (ChildProcess, xds: Int, admin: Int) {
        let replica = try ChildProcess(try outriggerExecutable(), [
            "control", "--store", "etcd://" + stores.map(\.description).joined(separator: ","), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--registration-grace-milliseconds", "300", "--registration-ttl-seconds", "2", "--replica-ttl-seconds", "2",
        ])
        let text = try await replica.waitForOutput(containing: "xds on 127.0.0.1:")
        return (replica, try ProcessTests.port(in: text, after: "xds on 127.0.0.1:"), try ProcessTests.port(in: text, after: "admin on 127.0.0.1:"))
    }

    /// A replica's `/status`, as JSON.
    static func status(admin: Int) async throws -> [String: Any] {
        let body = try await fetch("http://127.0.0.1:\(admin)/status").body
        return try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
    }

    /// `outrigger control status --store … --json`.
    static func storeStatus(_ store: HostPort) async throws -> [String: Any] {
        let result = try await run(try outriggerExecutable(), ["control", "status", "--store", "etcd://\(store)", "--json"])
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)\(result.stderr)")
    }

    /// A replica started on an empty store serves an empty mesh, and the first apply reaches it.
    @Test func aReplicaOnAnEmptyStoreServesTheFirstMeshApplied() async throws {
        let etcd = try await EtcdMember.start()
        let (replica, _, admin) = try await Self.startReplica(store: etcd.client)
        defer { replica.kill() }
        try await replica.waitForOutput(containing: "holds no mesh yet")
        #expect(try await Self.status(admin: admin)["services"] as? [String] == [])
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // A directory: its files are one mesh, kept by their names.
        try "services:\n  - name: users\n    endpoints: []\n".write(to: directory.appendingPathComponent("users.yaml"), atomically: true, encoding: .utf8)
        try "services:\n  - name: orders\n    endpoints: []\n".write(to: directory.appendingPathComponent("orders.yaml"), atomically: true, encoding: .utf8)
        let applied = try await run(try outriggerExecutable(), ["control", "apply", directory.path, "--store", "etcd://\(etcd.client)"])
        #expect(applied.status == 0, "\(applied.stdout)\(applied.stderr)")
        try await MeshProcessTests.eventually("the replica serves the applied mesh") {
            (try await Self.status(admin: admin)["services"] as? [String])?.sorted() == ["orders", "users"]
        }
    }

    /// One replica leads (the oldest); when it is killed, the next leads once its lease has run out; one that stops
    /// (SIGTERM) gives its place up at once. `outrigger control status --store` lists them, the leader first.
    @Test func theOldestReplicaLeadsAndTheNextTakesOverWhenItDies() async throws {
        let etcd = try await EtcdMember.start()
        var processes: [ChildProcess] = []
        defer { for process in processes { process.kill() } }
        let (first, _, firstAdmin) = try await Self.startReplica(store: etcd.client)
        processes.append(first)
        try await MeshProcessTests.eventually("the first replica leads") {
            (try await Self.status(admin: firstAdmin)["replica"] as? [String: Any])?["leading"] as? Bool == true
        }
        let firstID = try #require((try await Self.status(admin: firstAdmin)["replica"] as? [String: Any])?["id"] as? String)
        let (second, _, secondAdmin) = try await Self.startReplica(store: etcd.client)
        processes.append(second)
        try await MeshProcessTests.eventually("the second follows the first") {
            let replica = try await Self.status(admin: secondAdmin)["replica"] as? [String: Any]
            return replica?["leader"] as? String == firstID && replica?["leading"] as? Bool == false
        }
        let listed = try await Self.storeStatus(etcd.client)
        let replicas = try #require(listed["replicas"] as? [[String: Any]])
        #expect(replicas.count == 2 && replicas.first?["id"] as? String == firstID && replicas.first?["leader"] as? Bool == true, "\(listed)")
        #expect(replicas.filter { $0["leader"] as? Bool == true }.count == 1)

        first.kill()
        try await MeshProcessTests.eventually("the second leads once the first's lease has run out") {
            (try await Self.status(admin: secondAdmin)["replica"] as? [String: Any])?["leading"] as? Bool == true
        }
        #expect(try await Self.storeStatus(etcd.client)["replicas"].flatMap { $0 as? [[String: Any]] }?.count == 1)

        let secondID = try #require((try await Self.status(admin: secondAdmin)["replica"] as? [String: Any])?["id"] as? String)
        let (third, _, thirdAdmin) = try await Self.startReplica(store: etcd.client)
        processes.append(third)
        let (fourth, _, fourthAdmin) = try await Self.startReplica(store: etcd.client)
        processes.append(fourth)
        try await MeshProcessTests.eventually("the third and fourth follow the second") {
            let third = try await Self.status(admin: thirdAdmin)["replica"] as? [String: Any]
            let fourth = try await Self.status(admin: fourthAdmin)["replica"] as? [String: Any]
            return third?["leader"] as? String == secondID && fourth?["leader"] as? String == secondID
        }
        let thirdID = try #require((try await Self.status(admin: thirdAdmin)["replica"] as? [String: Any])?["id"] as? String)
        second.signal(SIGTERM)
        #expect(await second.waitForExit() == 0)
        try await MeshProcessTests.eventually("the third leads") {
            (try await Self.status(admin: thirdAdmin)["replica"] as? [String: Any])?["leading"] as? Bool == true
        }
        // The fourth waited on the third (its predecessor), and on the leader's key too: it names the new leader.
        try await MeshProcessTests.eventually("the fourth names the third as leader") {
            let fourth = try await Self.status(admin: fourthAdmin)["replica"] as? [String: Any]
            return fourth?["leader"] as? String == thirdID && fourth?["leading"] as? Bool == false
        }
    }

    struct Registration: Decodable {
        var service: String
        var address: String
        var replica: String
    }

    /// A sidecar on one replica is an endpoint for a caller on another; a sidecar whose replica dies moves to the
    /// next and keeps its registration (the key is never deleted); one that cannot move is unregistered when its
    /// lease runs out; a sidecar that dies is unregistered after the grace.
    @Test func sidecarsOnDifferentReplicasReachEachOtherAndARegistrationOutlivesItsReplica() async throws {
        let etcd = try await EtcdMember.start()
        let client = try EtcdClient(endpoints: [etcd.client])
        let app = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "users-app")
        let stranded = try await EchoServer.start(host: "127.0.0.1", port: 0, name: "users-2-app")
        var processes: [ChildProcess] = []
        defer { for process in processes { process.kill() } }
        do {
            let mesh = try ConfigFile()
            try mesh.write("services:\n  - name: users\n    endpoints: []\n    connectTimeout: 2s\n")
            #expect(try await run(try outriggerExecutable(), ["control", "apply", mesh.path, "--store", "etcd://\(etcd.client)"]).status == 0)
            let (replicaA, a, _) = try await Self.startReplica(store: etcd.client)
            processes.append(replicaA)
            let (replicaB, b, _) = try await Self.startReplica(store: etcd.client)
            processes.append(replicaB)

            // users-1 talks to A, and would move to B; users-2 knows only A; web talks to B.
            let users = try await MeshProcessTests.startSidecar(node: "users-1", service: "users", control: a, app: app.localAddress.port!, controlAlso: [b])
            processes.append(users.process)
            let usersTwo = try await MeshProcessTests.startSidecar(node: "users-2", service: "users", control: a, app: stranded.localAddress.port!)
            processes.append(usersTwo.process)
            let web = try await MeshProcessTests.startSidecar(node: "web-1", service: "web", control: b)
            processes.append(web.process)
            var seen: Set<String> = []
            try await MeshProcessTests.eventually("web, on replica B, reaches both users registered through A") {
                seen.insert(try await MeshProcessTests.answer(web.outbound))
                return seen.isSuperset(of: ["users-app", "users-2-app"])
            }

            func registration(_ node: String) async throws -> (created: Int64, entry: Registration)? {
                guard let pair = try await client.read(.key("/outrigger/registrations/\(node)")).pairs.first else { return nil }
                return (pair.createRevision, try JSONDecoder().decode(Registration.self, from: pair.value))
            }
            let before = try #require(try await registration("users-1"))

            // A dies: users-1 moves to B, which takes its registration over; users-2's lease runs out.
            replicaA.kill()
            try await MeshProcessTests.eventually("users-1's registration is B's") {
                try await registration("users-1").map { $0.entry.replica != before.entry.replica } ?? false
            }
            try await MeshProcessTests.eventually("users-2, stranded, is unregistered when its lease runs out") {
                try await registration("users-2") == nil
            }
            let after = try #require(try await registration("users-1"))
            #expect(after.created == before.created, "the registration was never deleted and written again")
            #expect(after.entry.address == before.entry.address && after.entry.service == "users")
            // Round robin over two endpoints alternates: four answers in a row from users-1 mean users-2 is gone.
            try await MeshProcessTests.eventually("web reaches only users-1 now") {
                for _ in 0..<4 where try await MeshProcessTests.answer(web.outbound) != "users-app" { return false }
                return true
            }
            for _ in 0..<5 {
                let answer = try await MeshProcessTests.answer(web.outbound)
                #expect(answer == "users-app", "\(answer)")
            }

            // users-1 dies: B unregisters it after the grace, and web is told.
            users.process.kill()
            try await MeshProcessTests.eventually("users-1 is unregistered") { try await registration("users-1") == nil }
            try await MeshProcessTests.eventually("web has no users endpoint left") {
                try await MeshProcessTests.answer(web.outbound) != "users-app"
            }
        } catch {
            await client.close()
            await app.stop()
            await stranded.stop()
            throw error
        }
        await client.close()
        await app.stop()
        await stranded.stop()
    }
}
