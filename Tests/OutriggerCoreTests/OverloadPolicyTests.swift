import OutriggerConfig
import OutriggerCore
import Testing

@Suite("Overload policy")
struct OverloadPolicyTests {
    static let config = OverloadConfig(maxMemoryBytes: 1000, maxActiveRequests: 100, maxEventLoopDelay: .milliseconds(100))

    @Test func theHighestReadingAgainstItsLimitIsThePressure() {
        let readings = OverloadReadings(memoryBytes: 500, activeRequests: 90, connections: 10, eventLoopDelayNanoseconds: 20_000_000)
        let pressures = Dictionary(uniqueKeysWithValues: readings.pressures(Self.config, connectionLimit: 1000).map { ($0.resource, $0.pressure) })
        #expect(pressures == ["connections": 0.01, "active_requests": 0.9, "memory": 0.5, "event_loop_delay": 0.2])
        // Limits not set are not watched (the connection limit always is).
        let bare = readings.pressures(OverloadConfig(), connectionLimit: 20)
        #expect(bare.map(\.resource) == ["connections"] && bare[0].pressure == 0.5)
    }

    @Test(arguments: [
        // (pressure, expected level for a normal listener starting from normal)
        (0.5, OverloadLevel.normal), (0.9, .keepAliveDisabled), (0.95, .refusingRequests), (0.98, .notAccepting), (3.0, .notAccepting),
    ])
    func stepsAreTakenAtTheirThresholds(pressure: Double, expected: OverloadLevel) {
        #expect(OverloadPolicy.level(after: .normal, pressures: [("active_requests", pressure)], priority: .normal, config: Self.config) == expected)
    }

    @Test func connectionsOnlyEverDisableKeepAlive() {
        // Past maxConnections a new connection is closed at accept instead; open ones are served.
        #expect(OverloadPolicy.level(after: .normal, pressures: [("connections", 1.0), ("memory", 0.2)], priority: .normal, config: Self.config) == .keepAliveDisabled)
        #expect(OverloadPolicy.level(after: .normal, pressures: [("connections", 0.2), ("memory", 1.0)], priority: .normal, config: Self.config) == .notAccepting)
    }

    @Test func theLowestPriorityListenerIsShedFirstAndTheHighestLast() {
        #expect(OverloadPolicy.level(after: .normal, pressures: [("memory", 0.90)], priority: .low, config: Self.config) == .refusingRequests)
        #expect(OverloadPolicy.level(after: .normal, pressures: [("memory", 0.90)], priority: .normal, config: Self.config) == .keepAliveDisabled)
        #expect(OverloadPolicy.level(after: .normal, pressures: [("memory", 0.90)], priority: .high, config: Self.config) == .normal)
    }

    @Test func aStepIsUndoneOnlyWellBelowItsThreshold() {
        #expect(OverloadPolicy.level(after: .refusingRequests, pressures: [("memory", 0.93)], priority: .normal, config: Self.config) == .refusingRequests)
        #expect(OverloadPolicy.level(after: .refusingRequests, pressures: [("memory", 0.89)], priority: .normal, config: Self.config) == .keepAliveDisabled)
        #expect(OverloadPolicy.level(after: .refusingRequests, pressures: [("memory", 0.80)], priority: .normal, config: Self.config) == .normal)
        // Rising, the same 0.93 is not enough to start refusing.
        #expect(OverloadPolicy.level(after: .keepAliveDisabled, pressures: [("memory", 0.93)], priority: .normal, config: Self.config) == .keepAliveDisabled)
    }
}
