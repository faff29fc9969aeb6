import OutriggerConfig

/// What a wave must hold to let the next one go: `error-ratio<1%,p99<300ms`.
struct RolloutGate: Sendable, Equatable {
    /// Failed requests per request, over the activated sidecars.
    var maxErrorRatio: Double?
    var maxP99: Duration?

    struct Readings: Sendable, Equatable {
        var requests = 0
        var errors = 0
        var p99: Duration?
        /// Sidecars whose stats could not be read: a gate that cannot see a sidecar does not let the next wave go.
        var unread: [String] = []
    }

    /// What the gate reads from one sidecar's `/stats/prometheus` (its routes' requests, 5xx answers and latency buckets);
    /// the readings of a soak are what changed between two samples, summed over the wave's sidecars.
    struct Sample: Sendable, Equatable {
        /// Each counted series, by its name and labels as exposed.
        var series: [String: Double] = [:]

        static let requests = "outrigger_route_request_duration_seconds_count"
        static let errors = "outrigger_route_server_errors_total"
        static let buckets = "outrigger_route_request_duration_seconds_bucket"

        /// The series the gate reads, from Prometheus text exposition.
        init(metrics text: String) {
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                guard line.hasPrefix(Self.requests) || line.hasPrefix(Self.errors) || line.hasPrefix(Self.buckets),
                      let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
                series[String(line[..<space])] = value
            }
        }

        init() {}

        /// What each series counted since `earlier` (a series that went back, its sidecar's routes replaced, counts
        /// from zero).
        func since(_ earlier: Sample) -> Sample {
            var delta = Sample()
            for (key, value) in series {
                let before = earlier.series[key] ?? 0
                delta.series[key] = value >= before ? value - before : value
            }
            return delta
        }

        /// The readings of a set of such deltas: requests and 5xx answers summed; p99 as the upper bound of the
        /// latency bucket the 99th percentile falls in (as Prometheus's `histogram_quantile` places it, without
        /// interpolating: the gate errs on the side of a breach).
        static func readings(_ deltas: [Sample]) -> Readings {
            var readings = Readings()
            var buckets: [Double: Double] = [:]
            for delta in deltas {
                for (key, value) in delta.series {
                    if key.hasPrefix(requests) {
                        readings.requests += Int(value)
                    } else if key.hasPrefix(errors) {
                        readings.errors += Int(value)
                    } else if let range = key.range(of: "le=\""), let end = key[range.upperBound...].firstIndex(of: "\"") {
                        let bound = key[range.upperBound..<end]
                        buckets[bound == "+Inf" ? .infinity : Double(bound) ?? .infinity, default: 0] += value
                    }
                }
            }
            guard readings.requests > 0 else { return readings }
            let rank = 0.99 * Double(readings.requests)
            if let bound = buckets.keys.sorted().first(where: { buckets[$0]! >= rank }) {
                readings.p99 = bound.isFinite ? .microseconds(Int64((bound * 1_000_000).rounded())) : .seconds(86_400)
            }
            return readings
        }
    }

    /// No limit: every wave goes.
    var isEmpty: Bool { maxErrorRatio == nil && maxP99 == nil }

    init(maxErrorRatio: Double? = nil, maxP99: Duration? = nil) {
        self.maxErrorRatio = maxErrorRatio
        self.maxP99 = maxP99
    }

    /// Parses `error-ratio<1%,p99<300ms` (either, both, in any order); the error says what was expected.
    init(parsing text: String) throws(RolloutGateError) {
        for term in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !term.isEmpty {
            let parts = term.split(separator: "<", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { throw .malformed(term, "expected NAME<LIMIT, e.g. error-ratio<1% or p99<300ms") }
            switch parts[0] {
            case "error-ratio":
                guard parts[1].hasSuffix("%"), let percent = Double(parts[1].dropLast()), (0...100).contains(percent) else {
                    throw .malformed(term, "expected a percentage, e.g. error-ratio<1%")
                }
                maxErrorRatio = percent / 100
            case "p99":
                guard let limit = Self.duration(parts[1]) else { throw .malformed(term, "expected a duration, e.g. p99<300ms or p99<1s") }
                maxP99 = limit
            default:
                throw .malformed(term, "expected error-ratio or p99")
            }
        }
    }

    private static func duration(_ text: String) -> Duration? {
        // Up to a day: a limit no p99 reaches is no gate.
        guard let limit = ConfigDuration.parse(text), limit > .zero, limit <= .seconds(86_400) else { return nil }
        return limit
    }

    /// What the readings breach, or nil. A wave that served nothing breaches nothing.
    func breach(_ readings: Readings) -> String? {
        if !isEmpty, !readings.unread.isEmpty {
            let named = readings.unread.prefix(5).joined(separator: ", ") + (readings.unread.count > 5 ? ", …" : "")
            return "the gate cannot read the stats of \(readings.unread.count) sidecar(s) (\(named)): their admin listeners must be reachable from the control plane"
        }
        if let maxErrorRatio, readings.requests > 0 {
            let ratio = Double(readings.errors) / Double(readings.requests)
            if ratio >= maxErrorRatio {
                return "error ratio \(Self.percent(ratio)) (\(readings.errors) of \(readings.requests)) is not below \(Self.percent(maxErrorRatio))"
            }
        }
        if let maxP99, let p99 = readings.p99, p99 >= maxP99 {
            return "p99 \(p99) is not below \(maxP99)"
        }
        return nil
    }

    private static func percent(_ ratio: Double) -> String {
        let value = (ratio * 1000).rounded() / 10
        return value == value.rounded() ? "\(Int(value))%" : "\(value)%"
    }
}

enum RolloutGateError: Error, Equatable, CustomStringConvertible {
    case malformed(String, String)

    var description: String {
        switch self {
        case .malformed(let term, let expected): "--gate: '\(term)': \(expected)"
        }
    }
}
