import Foundation
import OutriggerConfig
import OutriggerCore
import Testing

/// The overload manager through real sockets: requests in flight past the limit shed new ones (503
/// `overload`, connections closed), then stop the listener accepting; the admin answers throughout, and
/// everything comes back once the pressure falls.
@Suite("Overload manager, end to end")
struct OverloadTests {
    static func config(_ endpoints: [HostPort], maxActiveRequests: Int, stopAcceptingAt: Double) -> SidecarConfig {
        var config = Harness.config(routes: [RouteConfig(destination: .cluster("c"))],
                                    clusters: [ClusterConfig(name: "c", endpoints: endpoints, connectTimeout: .seconds(10), timeout: .seconds(60))])
        config.overload = OverloadConfig(interval: .milliseconds(20), maxActiveRequests: maxActiveRequests,
                                         disableKeepAliveAt: 0.5, refuseRequestsAt: 0.9, stopAcceptingAt: stopAcceptingAt)
        return config
    }

    static func level(_ harness: Harness) -> OverloadLevel { harness.sidecar.configStore.stats.listener("main").overloadLevel }

    @Test func requestsPastTheLimitAreShedAndServedAgainOnceThePressureFalls() async throws {
        try await withHarness(echoes: 1) { Self.config($0, maxActiveRequests: 2, stopAcceptingAt: 5) } _: { (harness: Harness) async throws in
            async let slow1 = fetch(harness.url + "/?delay=15000")
            async let slow2 = fetch(harness.url + "/?delay=15000")
            try await waitUntil { Self.level(harness) == .refusingRequests }
            let shed = try await fetch(harness.url + "/")
            #expect(shed.status == 503 && shed.headers["x-outrigger-reason"] == "overload", "\(shed.statusLine)")
            #expect(shed.headers["connection"] == "close")
            // HTTP/2: the stream is answered 503 and the connection gets a GOAWAY (NO_ERROR, its last stream), then closes.
            let h2 = try await HeldConnection.open(port: harness.port)
            h2.send(ConnectionDefenceTests.preface + ConnectionDefenceTests.emptySettings + ConnectionDefenceTests.headersFrame(stream: 1, flags: 0x5))
            #expect(try await h2.closedByPeer())
            let frames = ConnectionDefenceTests.frames(in: h2.bytes)
            #expect(frames.contains { $0.type == 0x1 }, "the stream's answer: \(frames.map(\.type))")
            #expect(frames.last { $0.type == 0x7 }?.payload.prefix(8) == [0, 0, 0, 1, 0, 0, 0, 0], "GOAWAY, last stream 1, NO_ERROR: \(frames.map(\.type))")
            let prometheus = try await fetch(harness.adminURL + "/stats/prometheus").body
            #expect(prometheus.contains("outrigger_overload_level{listener=\"main\"} 2"), "the admin answers and shows it")
            #expect(prometheus.contains("outrigger_overload_pressure{resource=\"active_requests\"} 1.0000"))
            #expect(try await slow1.status == 200)
            #expect(try await slow2.status == 200)
            try await waitUntil { Self.level(harness) == .normal }
            #expect(try await fetch(harness.url + "/").status == 200)
        }
    }

    @Test func atTheLastStepTheListenerStopsAcceptingAndTheAdminStillAnswers() async throws {
        try await withHarness(echoes: 1) { Self.config($0, maxActiveRequests: 1, stopAcceptingAt: 1.0) } _: { (harness: Harness) async throws in
            let stats = harness.sidecar.configStore.stats
            async let slow = fetch(harness.url + "/?delay=15000")
            try await waitUntil { Self.level(harness) == .notAccepting }
            let accepted = stats.listener("main").connectionsTotal.current
            // Connected (the kernel's backlog takes it), but not accepted while the pressure holds.
            let waiting = try await HeldConnection.open(port: harness.port)
            waiting.send(Array("GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
            let checks = stats.overloadChecks.current
            try await waitUntil { stats.overloadChecks.current >= checks + 5 }
            #expect(stats.listener("main").connectionsTotal.current == accepted, "not accepted meanwhile")
            #expect(waiting.bytes.isEmpty)
            #expect(try await fetch(harness.adminURL + "/stats").status == 200)
            #expect(try await slow.status == 200)
            // The pressure falls: the waiting connection is accepted and answered.
            try await waitUntil { String(decoding: waiting.bytes, as: UTF8.self).hasPrefix("HTTP/1.1 200") }
            await waiting.close()
        }
    }
}
