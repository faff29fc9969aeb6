import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Cluster selections: one per cluster object, on one event loop")
struct ClusterSelectionsTests {
    @Test func aClusterKeepsItsSelection() {
        var selections = ClusterSelections(loops: 1, loopIndex: 0)
        let cluster = ClusterSelectionTests.cluster(endpoints: 2)
        let other = ClusterSelectionTests.cluster(endpoints: 2)
        #expect(selections.existing(for: cluster) == nil)
        let made = selections.selection(for: cluster)
        let otherMade = selections.selection(for: other)
        #expect(made !== otherMade)
        #expect(selections.selection(for: cluster) === made)
        #expect(selections.existing(for: cluster) === made, "found again past the last one asked for")
        #expect(selections.existing(for: other) === otherMade)
    }

    /// A reload frees the old cluster objects; the allocator hands their memory to the next ones (glibc does at
    /// once for a block of the same size). Keyed by address, the new cluster found the old one's selection.
    @Test func aClusterMadeWhereAFreedOneWasGetsItsOwnSelection() {
        var selections = ClusterSelections(loops: 1, loopIndex: 0)
        let made = (0..<64).map { _ in selections.selection(for: ClusterSelectionTests.cluster(endpoints: 1)) }
        #expect(Set(made.map(ObjectIdentifier.init)).count == made.count, "each cluster has a selection of its own")
    }

    @Test func selectionsPastTheLimitAreForgottenAndMadeAgain() {
        var selections = ClusterSelections(loops: 1, loopIndex: 0)
        let kept = (0..<ClusterSelections.limit).map { _ in ClusterSelectionTests.cluster(endpoints: 1) }
        let first = selections.selection(for: kept[0])
        for cluster in kept.dropFirst() { _ = selections.selection(for: cluster) }
        let oneMore = ClusterSelectionTests.cluster(endpoints: 1)
        _ = selections.selection(for: oneMore)
        _ = selections.selection(for: kept[1])
        #expect(selections.selection(for: kept[0]) !== first)
    }
}
