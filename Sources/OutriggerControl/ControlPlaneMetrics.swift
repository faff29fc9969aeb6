import Foundation
import NIOConcurrencyHelpers
import OutriggerXDS

/// The control plane's counters and its convergence histogram: from a mesh change (the first of a debounced
/// burst) to the moment a sidecar has answered everything that change sent it.
public final class ControlPlaneMetrics: Sendable {
    public final class Counter: Sendable {
        private let value = NIOLockedValueBox(0)
        public func add(_ amount: Int) { value.withLockedValue { $0 += amount } }
        public var current: Int { value.withLockedValue { $0 } }
    }

    /// A Prometheus histogram in seconds, and the raw samples of the last `keep` observations for percentiles.
    public final class Histogram: Sendable {
        public static let buckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        private struct State {
            var counts = [Int](repeating: 0, count: Histogram.buckets.count)
            var count = 0
            var sum = 0.0
            var recent: [Double] = []
        }
        private let state = NIOLockedValueBox(State())
        private let keep = 100_000

        public func observe(_ duration: Duration) {
            let seconds = duration.inSeconds
            state.withLockedValue { state in
                for (index, bound) in Self.buckets.enumerated() where seconds <= bound { state.counts[index] += 1 }
                state.count += 1
                state.sum += seconds
                if state.recent.count == keep { state.recent.removeFirst(keep / 10) }
                state.recent.append(seconds)
            }
        }

        public var count: Int { state.withLockedValue { $0.count } }

        /// The recent samples (seconds), oldest first.
        public var samples: [Double] { state.withLockedValue { $0.recent } }

        func prometheus(_ name: String, into out: inout String) {
            let snapshot = state.withLockedValue { $0 }
            for (index, bound) in Self.buckets.enumerated() { out += "\(name)_bucket{le=\"\(bound)\"} \(snapshot.counts[index])\n" }
            out += "\(name)_bucket{le=\"+Inf\"} \(snapshot.count)\n\(name)_sum \(snapshot.sum)\n\(name)_count \(snapshot.count)\n"
        }
    }

    public let connected = Counter()
    public let pushes = Counter()
    public let responses = Counter()
    public let acks = Counter()
    public let nacks = Counter()
    public let meshRejected = Counter()
    public let convergence = Histogram()

    /// Prometheus text for `/metrics`.
    public func prometheusText() -> String {
        var out = ""
        for (name, kind, help, value) in [
            ("outrigger_control_connected_sidecars", "gauge", "Sidecars with an ADS stream open.", connected.current),
            ("outrigger_control_pushes_total", "counter", "Mesh or registration changes pushed (after debounce).", pushes.current),
            ("outrigger_control_responses_total", "counter", "DiscoveryResponses sent.", responses.current),
            ("outrigger_control_acks_total", "counter", "DiscoveryResponses ACKed.", acks.current),
            ("outrigger_control_nacks_total", "counter", "DiscoveryResponses NACKed.", nacks.current),
            ("outrigger_control_mesh_rejected_total", "counter", "Mesh file edits refused (the running mesh was kept).", meshRejected.current),
        ] {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(kind)\n\(name) \(value)\n"
        }
        let name = "outrigger_control_convergence_seconds"
        out += "# HELP \(name) From a mesh change to a sidecar's answer to all it was sent for it.\n# TYPE \(name) histogram\n"
        convergence.prometheus(name, into: &out)
        return out
    }
}

extension ControlPlane {
    /// `/status` as JSON: every connected sidecar, its service, per type the versions sent and ACKed, and
    /// SYNCED / STALE / NACKED with the last error.
    public func statusObject() -> [String: Any] {
        let formatter = ISO8601DateFormatter()
        let sidecars: [[String: Any]] = status().map { sidecar in
            var types: [String: Any] = [:]
            for (type, status) in sidecar.types {
                func value(_ text: String?) -> Any { text.map { $0 as Any } ?? NSNull() }
                types[type.shortName] = ["sent": value(status.sent), "acked": value(status.acked), "nack": value(status.nack)]
            }
            return [
                "node": sidecar.identity.node,
                "service": sidecar.identity.service,
                "zone": sidecar.identity.zone.map { $0 as Any } ?? NSNull(),
                "connectedSince": formatter.string(from: sidecar.connectedAt),
                "draining": sidecar.draining,
                "sync": sidecar.sync,
                "types": types,
                // The mesh it is served: the store's version, and a rollout's generation once activated on it.
                "mesh": sidecar.mesh.map { $0 as Any } ?? NSNull(),
                "generation": sidecar.generation.map { $0 as Any } ?? NSNull(),
            ]
        }
        let recent = metrics.convergence.samples.suffix(1000).map { $0 * 1000 }
        let sorted = recent.sorted()
        func percentile(_ q: Double) -> Any { sorted.isEmpty ? NSNull() : sorted[min(Int((q * Double(sorted.count)).rounded(.up)) - 1, sorted.count - 1)] }
        var object: [String: Any] = [
            "sidecars": sidecars,
            "services": mesh.services.map(\.name),
            "counters": ["pushes": metrics.pushes.current, "responses": metrics.responses.current, "acks": metrics.acks.current,
                         "nacks": metrics.nacks.current, "meshRejected": metrics.meshRejected.current],
            // From a mesh change to each sidecar's answer, over the last 1,000 (milliseconds): what the mesh view charts.
            "convergence": ["count": metrics.convergence.count, "p50Ms": percentile(0.5), "p99Ms": percentile(0.99),
                            "maxMs": sorted.last.map { $0 as Any } ?? NSNull(), "recentMs": Array(recent.suffix(60))],
        ]
        if let (generation, activated) = rollout {
            object["rollout"] = ["generation": generation, "activated": activated]
        }
        if let (id, standing) = replica {
            object["replica"] = ["id": id, "leading": standing.leading, "leader": standing.leader.map { $0 as Any } ?? NSNull()]
        }
        return object
    }

    /// `outrigger control status`: a table like `istioctl proxy-status`, from a `/status` JSON object.
    public static func statusTable(_ object: [String: Any]) -> String {
        let sidecars = object["sidecars"] as? [[String: Any]] ?? []
        let types = XDSType.allCases.sorted()
        // Gathered from several replicas (`outrigger control status --store`): which one each sidecar talks to.
        let replicas = sidecars.contains { $0["replica"] != nil }
        var rows = [["NODE", "SERVICE"] + (replicas ? ["REPLICA"] : []) + ["CONNECTED SINCE", "SYNC", "MESH"]
            + types.map { $0 == .endpoints ? "EDS" : String($0.shortName.prefix(1)) + "DS" }]
        var errors: [String] = []
        for sidecar in sidecars {
            let byType = sidecar["types"] as? [String: [String: Any]] ?? [:]
            var row = [sidecar["node"] as? String ?? "?", sidecar["service"] as? String ?? "?"]
            if replicas { row.append(String((sidecar["replica"] as? String ?? "?").prefix(8))) }
            row += [sidecar["connectedSince"] as? String ?? "?",
                    (sidecar["sync"] as? String ?? "?") + ((sidecar["draining"] as? Bool) == true ? " (draining)" : ""),
                    (sidecar["mesh"] as? String).map { String($0.prefix(8)) + ((sidecar["generation"] as? Int).map { " (generation \($0))" } ?? "") } ?? "-"]
            for type in types {
                let status = byType[type.shortName] ?? [:]
                let sent = (status["sent"] as? String).map { String($0.prefix(8)) } ?? "-"
                let acked = (status["acked"] as? String).map { String($0.prefix(8)) } ?? "-"
                row.append(sent == acked ? sent : "\(acked)→\(sent)")
                if let nack = status["nack"] as? String { errors.append("\(row[0]) \(type.shortName) NACK \(nack)") }
            }
            rows.append(row)
        }
        var text = table(rows)
        if !errors.isEmpty { text += "\n" + errors.joined(separator: "\n") + "\n" }
        return text
    }

    /// Rows as a plain-text table: each column as wide as its widest cell, two spaces apart, a line per row.
    public static func table(_ rows: [[String]]) -> String {
        let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n") + "\n"
    }
}

extension Duration {
    /// Seconds as a floating-point number (for stats and reports).
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
