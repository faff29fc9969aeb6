import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import NIOConcurrencyHelpers
import OutriggerConfig

/// An etcd v3 client over etcd's gRPC API, talking to one member of the cluster at a time: a connection per
/// listed member, and the calls go to the current one. A call that finds its member gone (`unavailable`) moves
/// the client on to the next member and is tried there; one member down is no failure.
public final class EtcdClient: Sendable {
    public let endpoints: [HostPort]
    /// How long a single call may take before it fails.
    public let callTimeout: Duration
    private let members: [GRPCClient<HTTP2ClientTransport.Posix>]
    private let connections: [Task<Void, Never>]
    /// The member calls go to.
    private let current = NIOLockedValueBox(0)

    public init(endpoints: [HostPort], callTimeout: Duration = .seconds(5)) throws(EtcdError) {
        guard !endpoints.isEmpty else { throw .noEndpoints }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        // PINGs notice a member that vanished without closing the connection (a partition, a stopped host).
        config.connection.keepalive = .init(time: .seconds(5), timeout: .seconds(3), allowWithoutCalls: true)
        config.backoff = .init(initial: .milliseconds(100), max: .seconds(2), multiplier: 1.6, jitter: 0.2)
        var members: [GRPCClient<HTTP2ClientTransport.Posix>] = []
        for endpoint in endpoints {
            let target: any ResolvableTarget = !endpoint.isIPLiteral ? .dns(host: endpoint.host, port: endpoint.port)
                : endpoint.host.contains(":") ? .ipv6(address: endpoint.host, port: endpoint.port) : .ipv4(address: endpoint.host, port: endpoint.port)
            do {
                members.append(GRPCClient(transport: try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext, config: config)))
            } catch {
                throw .unusableEndpoints([endpoint])
            }
        }
        self.endpoints = endpoints
        self.callTimeout = callTimeout
        self.members = members
        self.connections = members.map { member in Task { try? await member.runConnections() } }
    }

    /// Closes the connections once the calls in flight have ended.
    public func close() async {
        for member in members { member.beginGracefulShutdown() }
        for connection in connections { await connection.value }
    }

    private var options: CallOptions {
        var options = CallOptions.defaults
        options.timeout = callTimeout
        return options
    }

    /// Streams ask etcd to end them when their member loses its leader (a member cut off from the quorum would
    /// otherwise keep a watch open and silent): the caller then starts again, on the next member.
    private static let requireLeader: Metadata = ["hasleader": "true"]

    // MARK: Reads and writes

    /// What a read found: the keys and values in the range, in key order, all as of `revision`.
    public struct Read: Sendable {
        public var revision: Int64
        public var pairs: [Mvccpb_KeyValue]
    }

    /// Every key in `range` as of one revision (`revision`, or the newest when 0), read in pages of `pageSize`
    /// keys; every page after the first is read at the first one's revision, so the whole is one snapshot.
    /// Throws `EtcdError.compacted` when that revision is no longer kept.
    public func read(_ range: EtcdKeyRange, at revision: Int64 = 0, pageSize: Int = 1000) async throws(EtcdError) -> Read {
        var read = Read(revision: revision, pairs: [])
        var rest = range
        while true {
            var request = Etcdserverpb_RangeRequest()
            request.key = Data(rest.key)
            request.rangeEnd = Data(rest.end)
            request.limit = Int64(pageSize)
            request.revision = read.revision
            let response = try await call("range") { grpc in try await Etcdserverpb_KV.Client(wrapping: grpc).range(request, options: options) }
            if read.revision == 0 { read.revision = response.header.revision }
            read.pairs += response.kvs
            guard response.more, let last = response.kvs.last else { return read }
            rest = rest.after(Array(last.key))
        }
    }

    /// Runs a transaction: `success` when every comparison holds, else `failure`, atomically.
    public func transaction(_ request: Etcdserverpb_TxnRequest) async throws(EtcdError) -> Etcdserverpb_TxnResponse {
        let operations = request.success.count + request.failure.count
        guard operations <= Self.maxOperationsPerTransaction else { throw .tooManyOperations(operations) }
        return try await call("txn") { grpc in try await Etcdserverpb_KV.Client(wrapping: grpc).txn(request, options: options) }
    }

    /// etcd's default `--max-txn-ops`. (Its other limit, `--max-request-bytes`, 1.5 MiB, is kept by the callers:
    /// the mesh goes in chunks of 1 MiB.)
    public static let maxOperationsPerTransaction = 128

    /// Puts `value` at `key`, under `lease` when not 0; returns the store's revision after it.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws(EtcdError) -> Int64 {
        var request = Etcdserverpb_PutRequest()
        request.key = Data(key.utf8)
        request.value = Data(value)
        request.lease = lease
        return try await call("put") { grpc in try await Etcdserverpb_KV.Client(wrapping: grpc).put(request, options: options) }.header.revision
    }

    /// Drops the history before `revision`: a watch or read from an older revision then fails as compacted.
    public func compact(to revision: Int64) async throws(EtcdError) {
        var request = Etcdserverpb_CompactionRequest()
        request.revision = revision
        request.physical = true
        _ = try await call("compact") { grpc in try await Etcdserverpb_KV.Client(wrapping: grpc).compact(request, options: options) }
    }

    // MARK: Leases

    /// A new lease of `ttl` seconds: the keys put under it go when it is revoked or not kept alive for that long.
    public func grantLease(ttl: Int64) async throws(EtcdError) -> Int64 {
        var request = Etcdserverpb_LeaseGrantRequest()
        request.ttl = ttl
        let response = try await call("lease grant") { grpc in try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseGrant(request, options: options) }
        guard response.error.isEmpty else { throw .call("lease grant", endpoints, "refused", response.error) }
        return response.id
    }

    /// Ends a lease now, and with it every key put under it. A lease already gone is no error.
    public func revokeLease(_ id: Int64) async throws(EtcdError) {
        var request = Etcdserverpb_LeaseRevokeRequest()
        request.id = id
        do {
            _ = try await call("lease revoke") { grpc in try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseRevoke(request, options: options) }
        } catch .call(_, _, let code, let message) where code == RPCError.Code.notFound.description && message.contains("lease not found") {
            return
        }
    }

    /// Keeps leases alive over one stream: every `interval`, a keep-alive for each lease `leases()` gives; each
    /// answer goes to `answered` with the lease's time to live in seconds (0 or less: the lease is gone). Runs until
    /// the stream fails or the task is cancelled, and throws either way.
    public func keepAlive(every interval: Duration, leases: @escaping @Sendable () -> [Int64],
                          answered: @escaping @Sendable (_ lease: Int64, _ ttl: Int64) -> Void) async throws(EtcdError) {
        try await call("lease keep-alive", streaming: true) { grpc in
            try await Etcdserverpb_Lease.Client(wrapping: grpc).leaseKeepAlive(metadata: Self.requireLeader, requestProducer: { writer in
                while !Task.isCancelled {
                    for lease in leases() {
                        var request = Etcdserverpb_LeaseKeepAliveRequest()
                        request.id = lease
                        try await writer.write(request)
                    }
                    try await Task.sleep(for: interval)
                }
            }, onResponse: { response in
                for try await message in response.messages { answered(message.id, message.ttl) }
            })
        }
    }

    // MARK: Watches

    /// What a watch reports.
    public enum WatchUpdate: Sendable {
        /// Changes, all of one revision or of several in order; `revision` is the newest the watch has seen.
        case changes([Mvccpb_Event], revision: Int64)
        /// Nothing changed in the range up to `revision` (etcd's progress notice on an idle watch).
        case progress(revision: Int64)
    }

    /// Watches `range` from `revision` (inclusive) and hands each update to `handle` until it returns false.
    /// A start revision etcd no longer keeps ends the watch with `EtcdError.compacted`: what changed since is
    /// unknown, so the caller reads the range again and watches from the revision of that read.
    public func watch(_ range: EtcdKeyRange, from revision: Int64,
                      _ handle: @escaping @Sendable (WatchUpdate) async throws -> Bool) async throws(EtcdError) {
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data(range.key)
        create.rangeEnd = Data(range.end)
        create.startRevision = revision
        create.progressNotify = true
        var creating = Etcdserverpb_WatchRequest()
        creating.createRequest = create
        let request = creating
        let (done, finish) = AsyncStream<Void>.makeStream()
        let outcome: WatchOutcome = try await call("watch", streaming: true) { grpc in
            try await Etcdserverpb_Watch.Client(wrapping: grpc).watch(metadata: Self.requireLeader, requestProducer: { writer in
                try await writer.write(request)
                // The request side stays open while the watch lasts: closing it ends the watch.
                for await _ in done {}
            }, onResponse: { response in
                defer { finish.finish() }
                for try await message in response.messages {
                    if message.canceled {
                        return message.compactRevision > 0 ? .compacted(message.compactRevision) : .cancelled(message.cancelReason)
                    }
                    if message.created && message.events.isEmpty { continue }
                    let update: WatchUpdate = message.events.isEmpty
                        ? .progress(revision: message.header.revision)
                        : .changes(message.events, revision: message.header.revision)
                    if try await !handle(update) { return .stopped }
                }
                return .cancelled("the stream ended")
            })
        }
        switch outcome {
        case .stopped: return
        case .compacted(let revision): throw .compacted(revision)
        case .cancelled(let reason): throw .watchCancelled(reason)
        }
    }

    private enum WatchOutcome: Sendable {
        case stopped
        case compacted(Int64)
        case cancelled(String)
    }

    // MARK: Errors

    /// Runs one call on the current member. A call that finds no member to talk to (`unavailable`) moves the client
    /// to the next member; a unary call is then tried there, and around the members again 50 ms apart doubling to
    /// 800 ms, for `callTimeout`. Every call of ours may run twice — reads, puts of the same value, writes that
    /// compare, grants (an extra lease runs out) — so one that did reach etcd before the failure is no harm.
    /// Streams end with the failure; their callers start them again from what they have seen.
    private func call<Result: Sendable>(_ name: String, streaming: Bool = false,
                                        _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result) async throws(EtcdError) -> Result {
        let deadline = ContinuousClock.now + callTimeout
        var pause = Duration.milliseconds(50)
        var tried = 0
        while true {
            let index = current.withLockedValue { $0 }
            do {
                return try await body(members[index])
            } catch let error as EtcdError {
                throw error
            } catch let error as RPCError {
                // etcd answers a read or a watch at a revision it no longer keeps with OUT_OF_RANGE.
                if error.code == .outOfRange && error.message.contains("compacted") { throw .compacted(0) }
                // Gone, or cut off from the quorum (no answer in time, or no leader for a stream): the next member.
                if error.code == .unavailable || error.code == .deadlineExceeded {
                    current.withLockedValue { if $0 == index { $0 = (index + 1) % members.count } }
                    tried += 1
                    if !streaming && !Task.isCancelled && ContinuousClock.now + pause < deadline {
                        // Around every member once without waiting, then with pauses.
                        if tried % members.count == 0 {
                            try? await Task.sleep(for: pause)
                            pause = min(pause * 2, .milliseconds(800))
                        }
                        continue
                    }
                }
                if error.code == .deadlineExceeded {
                    throw .call(name, endpoints, "no answer within \(callTimeout)", "is a quorum of the etcd members up and reachable?")
                }
                throw .call(name, endpoints, error.code.description, error.message)
            } catch {
                throw .call(name, endpoints, "error", "\(error)")
            }
        }
    }
}

public enum EtcdError: Error, Sendable, CustomStringConvertible {
    case noEndpoints
    /// An address the transport cannot use.
    case unusableEndpoints([HostPort])
    /// The revision asked for was compacted away (its number, when etcd said).
    case compacted(Int64)
    case watchCancelled(String)
    case tooManyOperations(Int)
    /// A call that failed: which, to whom, gRPC's code and etcd's message.
    case call(String, [HostPort], String, String)

    public var isCompacted: Bool {
        if case .compacted = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .noEndpoints: "no etcd endpoint given"
        case .unusableEndpoints(let endpoints):
            "cannot use etcd endpoint \(endpoints.map(\.description).joined(separator: ","))"
        case .compacted(let revision): "etcd has compacted the revision asked for" + (revision > 0 ? " (kept from \(revision) on)" : "")
        case .watchCancelled(let reason): "etcd cancelled the watch: \(reason)"
        case .tooManyOperations(let count): "a transaction of \(count) operations is over etcd's limit of \(EtcdClient.maxOperationsPerTransaction)"
        case .call(let name, let endpoints, let code, let message):
            "etcd \(name) at \(endpoints.map(\.description).joined(separator: ",")) failed: \(code): \(message)"
        }
    }
}
