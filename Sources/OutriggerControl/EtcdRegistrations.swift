import Foundation
import Logging
import NIOConcurrencyHelpers
import OutriggerConfig
import OutriggerEtcd

/// Sidecars registered as endpoints of their services, kept in etcd so that every control-plane replica serves
/// every registration, whichever replica the sidecar talks to.
///
/// - A registration is the key `PREFIX/registrations/NODE` (its service and inbound address, and the replica that
///   wrote it) under a lease of the sidecar's own, which the replica it talks to keeps alive. A replica that dies
///   stops keeping its sidecars' leases: their registrations go within the lease's time to live, unless the
///   sidecars have moved to another replica by then.
/// - A sidecar that moves to another replica keeps its registration: the new replica writes it again under a lease
///   of its own, over the old write (the key is never deleted). The old replica's removal (its grace over) compares
///   the key's mod revision with its own put's, so it removes nothing it no longer owns.
/// - Every replica reads all registrations at one revision and watches them from the next; a watch whose start
///   was compacted away reads them all again.
public final class EtcdRegistrations: Sendable {
    public let client: EtcdClient
    let prefix: String
    /// This process, as owner of the registrations it writes.
    let replica: String
    /// A registration's lease, in seconds.
    let ttl: Int64
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    struct State {
        /// The sidecars connected here that should be registered, by node.
        var wanted: [String: Entry] = [:]
        /// The registrations this replica wrote and keeps alive, by node.
        var kept: [String: Kept] = [:]
        /// Nodes being synced now, and those to sync again when that ends (one sync per node at a time).
        var busy: Set<String> = []
        var again: Set<String> = []
    }

    /// A registration this replica wrote: under which lease, at which revision (the key's mod revision then).
    struct Kept {
        var entry: Entry
        var lease: Int64
        var revision: Int64
    }

    /// A registration as stored.
    struct Entry: Codable, Equatable {
        var service: String
        var address: String
        var replica: String
    }

    public init(client: EtcdClient, prefix: String = "/outrigger", replica: String, ttl: Int64 = 10, logger: Logger = Logger(label: "outrigger.etcd")) {
        self.client = client
        self.prefix = EtcdKeyRange.trimmed(prefix) + "/registrations/"
        self.replica = replica
        self.ttl = ttl
        self.logger = logger
    }

    func key(_ node: String) -> String { prefix + node }

    /// Registers `node` as an endpoint of `service` at `address`, or takes over its registration from another
    /// replica; kept alive from here until `deregister`.
    public func register(node: String, service: String, address: HostPort) async {
        state.withLockedValue { $0.wanted[node] = Entry(service: service, address: address.description, replica: replica) }
        await sync(node)
    }

    /// Removes `node`'s registration, if it still is what this replica wrote (a sidecar that moved on keeps its own).
    public func deregister(node: String) async {
        state.withLockedValue { $0.wanted[node] = nil }
        await sync(node)
    }

    /// Makes etcd hold what this replica wants for `node`: its registration under a fresh lease of this replica's
    /// (a takeover puts over another replica's write: the key is never deleted), or — not wanted — no registration,
    /// if the key still holds this replica's write (it compares the key's mod revision with its own put's). One
    /// sync per node at a time; a change meanwhile syncs again. A failure is left to the next reconcile pass.
    private func sync(_ node: String) async {
        let first = state.withLockedValue { state -> Bool in
            guard !state.busy.contains(node) else {
                state.again.insert(node)
                return false
            }
            state.busy.insert(node)
            return true
        }
        guard first else { return }
        while true {
            let (wanted, kept) = state.withLockedValue { ($0.wanted[node], $0.kept[node]) }
            do {
                if let wanted, kept?.entry != wanted {
                    let lease = try await client.grantLease(ttl: ttl)
                    let revision = try await client.put(key(node), Array(try JSONEncoder().encode(wanted)), lease: lease)
                    state.withLockedValue { $0.kept[node] = Kept(entry: wanted, lease: lease, revision: revision) }
                    // The key is under the new lease now: the old one holds nothing.
                    if let kept { try? await client.revokeLease(kept.lease) }
                } else if wanted == nil, let kept {
                    var transaction = Etcdserverpb_TxnRequest()
                    var mine = Etcdserverpb_Compare()
                    mine.key = Data(key(node).utf8)
                    mine.target = .mod
                    mine.modRevision = kept.revision
                    mine.result = .equal
                    transaction.compare = [mine]
                    transaction.success = [.delete(.key(key(node)))]
                    _ = try await client.transaction(transaction)
                    try await client.revokeLease(kept.lease)
                    state.withLockedValue { $0.kept[node] = nil }
                }
            } catch {
                logger.warning("cannot sync a sidecar's registration with etcd now; trying again", metadata: ["node": "\(node)", "error": "\(error)"])
            }
            let again = state.withLockedValue { state -> Bool in
                if state.again.remove(node) != nil { return true }
                state.busy.remove(node)
                return false
            }
            if !again { return }
        }
    }

    /// Keeps this replica's registrations alive, and writes again those it should keep but does not (etcd was
    /// unreachable, or a lease ran out), until cancelled.
    public func keepAlive() async {
        let interval = Duration.seconds(ttl) / 3
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var failures = 0
                while !Task.isCancelled {
                    do {
                        try await self.client.keepAlive(every: interval, leases: { self.state.withLockedValue { $0.kept.values.map(\.lease) } }) { lease, ttl in
                            guard ttl <= 0 else { return }
                            // Gone: its key went with it. Written again by the next pass.
                            self.state.withLockedValue { state in
                                for (node, kept) in state.kept where kept.lease == lease { state.kept[node] = nil }
                            }
                        }
                        failures = 0
                    } catch {
                        if Task.isCancelled { return }
                        failures += 1
                        try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    // Wanted and not kept (a write failed, a lease ran out), or kept and not wanted (a removal failed).
                    let unsynced = self.state.withLockedValue { state in
                        Set(state.wanted.keys).symmetricDifference(state.kept.keys)
                    }
                    for node in unsynced { await self.sync(node) }
                }
            }
        }
    }

    /// Hands every registration (service → node → address) to `update`: all of them once read, then again after
    /// each change, until cancelled. etcd unreachable: the last ones handed stay, and it is tried again.
    public func follow(_ update: @escaping @Sendable ([String: [String: HostPort]]) -> Void) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                let read = try await client.read(.prefix(prefix))
                let entries = NIOLockedValueBox([String: Entry]())
                for pair in read.pairs { entries.withLockedValue { $0[node(of: pair.key)] = Self.entry(pair.value) } }
                update(Self.byService(entries.withLockedValue { $0 }))
                failures = 0
                try await client.watch(.prefix(prefix), from: read.revision + 1) { watched in
                    guard case .changes(let events, _) = watched else { return true }
                    let all = entries.withLockedValue { entries in
                        for event in events {
                            let node = self.node(of: event.kv.key)
                            entries[node] = event.type == .put ? Self.entry(event.kv.value) : nil
                        }
                        return entries
                    }
                    update(Self.byService(all))
                    return true
                }
            } catch .compacted {
                logger.info("the registrations' watch started at a compacted revision; reading them all again")
            } catch {
                if Task.isCancelled { return }
                failures += 1
                logger.warning("cannot follow the registrations in etcd; serving the last ones read", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: ReconnectBackoff.delay(after: failures))
            }
        }
    }

    private func node(of key: Data) -> String {
        String(decoding: key.dropFirst(prefix.utf8.count), as: UTF8.self)
    }

    private static func entry(_ value: Data) -> Entry? {
        try? JSONDecoder().decode(Entry.self, from: value)
    }

    static func byService(_ entries: [String: Entry]) -> [String: [String: HostPort]] {
        var registered: [String: [String: HostPort]] = [:]
        for (node, entry) in entries {
            guard let address = HostPort(parsing: entry.address) else { continue }
            registered[entry.service, default: [:]][node] = address
        }
        return registered
    }
}
