import Foundation
import OutriggerConfig
import OutriggerControl
import OutriggerXDS
import SwiftProtobuf
import Testing

@Suite("A sidecar's xDS state: hold, apply, refuse, subscribe, persist")
struct XDSClientStateTests {
    static let base = SidecarConfig(listeners: [], clusters: [])

    static func resources(usersTo cluster: String = "users") throws -> [XDSType: [Google_Protobuf_Any]] {
        let listener = ListenerConfig(name: "outbound", address: HostPort(host: "127.0.0.1", port: 15001), direction: .outbound,
                                      virtualHosts: [VirtualHostConfig(name: "users", domains: ["users"], routes: [RouteConfig(destination: .cluster(cluster))])])
        let clusters = [ClusterConfig(name: "users", endpoints: [HostPort(host: "127.0.0.1", port: 9001)]),
                        ClusterConfig(name: "orders", endpoints: [HostPort(host: "127.0.0.1", port: 9002)])]
        var byType: [XDSType: [Google_Protobuf_Any]] = [:]
        for resource in try XDSEncoder.resources(listeners: [listener], clusters: clusters) { byType[resource.type, default: []].append(resource.body) }
        return byType
    }

    @Test func resourcesAreHeldUntilWhatTheyNameArrivesThenApplied() throws {
        var state = XDSClientState()
        let all = try Self.resources()
        guard case .hold = state.received(type: .cluster, version: "c1", nonce: "1", resources: all[.cluster]!, base: Self.base) else {
            Issue.record("clusters without their endpoints are held"); return
        }
        state.commit()
        #expect(state.subscriptionChanges() == [.endpoints: ["orders", "users"]], "then their endpoints are asked for by name")
        let decision = state.received(type: .endpoints, version: "e1", nonce: "2", resources: all[.endpoints]!, base: Self.base)
        guard case .apply(let config) = decision else {
            Issue.record("clusters with endpoints and no listener make a whole config: \(decision)"); return
        }
        #expect(config.clusters.map(\.name).sorted() == ["orders", "users"])
        state.commit()
        guard case .hold = state.received(type: .listener, version: "l1", nonce: "3", resources: all[.listener]!, base: Self.base) else {
            Issue.record("a listener waits for its routes"); return
        }
        state.commit()
        #expect(state.subscriptionChanges() == [.route: ["outbound"]])
        guard case .apply(let whole) = state.received(type: .route, version: "r1", nonce: "4", resources: all[.route]!, base: Self.base) else {
            Issue.record("routes complete the config"); return
        }
        #expect(whole.listeners.first?.virtualHosts.first?.routes.first?.destination == .cluster("users"))
        state.commit()
        #expect(state.versions == [.cluster: "c1", .endpoints: "e1", .listener: "l1", .route: "r1"])
    }

    @Test func aRefusedResponseChangesNothing() throws {
        var state = XDSClientState()
        let all = try Self.resources()
        for (type, version) in [(XDSType.cluster, "c1"), (.endpoints, "e1"), (.listener, "l1"), (.route, "r1")] {
            _ = state.received(type: type, version: version, nonce: version, resources: all[type]!, base: Self.base)
            state.commit()
        }
        let bad = try Self.resources(usersTo: "nowhere")[.route]!
        guard case .reject(let rejection) = state.received(type: .route, version: "r2", nonce: "9", resources: bad, base: Self.base) else {
            Issue.record("a route to a cluster that was never sent is refused"); return
        }
        #expect(rejection.type == .route && rejection.message.contains("unknown cluster 'nowhere'"), "\(rejection)")
        state.commit()  // nothing to commit
        #expect(state.versions[.route] == "r1")
        #expect(state.nonces[.route] == "9", "the NACK answers the refused response's nonce")
    }

    @Test func thePersistedFormRestoresTheSameConfig() throws {
        var state = XDSClientState()
        let all = try Self.resources()
        var last: SidecarConfig?
        for (type, version) in [(XDSType.cluster, "c1"), (.endpoints, "e1"), (.listener, "l1"), (.route, "r1")] {
            if case .apply(let config) = state.received(type: type, version: version, nonce: version, resources: all[type]!, base: Self.base) { last = config }
            state.commit()
        }
        let bytes: [UInt8] = try state.persisted.serializedBytes()
        let (restored, config) = try XDSClientState.restoring(try Outrigger_V1_PersistedState(serializedBytes: bytes), base: Self.base)
        #expect(config == last)
        #expect(restored.versions == state.versions)
        #expect(restored.names[.endpoints] == ["orders", "users"] && restored.names[.route] == ["outbound"])
    }
}
