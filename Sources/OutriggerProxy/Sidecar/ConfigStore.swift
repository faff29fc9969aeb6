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

/// Turns configured endpoints into socket addresses: IP literals directly, hostnames through the
/// system resolver (every A/AAAA record).
public enum EndpointResolver {
    public static func resolve(_ endpoint: HostPort) throws -> [SocketAddress] {
        if endpoint.isIPLiteral {
            return [try SocketAddress(ipAddress: endpoint.host, port: endpoint.port)]
        }
        return try resolveHostname(endpoint.host, port: endpoint.port)
    }

    static func resolveHostname(_ host: String, port: Int) throws -> [SocketAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let first = result else {
            throw EndpointResolutionError(host: host, message: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(first) }
        var addresses: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let address = info.pointee.ai_addr {
                switch Int32(info.pointee.ai_family) {
                case AF_INET:
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { addresses.append(SocketAddress($0.pointee, host: host)) }
                case AF_INET6:
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { addresses.append(SocketAddress($0.pointee, host: host)) }
                default:
                    break
                }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }
}

public struct EndpointResolutionError: Error, CustomStringConvertible {
    public var host: String
    public var message: String

    public init(host: String, message: String) {
        self.host = host
        self.message = message
    }

    public var description: String { "cannot resolve '\(host)': \(message)" }
}
