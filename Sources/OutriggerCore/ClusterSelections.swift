/// One event loop's `ClusterSelection`s, one per cluster object, made on first use. Keyed by the cluster's
/// `serial`, not its address: a reload frees the old cluster objects and a new one may be given a freed address,
/// and must not inherit the selection (balancer, budget, loads) made for the cluster that was there.
public struct ClusterSelections {
    private var selections: [Int: ClusterSelection] = [:]
    /// The selection found last, looked at before `selections`: a request asks for its cluster's four times, and a
    /// sidecar's requests mostly go to few clusters (each dictionary lookup hashes the key: ~130 instructions).
    private var last: (serial: Int, selection: ClusterSelection)?
    private let loops: Int
    private let loopIndex: Int

    /// Selections forgotten all at once past this many: a new snapshot brings new cluster objects, and those of
    /// the old one are no longer asked for.
    static let limit = 1024

    public init(loops: Int, loopIndex: Int) {
        self.loops = loops
        self.loopIndex = loopIndex
    }

    /// `cluster`'s selection, made now if it has none.
    public mutating func selection(for cluster: ClusterRuntime) -> ClusterSelection {
        if let existing = existing(for: cluster) { return existing }
        if selections.count >= Self.limit { selections.removeAll() }
        let created = ClusterSelection(cluster.config.loadBalancer, budget: cluster.config.retryBudget, loops: loops, stagger: loopIndex)
        selections[cluster.serial] = created
        last = (cluster.serial, created)
        return created
    }

    /// `cluster`'s selection if one was made.
    public mutating func existing(for cluster: ClusterRuntime) -> ClusterSelection? {
        let serial = cluster.serial
        if let last, last.serial == serial { return last.selection }
        guard let found = selections[serial] else { return nil }
        last = (serial, found)
        return found
    }
}
