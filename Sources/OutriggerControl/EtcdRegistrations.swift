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
/// - A sidecar that moves to another replica keeps its registration: the new replica finds the key, takes over its
///   lease and writes itself in as the owner. The old replica's removal (its grace over) compares the key with
///   what it wrote, so it removes nothing it no longer owns.
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
        var kept: [String: (lease: Int64, value: [UInt8])] = [:]
    }

    /// A registration as stored.
    struct Entry: Codable, Equatable {
        var service: String
        var address: String
        var replica: String
    }

    public init(client: EtcdClient, prefix: String = "/outrigger", replica: String, ttl: Int64 = 10, logger: Logger = Logger(label: "outrigger.etcd")) {
        self.client = client
        self.prefix = (prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix) + "/registrations/"
        self.replica = replica
        self.ttl = ttl
        self.logger = logger
    }

    func key(_ node: String) -> String { prefix + node }

    /// Registers `node` as an endpoint of `service` at `address`, or takes over its registration from another
    /// replica; kept alive from here until `deregister`.
    public func register(node: String, service: String, address: HostPort) async {
        state.withLockedValue { $0.wanted[node] = Entry(service: service, address: address.description, replica: replica) }
        await ensure(node)
    }

    /// Removes `node`'s registration, if this replica still owns it (a sidecar that moved on keeps its own).
    public func deregister(node: String) async {
        let kept = state.withLockedValue { state in
            state.wanted[node] = nil
            return state.kept.removeValue(forKey: node)
        }
        guard let kept else { return }
        do {
            var transaction = Etcdserverpb_TxnRequest()
            var compare = Etcdserverpb_Compare()
            compare.key = Data(key(node).utf8)
            compare.target = .value
            compare.value = Data(kept.value)
            compare.result = .equal
            transaction.compare = [compare]
            transaction.success = [.delete(.key(key(node)))]
            if try await client.transaction(transaction).succeeded { try await client.revokeLease(kept.lease) }
        } catch {
            // Its lease is no longer kept alive here: the registration goes when the lease runs out.
            logger.warning("cannot remove a registration now; it goes when its lease runs out", metadata: ["node": "\(node)", "error": "\(error)"])
        }
    }

    /// Writes `node`'s registration if it is wanted and not kept: under the lease the key already has (another
    /// replica's, or this one's before), else under a new one.
    private func ensure(_ node: String) async {
        guard let entry = state.withLockedValue({ $0.wanted[node] }) else { return }
        let value = Array((try? JSONEncoder().encode(entry)) ?? Data())
        do {
            var lease = try await client.read(.key(key(node))).pairs.first?.lease ?? 0
            if lease != 0 {
                do {
                    try await client.put(key(node), value, lease: lease)
                } catch {
                    lease = 0  // the lease ran out since the read
                }
            }
            if lease == 0 {
                lease = try await client.grantLease(ttl: ttl)
                try await client.put(key(node), value, lease: lease)
            }
            let granted = lease
            // Deregistered, or registered again as something else, while this was written: undo, or write again.
            let now = state.withLockedValue { state in
                state.kept[node] = (granted, value)
                return state.wanted[node]
            }
            if now == nil {
                await deregister(node: node)
            } else if now != entry {
                await ensure(node)
            }
        } catch {
            logger.warning("cannot register a sidecar in etcd now; trying again", metadata: ["node": "\(node)", "error": "\(error)"])
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
                        try? await Task.sleep(for: Self.backoff(failures))
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    let missing = self.state.withLockedValue { state in state.wanted.keys.filter { state.kept[$0] == nil } }
                    for node in missing { await self.ensure(node) }
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
                try? await Task.sleep(for: Self.backoff(failures))
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

    /// Full jitter over an exponential ceiling: 100 ms doubling to 5 s.
    static func backoff(_ failures: Int) -> Duration {
        let ceiling = min(5_000, 100 << min(failures, 6))
        return .milliseconds(Int.random(in: ceiling / 2...ceiling))
    }
}
