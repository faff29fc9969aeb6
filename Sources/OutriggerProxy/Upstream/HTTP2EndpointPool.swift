import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// One endpoint's HTTP/2 connections on one event loop. A request takes a stream on the oldest connection with room
/// under the upstream's SETTINGS_MAX_CONCURRENT_STREAMS; when every one is full, another opens (as Envoy's pool
/// does), unless the cluster's `maxConnections` are all taken: then the least busy connection queues the stream
/// until one of its streams ends (`HTTP2Codec` holds it, past the upstream's SETTINGS_MAX_CONCURRENT_STREAMS). A connection that got a GOAWAY or closed leaves the pool; idle
/// ones close after the pool's idle timeout, so the extra connections of a burst do not stay.
final class HTTP2EndpointPool {
    private let target: UpstreamTarget
    private let becameEmpty: (HTTP2EndpointPool) -> Void
    private var connections: [HTTP2EndpointConnection] = []

    var key: String { target.key }

    init(target: UpstreamTarget, becameEmpty: @escaping (HTTP2EndpointPool) -> Void) {
        self.target = target
        self.becameEmpty = becameEmpty
    }

    func lease(for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        let placement = HTTP2StreamPlacement.place(among: connections.count) { index in
            (connections[index].committedStreams, connections[index].peerMaxConcurrentStreams)
        } mayOpen: {
            target.connections.hasRoom
        }
        switch placement {
        case .existing(let index):
            return connections[index].lease(for: requester)
        case .open:
            let connection = HTTP2EndpointConnection(target: target) { [weak self] connection in self?.left(connection) }
            connections.append(connection)
            return connection.lease(for: requester)
        }
    }

    /// The connection takes no new streams (GOAWAY, closed, failed to open): the pool forgets it.
    private func left(_ connection: HTTP2EndpointConnection) {
        connections.removeAll { $0 === connection }
        if connections.isEmpty { becameEmpty(self) }
    }

    func closeIfIdle() {
        for connection in connections { connection.closeIfIdle() }
    }

    /// Its endpoint left: each connection closes once no stream is open.
    func retire() {
        for connection in connections { connection.retire() }
    }
}
