/// Where a request's HTTP/2 stream goes among an endpoint's connections on one event loop.
public enum HTTP2StreamPlacement: Equatable, Sendable {
    /// On this connection (its index).
    case existing(Int)
    /// On a new connection.
    case open

    /// The oldest connection with room under its peer's SETTINGS_MAX_CONCURRENT_STREAMS (streams are packed, so a
    /// burst's extra connections go idle and close); none with room: a new one when `mayOpen` (the cluster has a
    /// connection slot free), else the least busy one that still takes streams (its stream waits there for one to
    /// end); none at all: a new one (which fails as an overflow if it finds no slot).
    /// - Parameter connections: per connection, streams open or promised (`Int.max`: it takes no more) and the limit.
    public static func place(on connections: [(committed: Int, limit: Int)], mayOpen: Bool) -> HTTP2StreamPlacement {
        if let index = connections.firstIndex(where: { $0.committed < $0.limit }) { return .existing(index) }
        guard !mayOpen else { return .open }
        let usable = connections.indices.filter { connections[$0].committed != .max }
        guard let least = usable.min(by: { connections[$0].committed < connections[$1].committed }) else { return .open }
        return .existing(least)
    }
}
