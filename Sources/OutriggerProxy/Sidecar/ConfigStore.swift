import Atomics
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore

extension RuntimeSnapshot: AtomicReference {}

/// Holds the running snapshot. Readers (every request) load it lock-free; a reload compiles a new one
/// off the event loops and swaps it in whole, so a request sees one config from start to end.
public final class ConfigStore: Sendable {
    private let current: ManagedAtomic<RuntimeSnapshot>
    public let stats: ProxyStats
    /// Endpoint health and drain, shared by every snapshot.
    public let endpointStates = EndpointStates()
    /// Turns configured endpoints into addresses (the system resolver; tests may stand in their own).
    public let resolve: @Sendable (HostPort) throws -> [SocketAddress]
    /// Set when shutdown's drain timeout ran out with requests in flight: a connection closed from then on
    /// was cut by the proxy, not by its client (the access log says `drain_timeout`).
    public let drainDeadlinePassed = ManagedAtomic(false)

    public init(config: SidecarConfig, stats: ProxyStats,
                resolve: @escaping @Sendable (HostPort) throws -> [SocketAddress] = EndpointResolver.resolve) throws {
        self.stats = stats
        self.resolve = resolve
        self.current = ManagedAtomic(try Self.compile(config, version: 1, stats: stats, states: endpointStates, resolve: resolve))
    }

    public var snapshot: RuntimeSnapshot {
        current.load(ordering: .acquiring)
    }

    /// Compiles and swaps in `config`; on failure the running snapshot stays.
    @discardableResult
    public func apply(_ config: SidecarConfig) throws -> RuntimeSnapshot {
        let next = try Self.compile(config, version: snapshot.version + 1, stats: stats, states: endpointStates, resolve: resolve)
        current.store(next, ordering: .releasing)
        forgetRemovedEndpoints()
        return next
    }

    /// Drops the states of endpoints no running cluster has any more.
    public func forgetRemovedEndpoints() {
        endpointStates.retain(only: snapshot.endpointStateKeys)
    }

    static func compile(_ config: SidecarConfig, version: Int, stats: ProxyStats, states: EndpointStates,
                        resolve: (HostPort) throws -> [SocketAddress]) throws -> RuntimeSnapshot {
        try RuntimeSnapshot(config: config, version: version, stats: stats, resolve: resolve, endpointsFile: { path in
            (try? EndpointsFile.load(path)) ?? []
        }, endpointStates: states)
    }
}
