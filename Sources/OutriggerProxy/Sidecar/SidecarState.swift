import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerCore

/// What the admin endpoints read from the running sidecar.
struct SidecarState: Sendable {
    let configStore: ConfigStore
    let accessLogs: AccessLogSinks
    let spans: SpanExporter
    let isDraining: @Sendable () -> Bool
    let extensions: @Sendable () -> AdminExtension?
    let mutationGuard: AdminMutationGuard

    /// Access log destinations' losses, in Prometheus text.
    func accessLogPrometheusText() -> String {
        let sinks = accessLogs.all.sorted { $0.path < $1.path }
        var out = PrometheusText()
        for (name, help, value) in [
            ("outrigger_access_log_dropped_lines_total", "Access log lines dropped (the writer fell 8 MiB behind, or a write failed).", \AccessLogSink.droppedLines),
            ("outrigger_access_log_write_errors_total", "Access log writes that failed.", \AccessLogSink.writeErrors),
        ] {
            out.family(name, "counter", help)
            for sink in sinks { out.sample(name, [("path", sink.path)], sink[keyPath: value]) }
        }
        return out.text
    }

    /// The span exporter's figures, in Prometheus text.
    func spanPrometheusText() -> String {
        var out = PrometheusText()
        out.family("outrigger_trace_spans_total", "counter", "Spans of sampled requests by what became of them: recorded (ended), exported (the collector took them), dropped (the export queue was full), failed (the collector refused their batch, or it failed five times).")
        for (outcome, value) in [("recorded", spans.recorded), ("exported", spans.exported), ("dropped", spans.dropped), ("failed", spans.failed)] {
            out.sample("outrigger_trace_spans_total", [("outcome", outcome)], value)
        }
        out.family("outrigger_trace_export_requests_total", "counter", "Requests to the trace collector by result (failed: no 2xx answer).")
        out.sample("outrigger_trace_export_requests_total", [("result", "ok")], spans.exportRequestsSucceeded)
        out.sample("outrigger_trace_export_requests_total", [("result", "failed")], spans.exportRequestsFailed)
        out.family("outrigger_trace_spans_queued", "gauge", "Spans waiting to be sent to the trace collector.")
        out.sample("outrigger_trace_spans_queued", [], spans.queued)
        return out.text
    }

    /// `/stats`' `tracing` object.
    func spanStatsObject() -> [String: Any] {
        ["exporting": spans.isExporting, "recorded": spans.recorded, "exported": spans.exported, "dropped": spans.dropped,
         "failed": spans.failed, "queued": spans.queued,
         "export_requests": ["ok": spans.exportRequestsSucceeded, "failed": spans.exportRequestsFailed]]
    }
}
