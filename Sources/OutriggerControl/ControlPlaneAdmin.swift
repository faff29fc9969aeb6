import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerProxy

extension ControlPlane {
    /// The control plane's admin: `/mesh` (the live mesh view), `/status` (JSON, what it polls), `/metrics` (Prometheus
    /// text), `/ready`, `/live`.
    public func bindAdmin(host: String, port: Int) async throws -> Channel {
        let address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        return try await PlainHTTPServer.bind(to: address, group: MultiThreadedEventLoopGroup.singleton) { head in
            let path = PlainHTTPServer.path(of: head.uri)
            guard head.method == .GET || head.method == .HEAD else { return (.methodNotAllowed, "text/plain", "\(path) takes GET\n") }
            switch path {
            case "/status": return (.ok, "application/json", PlainHTTPServer.json(self.statusObject()))
            case "/mesh": return (.ok, "text/html; charset=utf-8", MeshPage.html)
            case "/metrics": return (.ok, "text/plain; version=0.0.4", self.metrics.prometheusText())
            case "/ready", "/live": return (.ok, "text/plain", "\(path.dropFirst())\n")
            case "/": return (.ok, "text/plain", "outrigger control admin\n  GET /mesh\n  GET /status\n  GET /metrics\n  GET /ready\n  GET /live\n")
            default: return (.notFound, "text/plain", "unknown admin path \(path); try /\n")
            }
        }
    }

    /// GETs `path` from an admin listener (for `outrigger control status` and the rollout gate): the status and the
    /// body. A listener that does not answer within `timeout` (a stopped or wedged process still holds its port) is an
    /// error, never a wait without end.
    public static func fetch(host: String, port: Int, path: String, timeout: Duration = .seconds(5)) async throws -> (Int, String) {
        let limit = TimeAmount(timeout)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(limit)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let expired = NIOLockedValueBox(false)
        let timedOut = AdminFetchTimeout(address: "\(host):\(port)", path: path, timeout: timeout)
        let cut = channel.channel.eventLoop.scheduleTask(in: limit) { [channel = channel.channel] in
            expired.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        defer { cut.cancel() }
        let response: String
        do {
            response = try await channel.executeThenClose { inbound, outbound in
                try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n"))
                var response = ""
                for try await chunk in inbound { response += String(buffer: chunk) }
                return response
            }
        } catch where expired.withLockedValue({ $0 }) {
            // The close at the deadline ended the write or the read with an error of its own.
            throw timedOut
        }
        if expired.withLockedValue({ $0 }) { throw timedOut }
        guard let split = response.range(of: "\r\n\r\n") else { return (0, response) }
        let status = Int(response[..<split.lowerBound].split(separator: " ").dropFirst().first ?? "") ?? 0
        return (status, String(response[split.upperBound...]))
    }
}

/// An admin listener that took the connection but did not answer in time.
public struct AdminFetchTimeout: Error, CustomStringConvertible {
    public let address: String
    public let path: String
    public let timeout: Duration
    public var description: String { "\(address) did not answer GET \(path) within \(timeout)" }
}
