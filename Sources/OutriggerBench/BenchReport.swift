import Foundation
import Histogram

/// How one request ended.
public enum RequestOutcome: String, CaseIterable, Codable, Sendable {
    case status1xx = "1xx", status2xx = "2xx", status3xx = "3xx", status4xx = "4xx", status5xx = "5xx"
    case timeout, reset
    case connectError = "connect_error"

    public static func status(_ code: Int) -> RequestOutcome {
        switch code {
        case ..<200: return .status1xx
        case 200..<300: return .status2xx
        case 300..<400: return .status3xx
        case 400..<500: return .status4xx
        default: return .status5xx
        }
    }

    /// Succeeded means an answer other than 5xx arrived.
    public var isFailure: Bool {
        switch self {
        case .status5xx, .timeout, .reset, .connectError: return true
        default: return false
        }
    }
}

/// Results of one load test: what was sent, how it ended, and latency in an HdrHistogram (microseconds).
public struct BenchResults: Sendable {
    public var sent = 0
    /// Closed loop: requests still in flight when the window closed; like wrk and h2load, they count
    /// neither as completed nor as failed. (Open loop waits for every request it sent.)
    public var unfinished = 0
    public var outcomes: [RequestOutcome: Int] = [:]
    public var latency = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    public var measuredSeconds: Double = 0

    public init() {}

    public mutating func record(_ outcome: RequestOutcome, latencyMicroseconds: UInt64?) {
        outcomes[outcome, default: 0] += 1
        if let latencyMicroseconds { _ = latency.record(min(latencyMicroseconds, 60_000_000)) }
    }

    public var completed: Int { outcomes.filter { !$0.key.isFailure }.values.reduce(0, +) }
    public var failed: Int { outcomes.filter { $0.key.isFailure }.values.reduce(0, +) }
    /// Requests answered with any status (5xx included): zero means the target never answered.
    public var answered: Int {
        outcomes.filter { ![.timeout, .reset, .connectError].contains($0.key) }.values.reduce(0, +)
    }

    public var achievedRate: Double { measuredSeconds > 0 ? Double(completed + failed) / measuredSeconds : 0 }

    /// Milliseconds at the given percentile (0 with no samples).
    public func latencyMilliseconds(_ percentile: Double) -> Double {
        latency.totalCount == 0 ? 0 : Double(latency.valueAtPercentile(percentile)) / 1000
    }

    public struct Summary: Codable, Sendable {
        public var sent: Int
        public var unfinished: Int
        public var completed: Int
        public var failed: Int
        public var outcomes: [String: Int]
        public var durationSeconds: Double
        public var achievedRate: Double
        public var latencyMilliseconds: [String: Double]
    }

    public var summary: Summary {
        Summary(
            sent: sent, unfinished: unfinished, completed: completed, failed: failed,
            outcomes: Dictionary(uniqueKeysWithValues: outcomes.map { ($0.key.rawValue, $0.value) }),
            durationSeconds: measuredSeconds, achievedRate: achievedRate,
            latencyMilliseconds: [
                "min": latency.totalCount == 0 ? 0 : Double(latency.min) / 1000,
                "p50": latencyMilliseconds(50), "p90": latencyMilliseconds(90), "p99": latencyMilliseconds(99),
                "p99.9": latencyMilliseconds(99.9),
                "max": Double(latency.maxRecorded) / 1000,
            ]
        )
    }

    /// A table for the terminal.
    public func table(title: String) -> String {
        let s = summary
        var lines = [title, String(repeating: "-", count: title.count)]
        lines.append(String(format: "requests   sent %d, completed %d, failed %d, in %.2f s (%.0f req/s)", s.sent, s.completed, s.failed, s.durationSeconds, s.achievedRate)
                     + (s.unfinished > 0 ? ", \(s.unfinished) in flight at the end (not counted)" : ""))
        let outcomes = RequestOutcome.allCases.compactMap { outcome in s.outcomes[outcome.rawValue].map { "\(outcome.rawValue) \($0)" } }
        lines.append("outcomes   " + outcomes.joined(separator: ", "))
        let l = s.latencyMilliseconds
        lines.append(String(format: "latency ms min %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f",
                            l["min"]!, l["p50"]!, l["p90"]!, l["p99"]!, l["p99.9"]!, l["max"]!))
        return lines.joined(separator: "\n")
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(summary)
    }
}
