import Foundation
import Logging
import NIOConcurrencyHelpers
import OutriggerEtcd

/// The control-plane replicas sharing one etcd, and which of them leads.
///
/// Each replica is the key `PREFIX/replicas/ID` (where it serves xDS and its admin) under a lease of its own that
/// it keeps alive. The leader is the replica whose key is oldest (the lowest create revision): a replica waits for
/// the deletion of the key just older than its own, so when a leader dies (its lease runs out) exactly one replica
/// learns it leads; the others, waiting on the leader's key too, learn which one. A leader's writes are fenced: they compare its key's create revision, so a
/// replica that lost its lease (deposed while it could not reach etcd) cannot write as leader. A replica that has
/// not heard its lease kept alive for three quarters of its time to live steps down, before etcd lets the lease go.
public final class EtcdReplicas: Sendable {
    /// A replica as its key says.
    public struct Member: Codable, Sendable, Equatable {
        public var id: String
        public var xds: String
        public var admin: String?

        public init(id: String, xds: String, admin: String?) {
            self.id = id
            self.xds = xds
            self.admin = admin
        }
    }

    /// Every replica, oldest first: the first one leads.
    public struct Listing: Sendable {
        public var revision: Int64
        public var members: [Member]
        public var leader: Member? { members.first }
    }

    /// Where this replica stands.
    public struct Standing: Sendable, Equatable {
        public var leading = false
        /// The leader's id, as last seen (nil: not known yet, or this replica is not registered now).
        public var leader: String?
        /// This replica's key's create revision while registered: what its writes as leader compare.
        public var fence: Int64?
    }

    public let client: EtcdClient
    let prefix: String
    public let me: Member
    let ttl: Int64
    private let logger: Logger
    private let standing = NIOLockedValueBox(Standing())
    private let onChange: @Sendable (Standing) -> Void

    public init(client: EtcdClient, prefix: String = "/outrigger", me: Member, ttl: Int64 = 5, logger: Logger = Logger(label: "outrigger.etcd"),
                onChange: @escaping @Sendable (Standing) -> Void = { _ in }) {
        self.client = client
        self.prefix = Self.replicas(under: prefix)
        self.me = me
        self.ttl = ttl
        self.logger = logger
        self.onChange = onChange
    }

    public var current: Standing { standing.withLockedValue { $0 } }
    var key: String { prefix + me.id }

    /// A write as leader: `transaction` with a compare that this replica's key still has the create revision it
    /// had when it began to lead. A replica deposed without knowing it yet (its lease ran out while it could not
    /// reach etcd) writes nothing. Throws `notLeading` when this replica does not lead, or the fence held not.
    /// - Parameter fence: the fence the caller began under (a task that outlived a lost and regained leadership
    ///   writes nothing under the new one); nil: the current one.
    public func asLeader(_ transaction: Etcdserverpb_TxnRequest, fence expected: Int64? = nil) async throws -> Etcdserverpb_TxnResponse {
        let standing = current
        guard standing.leading, let fence = standing.fence, expected == nil || expected == fence else { throw EtcdReplicasError.notLeading(me.id) }
        var fenced = transaction
        var compare = Etcdserverpb_Compare()
        compare.key = Data(key.utf8)
        compare.target = .create
        compare.createRevision = fence
        compare.result = .equal
        fenced.compare.insert(compare, at: 0)
        let response = try await client.transaction(fenced)
        if !response.succeeded {
            // Which compare failed is not said: the fence is read to tell a deposed leader from a lost race.
            let now = try await client.read(.key(key)).pairs.first?.createRevision
            if now != fence { throw EtcdReplicasError.notLeading(me.id) }
        }
        return response
    }

    static func replicas(under prefix: String) -> String { EtcdKeyRange.trimmed(prefix) + "/replicas/" }

    /// Every replica registered now.
    public static func list(client: EtcdClient, prefix: String = "/outrigger") async throws -> Listing {
        let read = try await client.read(.prefix(replicas(under: prefix)))
        let members = read.pairs.sorted { $0.createRevision < $1.createRevision }.compactMap { try? JSONDecoder().decode(Member.self, from: $0.value) }
        return Listing(revision: read.revision, members: members)
    }

    /// Registers this replica and campaigns, again after every loss of its lease, until cancelled.
    public func run() async {
        var failures = 0
        var held: Int64?
        while !Task.isCancelled {
            do {
                // The key of an earlier turn goes first, with its lease: a put over it would keep its old create
                // revision, and this replica would wait on itself.
                if let earlier = held {
                    try await client.revokeLease(earlier)
                    held = nil
                }
                let lease = try await client.grantLease(ttl: ttl)
                held = lease
                let created = try await create(lease: lease)
                update { $0.fence = created }
                failures = 0
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await self.keepAlive(lease) }
                    group.addTask { try await self.campaign(created: created) }
                    try await group.next()
                    group.cancelAll()
                }
            } catch {
                if Task.isCancelled { break }
                failures += 1
                logger.warning("lost this replica's place in etcd; registering again", metadata: ["error": "\(error)"])
            }
            update { $0 = Standing() }
            try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
        }
        update { $0 = Standing() }
        // Leave at once rather than when the lease runs out: the next replica leads without waiting. (In a task
        // of its own: this one is cancelled, and a cancelled task's calls fail at once.)
        if let held { await Task { [client] in try? await client.revokeLease(held) }.value }
    }

    /// Creates this replica's key under `lease` (a key of the same id left by someone else is replaced) and
    /// returns its create revision.
    private func create(lease: Int64) async throws -> Int64 {
        let value = Array(try JSONEncoder().encode(me))
        while true {
            var transaction = Etcdserverpb_TxnRequest()
            var absent = Etcdserverpb_Compare()
            absent.key = Data(key.utf8)
            absent.target = .version
            absent.version = 0
            absent.result = .equal
            transaction.compare = [absent]
            transaction.success = [.put(key, value, lease: lease)]
            transaction.failure = [.delete(.key(key))]
            let response = try await client.transaction(transaction)
            // Created by this transaction: its revision is the key's create revision.
            if response.succeeded { return response.header.revision }
        }
    }

    private func update(_ change: (inout Standing) -> Void) {
        let (before, after) = standing.withLockedValue { standing in
            let before = standing
            change(&standing)
            return (before, standing)
        }
        guard before != after else { return }
        if before.leading != after.leading {
            logger.info(after.leading ? "this replica leads" : "this replica no longer leads", metadata: ["replica": "\(me.id)"])
        }
        onChange(after)
    }

    /// Keeps the lease alive; throws once it is gone, or has not been heard kept alive for its time to live.
    private func keepAlive(_ lease: Int64) async throws {
        let heard = NIOLockedValueBox(ContinuousClock.now)
        let gone = NIOLockedValueBox(false)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await self.client.keepAlive(every: .seconds(self.ttl) / 3, leases: { [lease] }) { _, remaining in
                    if remaining > 0 { heard.withLockedValue { $0 = .now } } else { gone.withLockedValue { $0 = true } }
                }
                throw EtcdError.watchCancelled("the keep-alive stream ended")
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: .seconds(self.ttl) / 12)
                    if gone.withLockedValue({ $0 }) { throw EtcdError.watchCancelled("the lease ran out") }
                    // etcd renewed the lease before its answer left: three quarters of the time to live after the
                    // answer is still before etcd lets it go, while an answer takes less than the last quarter.
                    if ContinuousClock.now - heard.withLockedValue({ $0 }) >= .seconds(self.ttl) * 3 / 4 {
                        throw EtcdError.watchCancelled("the lease was not heard kept alive for three quarters of its time to live")
                    }
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// Waits, key by key, until this replica's key is the oldest: then it leads until the lease is lost.
    private func campaign(created: Int64) async throws {
        while true {
            let read = try await client.read(.prefix(prefix))
            let mine = Data(key.utf8)
            let older = read.pairs.filter { $0.key != mine && $0.createRevision < created }.sorted { $0.createRevision < $1.createRevision }
            let leader = older.first.flatMap { try? JSONDecoder().decode(Member.self, from: $0.value) }?.id ?? me.id
            update { $0.leader = leader; $0.leading = older.isEmpty }
            guard let next = older.last else {
                // Leading: nothing to wait for but the loss of the lease (the other task).
                try await Task.sleep(for: .seconds(365 * 24 * 3600))
                continue
            }
            // Until that key or the leader's is deleted (the one to lead next, the other to name the next leader);
            // a compacted start means reading again too. Other replicas coming and going wake nobody.
            let awaited: Set<Data> = [next.key, older[0].key]
            let watched: Result<Void, EtcdError>
            do {
                try await client.watch(.prefix(prefix), from: read.revision + 1) { update in
                    guard case .changes(let events, _) = update else { return true }
                    return !events.contains { $0.type == .delete && awaited.contains($0.kv.key) }
                }
                watched = .success(())
            } catch {
                watched = .failure(error)
            }
            if case .failure(let error) = watched, !error.isCompacted { throw error }
        }
    }
}

public enum EtcdReplicasError: Error, CustomStringConvertible, Equatable {
    case notLeading(String)

    public var description: String {
        switch self {
        case .notLeading(let id): "replica \(id) does not lead (any more): a leader's write was refused"
        }
    }
}
