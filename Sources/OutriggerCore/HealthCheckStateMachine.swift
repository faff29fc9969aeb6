import OutriggerConfig

/// One endpoint's active health checking, as a pure state machine: verdicts in, health transitions and the
/// delay before the next check out. The checker around it does the I/O.
///
/// The first verdict decides at once (an endpoint is not kept out, or in, for thresholds' worth of checks
/// at start); after that `unhealthyThreshold` consecutive failures take a healthy endpoint out and
/// `healthyThreshold` consecutive passes bring an unhealthy one back.
public struct HealthCheckStateMachine: Sendable {
    public let config: HealthCheckConfig
    public private(set) var health: EndpointHealth = .unchecked
    private var consecutivePasses = 0
    private var consecutiveFailures = 0

    public init(_ config: HealthCheckConfig) {
        self.config = config
    }

    /// Records one check's verdict; returns the new health when it changed.
    public mutating func record(passed: Bool) -> EndpointHealth? {
        if passed {
            consecutivePasses += 1
            consecutiveFailures = 0
        } else {
            consecutiveFailures += 1
            consecutivePasses = 0
        }
        let next: EndpointHealth
        switch health {
        case .unchecked:
            next = passed ? .healthy : .unhealthy
        case .healthy:
            next = consecutiveFailures >= config.unhealthyThreshold ? .unhealthy : .healthy
        case .unhealthy:
            next = consecutivePasses >= config.healthyThreshold ? .healthy : .unhealthy
        }
        guard next != health else { return nil }
        health = next
        return next
    }

    /// Nanoseconds until the first check: a random part of `initialJitter`.
    public func initialDelay(random: inout FastRandom) -> Int64 {
        Self.jitter(config.initialJitter.nanoseconds, &random)
    }

    /// Nanoseconds until the next check: the interval for the current health, plus a random part of `jitter`.
    public func nextDelay(random: inout FastRandom) -> Int64 {
        let interval = health == .unhealthy ? (config.unhealthyInterval ?? config.interval) : config.interval
        return interval.nanoseconds + Self.jitter(config.jitter.nanoseconds, &random)
    }

    private static func jitter(_ bound: Int64, _ random: inout FastRandom) -> Int64 {
        bound > 0 ? Int64(random.next() % UInt64(bound)) : 0
    }
}

/// What an answer to a health check means, apart from the I/O that got it.
public enum HealthCheckVerdict {
    /// http: the status is expected and the body (when asked for) contains the text.
    public static func http(status: Int, body: String?, config: HealthCheckConfig) -> Bool {
        guard config.expectedStatuses.contains(where: { $0.contains(status) }) else { return false }
        guard let wanted = config.bodyContains else { return true }
        return body?.contains(wanted) ?? false
    }

    /// The `grpc.health.v1.HealthCheckRequest` message for `service`, as a length-prefixed gRPC frame.
    /// (One string field, so it is written by hand rather than with a protobuf library.)
    public static func grpcRequestFrame(service: String) -> [UInt8] {
        var message: [UInt8] = []
        let bytes = Array(service.utf8)
        if !bytes.isEmpty {
            message.append(0x0A)  // field 1, length-delimited
            appendVarint(UInt64(bytes.count), to: &message)
            message += bytes
        }
        let length = UInt32(message.count)
        return [0, UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)] + message
    }

    /// The serving status in a `grpc.health.v1.HealthCheckResponse` frame (1 is SERVING; 0, UNKNOWN, when the
    /// field is absent), or nil when the bytes are not one well-formed, uncompressed frame.
    public static func grpcServingStatus(frame: [UInt8]) -> Int? {
        guard frame.count >= 5, frame[0] == 0 else { return nil }
        let length = Int(frame[1]) << 24 | Int(frame[2]) << 16 | Int(frame[3]) << 8 | Int(frame[4])
        guard frame.count == 5 + length else { return nil }
        var index = 5
        var status = 0
        while index < frame.count {
            guard let key = readVarint(frame, &index) else { return nil }
            switch key & 7 {
            case 0:
                guard let value = readVarint(frame, &index) else { return nil }
                if key >> 3 == 1 { status = Int(truncatingIfNeeded: value) }
            case 2:
                guard let size = readVarint(frame, &index), index + Int(size) <= frame.count else { return nil }
                index += Int(size)
            case 1: index += 8
            case 5: index += 4
            default: return nil
            }
        }
        return index == frame.count ? status : nil
    }

    private static func appendVarint(_ value: UInt64, to bytes: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    private static func readVarint(_ bytes: [UInt8], _ index: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while index < bytes.count, shift < 64 {
            let byte = bytes[index]
            index += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}
