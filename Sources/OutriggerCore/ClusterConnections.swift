/// A cluster's upstream connections, counted in one place by every pool of the cluster (HTTP/1.1 and HTTP/2, on every
/// event loop): the slot a connection takes against the cluster's `maxConnections` before it opens — given back when it
/// fails to open, when the request it was for left first, or when it closes — and the opened ones in the totals.
public struct ClusterConnections: Sendable {
    public let stats: ClusterStats
    public let limit: Int

    public init(stats: ClusterStats, limit: Int) {
        self.stats = stats
        self.limit = limit
    }

    /// A slot is free now (a look, without taking it).
    public var hasRoom: Bool {
        stats.connectionSlots.current < limit
    }

    /// Takes a slot for a connection about to open, if the cluster has one free.
    public func reserve() -> Bool {
        stats.connectionSlots.increment(below: limit)
    }

    /// A reserved connection is not opened after all (the request it was for left): its slot goes back.
    public func unused() {
        stats.connectionSlots.decrement()
    }

    /// A reserved connection failed to open: counted, and its slot goes back.
    public func connectFailed() {
        stats.connectFailures.increment()
        stats.connectionSlots.decrement()
    }

    /// A reserved connection opened.
    public func opened() {
        stats.connectionsTotal.increment()
        stats.connectionsActive.increment()
    }

    /// An opened connection closed: it leaves the gauge, and its slot goes back.
    public func closed() {
        stats.connectionsActive.decrement()
        stats.connectionSlots.decrement()
    }
}
