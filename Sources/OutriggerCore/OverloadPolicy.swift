import OutriggerConfig

/// How far a listener sheds load, in steps, each including the ones before.
public enum OverloadLevel: Int, Comparable, CaseIterable, Sendable {
    case normal = 0
    /// HTTP/1.1 connections close after their response.
    case keepAliveDisabled = 1
    /// New requests are answered 503 `overload`.
    case refusingRequests = 2
    /// The listener accepts no connection.
    case notAccepting = 3

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }

    public var name: String {
        switch self {
        case .normal: return "normal"
        case .keepAliveDisabled: return "keep_alive_disabled"
        case .refusingRequests: return "refusing_requests"
        case .notAccepting: return "not_accepting"
        }
    }
}

/// What the overload manager reads each interval, and the pressure it makes: the highest reading as a
/// fraction of its limit (a resource without a limit does not count).
public struct OverloadReadings: Equatable, Sendable {
    public var memoryBytes: Int?
    public var activeRequests: Int
    public var connections: Int
    /// The latest delay of a task given to each event loop, the largest, in nanoseconds.
    public var eventLoopDelayNanoseconds: Int64

    public init(memoryBytes: Int?, activeRequests: Int, connections: Int, eventLoopDelayNanoseconds: Int64) {
        self.memoryBytes = memoryBytes
        self.activeRequests = activeRequests
        self.connections = connections
        self.eventLoopDelayNanoseconds = eventLoopDelayNanoseconds
    }

    /// The resource names, as stats label them.
    public static let connectionsResource = "connections"

    /// Each resource's pressure, by the name stats give it.
    public func pressures(_ config: OverloadConfig, connectionLimit: Int) -> [(resource: String, pressure: Double)] {
        var pressures: [(String, Double)] = [(Self.connectionsResource, Double(connections) / Double(max(connectionLimit, 1)))]
        if let limit = config.maxActiveRequests { pressures.append(("active_requests", Double(activeRequests) / Double(limit))) }
        if let limit = config.maxMemoryBytes, let memoryBytes { pressures.append(("memory", Double(memoryBytes) / Double(limit))) }
        if let limit = config.maxEventLoopDelay {
            pressures.append(("event_loop_delay", Double(eventLoopDelayNanoseconds) / Double(max(limit.nanoseconds, 1))))
        }
        return pressures
    }
}

/// Decides a listener's level from the pressures: a step is taken at its threshold (5 points earlier for a
/// `low` listener, later for a `high` one) and undone only 5 points below it, so a pressure hovering at a
/// threshold does not flap. Connections only ever disable keep-alive (so connections turn over and slots
/// free up): past `maxConnections` a new connection is closed at accept, which tells its client at once, and
/// the requests of those already open are served. Pure.
public enum OverloadPolicy {
    public static let priorityShift = 0.05
    public static let hysteresis = 0.05

    public static func level(after current: OverloadLevel, pressures: [(resource: String, pressure: Double)],
                             priority: ListenerConfig.OverloadPriority, config: OverloadConfig) -> OverloadLevel {
        let shift: Double
        switch priority {
        case .low: shift = -priorityShift
        case .normal: shift = 0
        case .high: shift = priorityShift
        }
        let highest = pressures.map(\.pressure).max() ?? 0
        let highestButConnections = pressures.filter { $0.resource != OverloadReadings.connectionsResource }.map(\.pressure).max() ?? 0
        let thresholds: [(OverloadLevel, Double, Double)] = [
            (.notAccepting, config.stopAcceptingAt + shift, highestButConnections),
            (.refusingRequests, config.refuseRequestsAt + shift, highestButConnections),
            (.keepAliveDisabled, config.disableKeepAliveAt + shift, highest),
        ]
        for (level, threshold, pressure) in thresholds {
            // A step already taken holds until the pressure is clearly below it.
            let holds = current >= level ? threshold - hysteresis : threshold
            if pressure >= holds { return level }
        }
        return .normal
    }
}
