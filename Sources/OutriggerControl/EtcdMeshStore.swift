import Foundation
import Logging
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerEtcd

/// The mesh kept in etcd, where every control-plane replica reads it: `outrigger control apply` writes it, each
/// replica follows it.
///
/// Under the prefix (`/outrigger` by default):
/// - `mesh/current`: which mesh is the current one — its version (the hash of its files, as `MeshFileStore`
///   versions a mesh) and how many chunks hold it;
/// - `mesh/blobs/VERSION/NNNNNN`: the mesh's files, encoded, in chunks of at most 1 MiB (etcd takes at most
///   1.5 MiB per request).
///
/// A change is one transaction that compares `mesh/current` with what the writer read, puts the new pointer and
/// deletes the replaced mesh's chunks: readers see the old mesh or the new one, never a mix, and two writers at
/// once cannot both win. A mesh of one chunk goes in that same transaction; a larger one's chunks are written
/// first, under their version, where nothing reads them until the pointer moves.
///
/// A replica reads every key under `mesh/` at one revision R (in pages, each at R) and watches `mesh/current`
/// from R + 1. A watch whose start was compacted away is not resumed: the replica reads the mesh again and
/// watches from there (what changed in between is unknown; etcd-io/etcd#8668).
public final class EtcdMeshStore: MeshStore {
    public let client: EtcdClient
    public let prefix: String
    private let logger: Logger
    /// The newest revision at which the store is known to have held each version it was seen holding last.
    private let seen = NIOLockedValueBox<(version: String, revision: Int64)?>(nil)
    private let compactions = NIOLockedValueBox(0)

    public init(client: EtcdClient, prefix: String = "/outrigger", logger: Logger = Logger(label: "outrigger.etcd")) {
        self.client = client
        self.prefix = EtcdKeyRange.trimmed(prefix)
        self.logger = logger
    }

    public var description: String {
        "etcd://" + client.endpoints.map(\.description).joined(separator: ",") + prefix
    }

    var currentKey: String { prefix + "/mesh/current" }
    var meshPrefix: String { prefix + "/mesh/" }
    func blobPrefix(_ version: String) -> String { prefix + "/mesh/blobs/\(version)/" }

    /// Watches that had to start again from a new read because their start revision was compacted.
    public var compactedWatches: Int { compactions.withLockedValue { $0 } }

    // MARK: Reading

    public func snapshot() async throws -> MeshSnapshot {
        // Pages of two keys: a chunk is up to 1 MiB, and gRPC takes responses of up to 4 MiB.
        let read: EtcdClient.Read
        do {
            read = try await client.read(.prefix(meshPrefix), pageSize: 2)
        } catch {
            throw MeshStoreUnreadable(description: "\(error)")
        }
        let stored = try StoredMesh(reading: read.pairs, store: self)
        let mesh = try Self.mesh(of: stored, store: description)
        seen.withLockedValue { $0 = (stored.version, read.revision) }
        return MeshSnapshot(mesh: mesh, version: stored.version)
    }

    private static func mesh(of stored: StoredMesh, store: String) throws -> MeshConfig {
        let mesh = try MeshConfig.load(stored.sources, path: store)
        try MeshView.check(mesh)
        return mesh
    }

    /// A mesh kept under its version (a rollout's, staged before it is the current one).
    public func load(version: String, chunks: Int) async throws -> MeshConfig {
        let read: EtcdClient.Read
        do {
            read = try await client.read(.prefix(blobPrefix(version)), pageSize: 2)
        } catch {
            throw MeshStoreUnreadable(description: "\(error)")
        }
        return try Self.mesh(of: try StoredMesh(version: version, chunks: chunks, reading: read.pairs, store: self), store: description)
    }

    public func currentVersion() async -> String {
        do {
            let read = try await client.read(.key(currentKey))
            let version = Self.pointedVersion(read) ?? ""
            seen.withLockedValue { $0 = (version, read.revision) }
            return version
        } catch {
            return seen.withLockedValue { $0?.version } ?? ""
        }
    }

    public func waitForChange(after version: String) async throws {
        var failures = 0
        while true {
            try Task.checkCancellation()
            do {
                let start: Int64
                if let known = seen.withLockedValue({ $0 }), known.version == version {
                    start = known.revision + 1
                } else {
                    let read = try await client.read(.key(currentKey))
                    let now = Self.pointedVersion(read) ?? ""
                    if now != version { return }
                    seen.withLockedValue { $0 = (version, read.revision) }
                    start = read.revision + 1
                }
                try await client.watch(.key(currentKey), from: start) { [seen] update in
                    switch update {
                    case .changes: return false
                    case .progress(let revision):
                        // Nothing changed up to `revision`: a watch started again begins after it.
                        seen.withLockedValue { if $0?.version == version { $0?.revision = revision } }
                        return true
                    }
                }
                return
            } catch .compacted {
                compactions.withLockedValue { $0 += 1 }
                seen.withLockedValue { $0 = nil }
                logger.info("the mesh's watch started at a compacted revision; reading the mesh again", metadata: ["store": "\(description)"])
                return
            } catch {
                try Task.checkCancellation()
                failures += 1
                logger.warning("cannot follow the mesh in etcd; serving the last one read", metadata: ["store": "\(description)", "error": "\(error)"])
                try await Task.sleep(for: ReconnectBackoff.delay(after: failures))
            }
        }
    }

    // MARK: Writing

    public enum Applied: Sendable, Equatable {
        /// The store held this mesh already.
        case unchanged(version: String)
        case applied(version: String, revision: Int64)
    }

    /// Validates the mesh (as `validate` does, plus what a control plane checks before serving it) and makes it
    /// the store's current mesh. A broken mesh throws its `ConfigErrors` and writes nothing.
    public func apply(_ read: [MeshConfig.Source], path: String) async throws -> Applied {
        let (sources, version) = try Self.validated(read, path: path)
        let chunks = StoredMesh.chunks(of: sources)
        let inline = chunks.count == 1
        // Someone else's change between this writer's read and its write fails the compare: read again, and
        // write again (a larger mesh's chunks too: the other change may have deleted them, had it replaced
        // this very version).
        for _ in 0..<5 {
            let read = try await client.read(.key(currentKey))
            let previous = read.pairs.first
            let previousVersion = Self.pointedVersion(read)
            if previousVersion == version { return .unchanged(version: version) }
            if !inline {
                for (index, chunk) in chunks.enumerated() { try await client.put(chunkKey(version, index), chunk) }
            }
            var transaction = Etcdserverpb_TxnRequest()
            // Not while a rollout is under way: it moves the pointer itself when it completes.
            transaction.compare = [pointerUnchanged(since: previous?.modRevision ?? 0), EtcdRollouts.noRollout(under: prefix)]
            if inline { transaction.success.append(.put(chunkKey(version, 0), chunks[0])) }
            transaction.success += pointerMoves(to: version, chunks: chunks.count, replacing: previousVersion)
            let response = try await client.transaction(transaction)
            if response.succeeded { return .applied(version: version, revision: response.header.revision) }
            if let generation = try await EtcdRollouts(client: client, prefix: prefix).activeGeneration() {
                throw EtcdMeshStoreError.rolloutInProgress(description, generation)
            }
        }
        throw EtcdMeshStoreError.contended(description)
    }

    /// A mesh written under its version for a rollout, not the current one yet.
    public struct Staged: Sendable, Equatable {
        public var version: String
        public var chunks: Int
        /// The current mesh it would replace, and the mod revision of the pointer naming it (0: none).
        public var previous: String?
        public var pointerRevision: Int64
    }

    /// Validates the mesh as `apply` does and writes its chunks under its version, leaving the current mesh as it
    /// is. Throws `unchanged` when the store holds that mesh already.
    public func stage(_ read: [MeshConfig.Source], path: String) async throws -> Staged {
        let (sources, version) = try Self.validated(read, path: path)
        let current = try await client.read(.key(currentKey))
        let previous = Self.pointedVersion(current)
        if previous == version { throw EtcdMeshStoreError.unchanged(description, version) }
        let chunks = StoredMesh.chunks(of: sources)
        for (index, chunk) in chunks.enumerated() { try await client.put(chunkKey(version, index), chunk) }
        return Staged(version: version, chunks: chunks.count, previous: previous, pointerRevision: current.pairs.first?.modRevision ?? 0)
    }

    /// The operations that make a staged mesh the current one, deleting the chunks of the one it replaces.
    func pointerMoves(to version: String, chunks: Int, replacing previous: String?) -> [Etcdserverpb_RequestOp] {
        var operations: [Etcdserverpb_RequestOp] = [.put(currentKey, StoredMesh.Pointer(version: version, chunks: chunks).encoded)]
        if let previous, previous != version { operations.append(.delete(.prefix(blobPrefix(previous)))) }
        return operations
    }

    /// A transaction deleting the chunks of a staged mesh unless it is the current one (its pointer compared: a
    /// value compare fails on a missing key, so the deletion is the failure branch and works on an empty store too).
    public func discarding(_ staged: Staged) -> Etcdserverpb_TxnRequest {
        var transaction = Etcdserverpb_TxnRequest()
        var current = Etcdserverpb_Compare()
        current.key = Data(currentKey.utf8)
        current.target = .value
        current.value = Data(StoredMesh.Pointer(version: staged.version, chunks: staged.chunks).encoded)
        current.result = .equal
        transaction.compare = [current]
        transaction.failure = [.delete(.prefix(blobPrefix(staged.version)))]
        return transaction
    }

    /// The compare that `mesh/current` is still at `revision` (0: still absent).
    func pointerUnchanged(since revision: Int64) -> Etcdserverpb_Compare {
        var compare = Etcdserverpb_Compare()
        compare.key = Data(currentKey.utf8)
        if revision > 0 {
            compare.target = .mod
            compare.modRevision = revision
        } else {
            compare.target = .version
            compare.version = 0
        }
        compare.result = .equal
        return compare
    }

    /// The mesh's files as they are stored, and its version, once it is valid (as `validate` checks it, plus what a
    /// control plane checks before serving it). Kept by their names within what was applied (a file's own name, a
    /// directory's files' names), so the same mesh has the same version wherever it was applied from.
    private static func validated(_ read: [MeshConfig.Source], path: String) throws -> (sources: [MeshConfig.Source], version: String) {
        try MeshView.check(try MeshConfig.load(read, path: path))
        let sources = read.map { MeshConfig.Source(file: storedName(of: $0.file, appliedAs: path), text: $0.text) }
        return (sources, MeshFileStore.version(of: sources.map { ($0.file, $0.text) }))
    }

    static func storedName(of file: String, appliedAs path: String) -> String {
        let directory = path.hasSuffix("/") ? path : path + "/"
        if file.hasPrefix(directory) { return String(file.dropFirst(directory.count)) }
        return String(file.split(separator: "/").last ?? Substring(file))
    }

    /// The version a read of `mesh/current` names (nil: none, or not a pointer).
    static func pointedVersion(_ read: EtcdClient.Read) -> String? {
        read.pairs.first.flatMap { try? StoredMesh.Pointer(decoding: $0.value).version }
    }

    func chunkKey(_ version: String, _ index: Int) -> String {
        blobPrefix(version) + EtcdKeyRange.ordered(index, digits: 6)
    }
}

/// A mesh as it is kept in etcd: the pointer to the current version, and the chunks of that version's files.
struct StoredMesh {
    /// Chunks of at most 1 MiB: a put of one stays under etcd's 1.5 MiB per request.
    static let chunkBytes = 1 << 20

    struct Pointer: Codable {
        var version: String
        var chunks: Int

        init(version: String, chunks: Int) {
            self.version = version
            self.chunks = chunks
        }

        init(decoding bytes: Data) throws {
            self = try JSONDecoder().decode(Pointer.self, from: bytes)
        }

        var encoded: [UInt8] { Array((try? JSONEncoder().encode(self)) ?? Data()) }
    }

    struct File: Codable {
        var name: String
        var text: String
    }

    let version: String
    let sources: [MeshConfig.Source]

    static func chunks(of sources: [MeshConfig.Source]) -> [[UInt8]] {
        let encoded = Array((try? JSONEncoder().encode(sources.map { File(name: $0.file, text: $0.text) })) ?? Data())
        return stride(from: 0, to: max(encoded.count, 1), by: chunkBytes).map { Array(encoded[$0..<min($0 + chunkBytes, encoded.count)]) }
    }

    /// The mesh the pointer names, from the keys under `mesh/` read at one revision (a mesh being written has
    /// chunks there too, under its own version: they are not this one's).
    init(reading pairs: [Mvccpb_KeyValue], store: EtcdMeshStore) throws {
        let currentKey = Data(store.currentKey.utf8)
        guard let current = pairs.first(where: { $0.key == currentKey }) else { throw EtcdMeshStoreError.empty(store.description) }
        let pointer: Pointer
        do {
            pointer = try Pointer(decoding: current.value)
        } catch {
            throw EtcdMeshStoreError.damaged(store.description, "\(store.currentKey) is not a mesh pointer")
        }
        try self.init(version: pointer.version, chunks: pointer.chunks, reading: pairs, store: store)
    }

    /// The mesh of `version` in `chunks` chunks, from keys that hold them (and maybe others).
    init(version: String, chunks: Int, reading pairs: [Mvccpb_KeyValue], store: EtcdMeshStore) throws {
        let pointer = Pointer(version: version, chunks: chunks)
        var bytes: [UInt8] = []
        var found = 0
        for index in 0..<pointer.chunks {
            let key = Data(store.chunkKey(pointer.version, index).utf8)
            guard let chunk = pairs.first(where: { $0.key == key }) else { break }
            bytes += chunk.value
            found += 1
        }
        guard found == pointer.chunks else {
            throw EtcdMeshStoreError.damaged(store.description, "mesh \(pointer.version) has \(found) of its \(pointer.chunks) chunks")
        }
        guard let files = try? JSONDecoder().decode([File].self, from: Data(bytes)) else {
            throw EtcdMeshStoreError.damaged(store.description, "mesh \(pointer.version)'s chunks do not decode")
        }
        let sources = files.map { MeshConfig.Source(file: $0.name, text: $0.text) }
        guard MeshFileStore.version(of: sources.map { ($0.file, $0.text) }) == pointer.version else {
            throw EtcdMeshStoreError.damaged(store.description, "mesh \(pointer.version)'s files do not hash to its version")
        }
        self.version = pointer.version
        self.sources = sources
    }
}

public enum EtcdMeshStoreError: Error, CustomStringConvertible, Equatable {
    /// Nothing applied yet.
    case empty(String)
    case damaged(String, String)
    /// Other writers kept changing the mesh between this writer's read and its write.
    case contended(String)
    /// A rollout is under way: the mesh changes when it completes.
    case rolloutInProgress(String, UInt64)
    /// The store holds this mesh already: there is nothing to roll out.
    case unchanged(String, String)

    public var description: String {
        switch self {
        case .empty(let store): "\(store) holds no mesh yet: write one with `outrigger control apply FILE --store ...`"
        case .damaged(let store, let why): "\(store): the stored mesh is damaged: \(why)"
        case .contended(let store): "\(store): the mesh kept changing while this one was written (other applies at once); nothing was written, try again"
        case .rolloutInProgress(let store, let generation):
            "\(store): the rollout of generation \(generation) is under way; nothing was written (see `outrigger control status --store ...`)"
        case .unchanged(let store, let version): "\(store): mesh \(version) is already the current one; nothing to roll out"
        }
    }
}
