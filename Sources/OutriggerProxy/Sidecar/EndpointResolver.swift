import Atomics
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore

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
