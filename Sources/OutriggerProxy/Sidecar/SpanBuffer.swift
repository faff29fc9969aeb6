import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// One event loop's ended spans on their way to the exporter: handed over 64 at a time, or 100 ms after the first of
/// a batch, so a loop takes the exporter's lock once per batch rather than once per span. Touched only on its loop.
final class SpanBuffer {
    static let handOffCount = 64
    static let flushDelay: TimeAmount = .milliseconds(100)

    private let exporter: SpanExporter
    private let eventLoop: any EventLoop
    private var spans: [SpanRecord] = []
    private var flushScheduled = false

    init(exporter: SpanExporter, eventLoop: any EventLoop) {
        self.exporter = exporter
        self.eventLoop = eventLoop
    }

    /// Takes `span` (`consuming`): it moves into the hand-over array, not copied (a span is ~300 bytes of fields).
    func append(_ span: consuming SpanRecord) {
        if spans.capacity == 0 { spans.reserveCapacity(Self.handOffCount) }
        spans.append(consume span)
        if spans.count >= Self.handOffCount {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().scheduleTask(in: Self.flushDelay) {
                self.flushScheduled = false
                self.flush()
            }
        }
    }

    /// Hands every span over now (the timer, a full batch, shutdown).
    func flush() {
        guard !spans.isEmpty else { return }
        let batch = spans
        spans = []
        exporter.submit(batch)
    }
}

@available(*, unavailable)
extension SpanBuffer: Sendable {}
