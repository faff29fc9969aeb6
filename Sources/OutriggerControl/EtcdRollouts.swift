import Foundation
import OutriggerConfig
import OutriggerEtcd

/// A mesh-wide rollout as it is kept in etcd: the durable log every replica follows and the leader writes.
public struct RolloutRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// Asked for (`outrigger control rollout`); no leader has taken it up yet.
        case requested
        /// The leader asked every replica to prepare its sidecars; votes are coming in.
        case preparing
        /// The decision *commit* is written: waves are being activated.
        case committed
        case completed
        case aborted
        /// Committed, then rolled back to the mesh before by a gate breach.
        case rolledBack
    }

    /// A target sidecar, and where its admin answers (the gate reads its `/stats/prometheus` there).
    public struct Target: Codable, Sendable, Equatable {
        public var node: String
        public var admin: String?
    }

    public var generation: UInt64
    /// The mesh rolled out: its version, staged under `mesh/blobs/VERSION` in `chunks` chunks.
    public var version: String
    public var chunks: Int
    /// The current mesh it replaces (G − 1): what a rollback serves again.
    public var previous: String?
    public var options: RolloutOptions
    public var state: State = .requested
    /// The replica that leads it (the last one to write it).
    public var leader: String?
    /// The replicas asked to vote.
    public var voters: [String] = []
    /// With the decision *commit*: every target, in the order waves take them.
    public var targets: [Target] = []
    /// The sidecars activated so far.
    public var activated: [String] = []
    /// When the last wave's sidecars switch (milliseconds since the Unix epoch; nil: each when its COMMIT comes).
    public var switchAt: Int64?
    /// Why it was aborted or rolled back.
    public var reason: String?

    public var isFinished: Bool { state == .completed || state == .aborted || state == .rolledBack }

    var plan: RolloutStateMachine.Plan {
        get throws {
            RolloutStateMachine.Plan(generation: generation, waves: options.waves, prepareTimeout: .milliseconds(options.prepareTimeoutMilliseconds),
                                     soak: .milliseconds(options.soakMilliseconds), gate: try RolloutGate(parsing: options.gate))
        }
    }
}

/// How a rollout goes, as `outrigger control rollout`'s flags give it.
public struct RolloutOptions: Codable, Sendable, Equatable {
    /// Cumulative percentages of the sidecars, the last 100.
    public var waves: [Int]
    public var prepareTimeoutMilliseconds: Int64
    public var soakMilliseconds: Int64
    /// How long after the leader writes a wave its sidecars switch, all at that instant (0: each on its COMMIT).
    public var switchAfterMilliseconds: Int64
    /// As given to `--gate` (empty: none).
    public var gate: String

    public init(waves: [Int] = [100], prepareTimeoutMilliseconds: Int64 = 5000, soakMilliseconds: Int64 = 10_000,
                switchAfterMilliseconds: Int64 = 150, gate: String = "") {
        self.waves = waves
        self.prepareTimeoutMilliseconds = prepareTimeoutMilliseconds
        self.soakMilliseconds = soakMilliseconds
        self.switchAfterMilliseconds = switchAfterMilliseconds
        self.gate = gate
    }

    /// Checks the flags; the error says which and what was expected.
    public init(waves text: String, prepareTimeout: String, soak: String, switchAfter: String, gate: String) throws {
        let waves = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !waves.isEmpty, waves.allSatisfy({ $0 != nil && (1...100).contains($0!) }), waves.map({ $0! }) == waves.map({ $0! }).sorted(),
              waves.last! == 100 else {
            throw RolloutPlanError("--wave: '\(text)': expected growing percentages of the sidecars ending at 100, e.g. 1,10,50,100")
        }
        guard let prepare = ConfigDuration.parse(prepareTimeout), prepare > .zero, prepare <= .seconds(3600) else {
            throw RolloutPlanError("--prepare-timeout: '\(prepareTimeout)': expected a duration up to an hour, e.g. 5s or 500ms")
        }
        guard let soakTime = ConfigDuration.parse(soak), soakTime <= .seconds(86_400) else {
            throw RolloutPlanError("--soak: '\(soak)': expected a duration up to a day, e.g. 10s or 500ms")
        }
        guard let switchTime = ConfigDuration.parse(switchAfter), switchTime <= .seconds(10) else {
            throw RolloutPlanError("--switch-after: '\(switchAfter)': expected a duration up to 10s, e.g. 150ms, or 0s to switch on receipt")
        }
        do {
            _ = try RolloutGate(parsing: gate)
        } catch {
            throw RolloutPlanError(error.description)
        }
        self.init(waves: waves.map { $0! }, prepareTimeoutMilliseconds: prepare.nanoseconds / 1_000_000, soakMilliseconds: soakTime.nanoseconds / 1_000_000,
                  switchAfterMilliseconds: switchTime.nanoseconds / 1_000_000, gate: gate)
    }
}

public struct RolloutPlanError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// A replica's vote on a rollout: each of its sidecars' answer to the prepare.
struct RolloutVote: Codable, Sendable, Equatable {
    struct Answer: Codable, Sendable, Equatable {
        /// Why not prepared (nil: prepared).
        var refusal: String?
        var admin: String?
    }

    var answers: [String: Answer]
}

/// The rollouts under `PREFIX/rollouts/`:
/// - `active`: the generation under way (absent: none); `apply` and a new rollout compare it absent;
/// - `last`: the last generation requested (generations are numbered from it);
/// - `GGGGGGGGGGGGGGGGGGGG` (20 digits): each rollout's record, the leader's log of it;
/// - `G…/votes/REPLICA`: each replica's vote.
public struct EtcdRollouts: Sendable {
    public let client: EtcdClient
    let prefix: String

    public init(client: EtcdClient, prefix: String = "/outrigger") {
        self.client = client
        self.prefix = Self.rollouts(under: prefix)
    }

    static func rollouts(under prefix: String) -> String { EtcdKeyRange.trimmed(prefix) + "/rollouts/" }
    static func activeKey(under prefix: String) -> String { rollouts(under: prefix) + "active" }
    var activeKey: String { prefix + "active" }
    var lastKey: String { prefix + "last" }
    public func recordKey(_ generation: UInt64) -> String { prefix + EtcdKeyRange.ordered(generation, digits: 20) }
    func votesPrefix(_ generation: UInt64) -> String { recordKey(generation) + "/votes/" }
    var watched: EtcdKeyRange { .prefix(prefix) }

    /// The compare that no rollout is under way.
    static func noRollout(under prefix: String) -> Etcdserverpb_Compare {
        var compare = Etcdserverpb_Compare()
        compare.key = Data(activeKey(under: prefix).utf8)
        compare.target = .version
        compare.version = 0
        compare.result = .equal
        return compare
    }

    public func activeGeneration() async throws -> UInt64? {
        try await client.read(.key(activeKey)).pairs.first.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) }
    }

    /// The rollout under way, else the last one.
    public func latest() async throws -> RolloutRecord? {
        let (last, revision) = try await last()
        guard let last else { return nil }
        return try await record(last, at: revision)
    }

    /// The record of `generation` (at `revision`, 0: now); nil when there is none, or it does not decode.
    public func record(_ generation: UInt64, at revision: Int64 = 0) async throws -> RolloutRecord? {
        try await client.read(.key(recordKey(generation)), at: revision).pairs.first.flatMap { try? JSONDecoder().decode(RolloutRecord.self, from: $0.value) }
    }

    /// The last generation requested, and the revision it was read at.
    func last() async throws -> (generation: UInt64?, revision: Int64) {
        let read = try await client.read(.key(lastKey))
        return (read.pairs.first.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) }, read.revision)
    }

    /// Writes a new rollout of `staged`, numbered after the last, if none is under way and the current mesh is still
    /// the one staged against. Returns its generation.
    public func request(_ staged: EtcdMeshStore.Staged, store: EtcdMeshStore, options: RolloutOptions) async throws -> UInt64 {
        for _ in 0..<5 {
            let last = try await client.read(.key(lastKey)).pairs.first
            let generation = (last.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 0) + 1
            let record = RolloutRecord(generation: generation, version: staged.version, chunks: staged.chunks, previous: staged.previous, options: options)
            var transaction = Etcdserverpb_TxnRequest()
            var numbered = Etcdserverpb_Compare()
            numbered.key = Data(lastKey.utf8)
            numbered.target = .mod
            numbered.modRevision = last?.modRevision ?? 0
            numbered.result = .equal
            transaction.compare = [Self.noRollout(under: store.prefix), numbered,
                                   store.pointerUnchanged(since: staged.pointerRevision)]
            transaction.success = [.put(activeKey, Array(String(generation).utf8)), .put(lastKey, Array(String(generation).utf8)),
                                   .put(recordKey(generation), Array(try JSONEncoder().encode(record)))]
            if try await client.transaction(transaction).succeeded { return generation }
            if let active = try await activeGeneration() { throw EtcdMeshStoreError.rolloutInProgress(store.description, active) }
            if try await client.read(.key(store.currentKey)).pairs.first?.modRevision ?? 0 != staged.pointerRevision {
                throw EtcdMeshStoreError.contended(store.description)
            }
        }
        throw EtcdMeshStoreError.contended(store.description)
    }

    func votes(_ generation: UInt64, at revision: Int64 = 0) async throws -> [String: RolloutVote] {
        let read = try await client.read(.prefix(votesPrefix(generation)), at: revision)
        var votes: [String: RolloutVote] = [:]
        for pair in read.pairs {
            guard let vote = try? JSONDecoder().decode(RolloutVote.self, from: pair.value) else { continue }
            votes[String(decoding: pair.key.dropFirst(votesPrefix(generation).utf8.count), as: UTF8.self)] = vote
        }
        return votes
    }

    func vote(_ generation: UInt64, replica: String, _ vote: RolloutVote) async throws {
        try await client.put(votesPrefix(generation) + replica, Array(try JSONEncoder().encode(vote)))
    }

    /// The leader's end of a rollout it cannot read: `generation` is no longer the active one (fenced).
    func release(_ generation: UInt64, by replicas: EtcdReplicas, fence: Int64?) async throws {
        var transaction = Etcdserverpb_TxnRequest()
        transaction.compare = [activeIs(generation)]
        transaction.success = [.delete(.key(activeKey))]
        _ = try await replicas.asLeader(transaction, fence: fence)
    }

    private func activeIs(_ generation: UInt64) -> Etcdserverpb_Compare {
        var active = Etcdserverpb_Compare()
        active.key = Data(activeKey.utf8)
        active.target = .value
        active.value = Data(String(generation).utf8)
        active.result = .equal
        return active
    }

    /// The leader's write of `record`, with `operations` in the same transaction; a finished rollout is no longer
    /// the active one. Fenced by the leader's key.
    func write(_ record: RolloutRecord, by replicas: EtcdReplicas, fence: Int64?, with operations: [Etcdserverpb_RequestOp] = []) async throws {
        var transaction = Etcdserverpb_TxnRequest()
        transaction.compare = [activeIs(record.generation)]
        transaction.success = [.put(recordKey(record.generation), Array(try JSONEncoder().encode(record)))] + operations
        if record.isFinished { transaction.success.append(.delete(.key(activeKey))) }
        guard try await replicas.asLeader(transaction, fence: fence).succeeded else { throw RolloutWriteError.notActive(record.generation) }
    }
}

enum RolloutWriteError: Error, CustomStringConvertible {
    case notActive(UInt64)
    case unreadable(UInt64)

    var description: String {
        switch self {
        case .notActive(let generation): "generation \(generation) is not the rollout under way any more"
        case .unreadable(let generation): "the record of generation \(generation), the rollout under way, is missing or does not decode"
        }
    }
}
