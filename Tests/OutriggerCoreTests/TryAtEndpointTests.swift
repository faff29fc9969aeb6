import NIOCore
import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("A try's hold on its endpoint")
struct TryAtEndpointTests {
    static let endpoint: Endpoint = {
        let host = HostPort(host: "127.0.0.1", port: 1)
        return Endpoint(configured: host, address: try! SocketAddress(ipAddress: "127.0.0.1", port: 1),
                        cluster: ClusterConfig(name: "c", endpoints: [host]))
    }()

    @Test func eachPartOfAHoldIsLetGoOnce() {
        var hold = TryAtEndpoint(endpoint: Self.endpoint, startedAt: 5, owesBreakerVerdict: true)
        let (firstDebt, secondDebt) = (hold.takeBreakerDebt(), hold.takeBreakerDebt())
        #expect(firstDebt && !secondDebt, "one verdict per admission")
        let (firstLeave, secondLeave) = (hold.leaveEndpoint(), hold.leaveEndpoint())
        #expect(firstLeave && !secondLeave, "the endpoint's load drops once")
        var unguarded = TryAtEndpoint(endpoint: Self.endpoint, startedAt: 5, owesBreakerVerdict: false)
        let owed = unguarded.takeBreakerDebt()
        #expect(!owed && unguarded.countsAtEndpoint)
    }

    @Test func aHedgeTakesTheHoldWhole() {
        var current = TryAtEndpoint(endpoint: Self.endpoint, startedAt: 7, owesBreakerVerdict: true)
        var hedged = current.handOver()
        #expect(!current.countsAtEndpoint && !current.owesBreakerVerdict, "the request's try keeps nothing")
        let (leaves, owes) = (current.leaveEndpoint(), current.takeBreakerDebt())
        #expect(!leaves && !owes, "so ending it releases nothing twice")
        #expect(hedged.countsAtEndpoint && hedged.owesBreakerVerdict && hedged.startedAt == 7 && hedged.endpoint === Self.endpoint)
        let hedgeLeaves = hedged.leaveEndpoint()
        #expect(hedgeLeaves)
    }
}
