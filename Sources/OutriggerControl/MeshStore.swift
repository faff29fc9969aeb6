import Foundation
import OutriggerConfig
import OutriggerCore
import OutriggerProxy

/// A mesh as a store holds it: validated, with a version that changes whenever its content does.
public struct MeshSnapshot: Sendable {
    public let mesh: MeshConfig
    public let version: String

    public init(mesh: MeshConfig, version: String) {
        self.mesh = mesh
        self.version = version
    }
}

/// A store that could not be read now (etcd unreachable, no quorum): unlike a broken mesh, nothing is known of
/// what it holds, so it is read again rather than refused.
public struct MeshStoreUnreadable: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) {
        self.description = description
    }
}

/// Where the control plane's mesh comes from: the one seam between `ControlPlane` and its store. A store gives
/// the current mesh as a versioned snapshot, and says when a newer one may be there. The mesh file (or
/// directory) is one store (`MeshFileStore`); etcd, which replicas share, is the other (`EtcdMeshStore`).
public protocol MeshStore: Sendable {
    /// What the store names itself in logs (a file path, an etcd prefix).
    var description: String { get }
    /// Reads the current mesh and validates it; a store that holds a broken mesh throws, saying where and why, and
    /// one that cannot be read now throws `MeshStoreUnreadable`.
    func snapshot() async throws -> MeshSnapshot
    /// The version of what the store holds now, valid or not (no validation): what a follower has seen.
    func currentVersion() async -> String
    /// Returns once the store may hold a snapshot other than `version` (it may be the same: callers compare).
    /// A store it cannot reach is waited for. Throws when cancelled.
    func waitForChange(after version: String) async throws
}

/// The mesh file, or a directory of them: polled for changes (size, modification time, inode of each file),
/// and a change is one of content: a snapshot's version is a hash of the files' bytes, so touching a file
/// without changing it changes nothing.
public struct MeshFileStore: MeshStore {
    public let path: String
    public let pollInterval: Duration

    public init(path: String, pollInterval: Duration = .seconds(1)) {
        self.path = path
        self.pollInterval = pollInterval
    }

    public var description: String { path }

    public func snapshot() throws -> MeshSnapshot {
        // Read once: a save between decoding and hashing would give the old mesh the new content's version,
        // and the change would never be followed.
        let sources = try MeshConfig.read(path)
        let mesh = try MeshConfig.load(sources, path: path)
        try MeshView.check(mesh)
        return MeshSnapshot(mesh: mesh, version: Self.version(of: sources.map { ($0.file, $0.text) }))
    }

    public func waitForChange(after version: String) async throws {
        // An edit made since `version` was read is not missed: the content is compared first.
        var stamps = Self.stamps(path)
        if contentVersion() != version { return }
        while true {
            try await Task.sleep(for: pollInterval)
            let now = Self.stamps(path)
            // A file being replaced may be missing for a moment: wait for it. A rewrite with the same bytes
            // (a touch) is not a change.
            guard now != stamps, now.first != nil else { continue }
            stamps = now
            if contentVersion() != version { return }
        }
    }

    public func currentVersion() -> String {
        contentVersion()
    }

    /// The version of what the files hold now, readable as a mesh or not.
    private func contentVersion() -> String {
        let files = [path] + MeshConfig.files(in: path)
        return Self.version(of: files.compactMap { file in
            FileManager.default.contents(atPath: file).map { (file, String(decoding: $0, as: UTF8.self)) }
        })
    }

    /// The files' names and texts hashed, in path order.
    static func version(of files: [(name: String, text: String)]) -> String {
        var hash: UInt64 = 0
        for (name, text) in files { hash = StableHash.mix(hash ^ StableHash.of(name) ^ StableHash.of(text)) }
        return String(hash, radix: 16)
    }

    /// The mesh file's stamp, or a directory's and each of its files'.
    static func stamps(_ path: String) -> [FileStamp?] {
        [FileStamp(path: path)] + MeshConfig.files(in: path).map(FileStamp.init(path:))
    }
}
