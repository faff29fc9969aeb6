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
    /// - Parameters:
    ///   - count: the connections, oldest first; `streams(i)`: streams open or promised on connection `i` (`Int.max`:
    ///     it takes no more) and its limit. Closures, so a request's placement allocates nothing.
    ///   - mayOpen: asked only when no connection has room.
    public static func place(among count: Int, streams: (Int) -> (committed: Int, limit: Int), mayOpen: () -> Bool) -> HTTP2StreamPlacement {
        var leastBusy: (index: Int, committed: Int)?
        for index in 0..<count {
            let (committed, limit) = streams(index)
            if committed < limit { return .existing(index) }
            if committed != .max, committed < leastBusy?.committed ?? .max { leastBusy = (index, committed) }
        }
        guard !mayOpen(), let leastBusy else { return .open }
        return .existing(leastBusy.index)
    }
}
