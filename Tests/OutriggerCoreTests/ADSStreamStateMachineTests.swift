import Foundation
import OutriggerControl
import OutriggerXDS
import SwiftProtobuf
import Testing

@Suite("ADS stream state machine (state of the world)")
struct ADSStreamStateMachineTests {
    typealias Machine = ADSStreamStateMachine

    static func resource(_ type: XDSType, _ name: String, _ content: String = "") -> XDSResource {
        var body = Google_Protobuf_Any()
        body.typeURL = type.rawValue
        body.value = Data((name + content).utf8)
        return XDSResource(type: type, name: name, body: body)
    }

    static func snapshot(clusters: [String], routes: String = "v1") -> [XDSType: [String: XDSResource]] {
        var snapshot: [XDSType: [String: XDSResource]] = [:]
        snapshot[.cluster] = Dictionary(uniqueKeysWithValues: clusters.map { ($0, resource(.cluster, $0)) })
        snapshot[.endpoints] = Dictionary(uniqueKeysWithValues: clusters.map { ($0, resource(.endpoints, $0)) })
        snapshot[.listener] = ["outbound": resource(.listener, "outbound")]
        snapshot[.route] = ["outbound": resource(.route, "outbound", routes)]
        return snapshot
    }

    /// A machine subscribed to all four types, with everything sent and ACKed.
    static func synced(_ snapshot: [XDSType: [String: XDSResource]]) -> (Machine, [XDSType: Machine.Response]) {
        var machine = Machine()
        var last: [XDSType: Machine.Response] = [:]
        _ = machine.snapshotChanged(snapshot)
        for type in XDSType.allCases {
            let names = (type == .endpoints || type == .route) ? snapshot[type]!.keys.sorted() : []
            for response in machine.received(Machine.Request(type: type, resourceNames: names)).responses { last[response.type] = response }
        }
        for response in last.values {
            _ = machine.received(Machine.Request(type: response.type, versionInfo: response.version, nonce: response.nonce,
                                                 resourceNames: (response.type == .endpoints || response.type == .route) ? response.resources.map(\.name) : []))
        }
        return (machine, last)
    }

    @Test func nothingIsSentBeforeTheFirstSnapshotThenEachSubscribedTypeOnce() {
        var machine = Machine()
        #expect(machine.received(Machine.Request(type: .cluster)).responses.isEmpty)
        let sent = machine.snapshotChanged(Self.snapshot(clusters: ["a", "b"]))
        #expect(sent.map(\.type) == [.cluster])
        #expect(sent[0].resources.map(\.name) == ["a", "b"])
        // The same content again sends nothing.
        #expect(machine.snapshotChanged(Self.snapshot(clusters: ["a", "b"])).isEmpty)
        // Endpoints are sent for the names asked for only.
        let endpoints = machine.received(Machine.Request(type: .endpoints, resourceNames: ["b"])).responses
        #expect(endpoints.map { $0.resources.map(\.name) } == [["b"]])
    }

    /// A rollout's COMMIT switches the sidecar to the view it was sent to prepare: adopted, only what differs from it
    /// goes next, and the sidecar's next request (the adopted version, the last nonce it had) is its ACK. When what
    /// it runs is not known, everything goes again.
    @Test func aCommittedViewIsAdoptedAndOnlyWhatDiffersFromItIsSent() {
        let (synced, last) = Self.synced(Self.snapshot(clusters: ["a"], routes: "v1"))
        var machine = synced
        let prepared = Self.snapshot(clusters: ["a", "b"], routes: "v2")
        machine.adopt(prepared)
        #expect(machine.isSynced)
        #expect(machine.snapshotChanged(prepared).isEmpty, "the sidecar runs it already")
        let ack = machine.received(Machine.Request(type: .route, versionInfo: Machine.version(of: prepared[.route]!), nonce: last[.route]!.nonce,
                                                   resourceNames: ["outbound"]))
        #expect(ack.events == [.acked(.route, version: Machine.version(of: prepared[.route]!))])
        // Fresher than what was prepared (the endpoints moved meanwhile): the routes alone go.
        let fresher = Self.snapshot(clusters: ["a", "b"], routes: "v3")
        #expect(machine.snapshotChanged(fresher).map(\.type) == [.route])
        #expect(Set(machine.resendAll().map(\.type)) == Set(XDSType.allCases), "not known: everything again")
    }

    @Test func acksAndNacksAreRecordedAndANackedVersionIsNeverResent() {
        var machine = Machine()
        _ = machine.snapshotChanged(Self.snapshot(clusters: ["a"]))
        let first = machine.received(Machine.Request(type: .cluster)).responses[0]
        let ack = machine.received(Machine.Request(type: .cluster, versionInfo: first.version, nonce: first.nonce))
        #expect(ack.events == [.acked(.cluster, version: first.version)])
        #expect(ack.responses.isEmpty)

        let second = machine.snapshotChanged(Self.snapshot(clusters: ["a", "bad"]))[0]
        let nack = machine.received(Machine.Request(type: .cluster, versionInfo: first.version, nonce: second.nonce, error: "Cluster 'bad': no"))
        #expect(nack.events == [.nacked(.cluster, version: second.version, message: "Cluster 'bad': no")])
        #expect(nack.responses.isEmpty, "the NACKed version is not sent again")
        #expect(machine.snapshotChanged(Self.snapshot(clusters: ["a", "bad"])).isEmpty)
        #expect(machine.status(of: .cluster).acked == first.version)
        // A new version goes out.
        #expect(machine.snapshotChanged(Self.snapshot(clusters: ["a", "good"])).map(\.type) == [.cluster])
    }

    @Test func aSubscriptionChangeAfterANackIsNoAck() {
        var machine = Machine(noncePrefix: "7-")
        _ = machine.snapshotChanged(Self.snapshot(clusters: ["a"]))
        let first = machine.received(Machine.Request(type: .cluster)).responses[0]
        #expect(first.nonce == "7-1", "nonces carry the stream's prefix")
        _ = machine.received(Machine.Request(type: .cluster, versionInfo: first.version, nonce: first.nonce))
        let second = machine.snapshotChanged(Self.snapshot(clusters: ["a", "bad"]))[0]
        _ = machine.received(Machine.Request(type: .cluster, versionInfo: first.version, nonce: second.nonce, error: "no"))
        // The sidecar asks again with its accepted (old) version and the same nonce: still not ACKed.
        let again = machine.received(Machine.Request(type: .cluster, versionInfo: first.version, nonce: second.nonce))
        #expect(again.events.isEmpty)
        #expect(machine.status(of: .cluster).acked == first.version && machine.status(of: .cluster).nacked?.version == second.version)
        #expect(machine.isSynced, "a NACKed version counts as answered")
    }

    @Test func endpointsWithoutNamesAreNoneAndAStarIsAll() {
        var machine = Machine()
        _ = machine.snapshotChanged(Self.snapshot(clusters: ["a", "b"]))
        let none = machine.received(Machine.Request(type: .endpoints, resourceNames: [])).responses
        #expect(none.map { $0.resources.count } == [0])
        let all = machine.received(Machine.Request(type: .endpoints, resourceNames: ["*"])).responses
        #expect(all.map { $0.resources.map(\.name) } == [["a", "b"]])
    }

    @Test func aStaleNonceIsIgnored() {
        var machine = Machine()
        _ = machine.snapshotChanged(Self.snapshot(clusters: ["a"]))
        let first = machine.received(Machine.Request(type: .cluster)).responses[0]
        let second = machine.snapshotChanged(Self.snapshot(clusters: ["a", "b"]))[0]
        let stale = machine.received(Machine.Request(type: .cluster, versionInfo: first.version, nonce: first.nonce, error: "late"))
        #expect(stale.events.isEmpty && stale.responses.isEmpty)
        #expect(machine.received(Machine.Request(type: .cluster, versionInfo: second.version, nonce: second.nonce)).events == [.acked(.cluster, version: second.version)])
    }

    @Test func clustersGoBeforeTheRoutesThatUseThem() {
        var (machine, _) = Self.synced(Self.snapshot(clusters: ["a"]))
        let sent = machine.snapshotChanged(Self.snapshot(clusters: ["a", "b"], routes: "to-b"))
        #expect(sent.map(\.type) == [.cluster, .route], "the endpoints of b follow once the sidecar asks for them by name")
        #expect(sent[0].resources.map(\.name) == ["a", "b"])
    }

    @Test func aRemovedClusterGoesLastAfterTheRoutesThatStoppedUsingIt() {
        var (machine, _) = Self.synced(Self.snapshot(clusters: ["a", "old"]))
        let sent = machine.snapshotChanged(Self.snapshot(clusters: ["a", "new"], routes: "to-new"))
        #expect(sent.map(\.type) == [.cluster, .endpoints, .route, .cluster])
        #expect(sent[0].resources.map(\.name) == ["a", "new", "old"], "first the union: new added, old still there")
        #expect(sent[3].resources.map(\.name) == ["a", "new"], "old removed once the routes no longer use it")
    }

    @Test func versionsAreContentHashes() {
        let one = ["a": Self.resource(.cluster, "a")]
        #expect(Machine.version(of: one) == Machine.version(of: one))
        #expect(Machine.version(of: one) != Machine.version(of: ["a": Self.resource(.cluster, "a", "changed")]))
        #expect(Machine.version(of: one).count == 16)
    }
}
