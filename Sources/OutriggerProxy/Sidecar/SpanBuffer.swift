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
        if spans.capacity < Self.handOffCount { spans.reserveCapacity(Self.handOffCount) }
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
        exporter.submit(Self.takeBatch(&spans, fullAt: Self.handOffCount))
    }

    /// The batch to hand over, sized to what it holds: the exporter keeps batches whole (the last 256 spans for
    /// `/traces`), so a batch the timer sends with a few spans must not carry storage for `fullAt`. At low rates
    /// (one span per flush) that storage was 64 spans' worth per span kept, ~1 MiB of the sidecar's memory.
    /// A full batch moves as it is; a partial one is copied (a few spans) and `pending` keeps its storage for the next.
    static func takeBatch<Element>(_ pending: inout [Element], fullAt: Int) -> [Element] {
        if pending.count >= fullAt {
            let full = pending
            pending = []
            return full
        }
        defer { pending.removeAll(keepingCapacity: true) }
        return pending.withUnsafeBufferPointer { Array($0) }
    }
}

@available(*, unavailable)
extension SpanBuffer: Sendable {}
