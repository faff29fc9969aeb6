@testable import OutriggerCore
import Testing

@Suite("A cluster's connection slots and counts")
struct ClusterConnectionsTests {
    @Test func everyWayAConnectionEndsGivesItsSlotBack() {
        let connections = ClusterConnections(stats: ClusterStats(name: "c", loops: 1), limit: 2)
        let (first, second, third) = (connections.reserve(), connections.reserve(), connections.reserve())
        #expect(first && second && !third, "no more than the limit open or opening")
        #expect(!connections.hasRoom)

        connections.connectFailed()
        #expect(connections.stats.connectFailures.current == 1 && connections.hasRoom, "a failed connect gives its slot back")
        let again = connections.reserve()
        #expect(again)
        connections.unused()
        #expect(connections.hasRoom && connections.stats.connectFailures.current == 1, "one nobody waits for any more: no failure")

        connections.opened()
        #expect(connections.stats.connectionsTotal.current == 1 && connections.stats.connectionsActive.current == 1)
        connections.closed()
        #expect(connections.stats.connectionsActive.current == 0 && connections.stats.connectionSlots.current == 0,
                "every slot taken was given back once")
    }
}
