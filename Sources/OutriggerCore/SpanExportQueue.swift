/// The span exporter's queue and when it sends: a batch goes as soon as `batchSize` spans wait, or once the oldest
/// waiting span has waited `flushInterval` (a timer), or at once while closing; one batch is in flight at a time.
/// Full batches under load mean few requests to the collector (an OpenTelemetry SDK's batch processor waits the same
/// way). Bounded: spans that find `maxQueued` waiting are dropped. Pure: the exporter runs the actions it returns.
///
/// Spans are queued and sent in the pieces they came in (an event loop hands over up to 64 at a time): queuing and
/// taking a batch cost a few steps per piece, none per span, on whichever thread does it. Inlinable, so that the event
/// loops' calls are specialized for their spans rather than run generically.
public struct SpanExportQueue<Span> {
    /// Spans to send together, as the pieces they were queued in (a piece split only where a batch ends).
    public struct Batch {
        public let pieces: [ArraySlice<Span>]
        public let count: Int

        @inlinable public init(pieces: [ArraySlice<Span>]) {
            self.pieces = pieces
            count = pieces.reduce(0) { $0 + $1.count }
        }
    }

    public enum Action {
        case none
        /// Send this batch now; call `sent()` once it is done with (exported, failed or given up).
        case send(Batch)
        /// Call `flushTimerFired()` after this long (`flushInterval`).
        case armFlushTimer(Duration)
    }

    public var batchSize: Int
    public var maxQueued: Int
    public var flushInterval: Duration
    /// Pieces as they were queued; those before `head` were taken already (compacted once they are half of them).
    @usableFromInline var waiting: [ArraySlice<Span>] = []
    @usableFromInline var head = 0
    @usableFromInline var queuedCount = 0
    @usableFromInline var sending = false
    @usableFromInline var flushTimerArmed = false
    @usableFromInline var flushing = false

    @inlinable public init(batchSize: Int, maxQueued: Int, flushInterval: Duration = .seconds(1)) {
        self.batchSize = max(batchSize, 1)
        self.maxQueued = maxQueued
        self.flushInterval = flushInterval
    }

    /// Spans waiting (not the batch in flight).
    @inlinable public var count: Int { queuedCount }
    @inlinable public var isIdle: Bool { !sending && count == 0 }

    /// Queues what fits; returns what to do and how many spans were dropped.
    @inlinable public mutating func submitted(_ spans: [Span]) -> (action: Action, dropped: Int) {
        let kept = min(max(maxQueued - count, 0), spans.count)
        if kept > 0 {
            waiting.append(spans[..<kept])
            queuedCount += kept
        }
        return (nextStep(timerDue: false), spans.count - kept)
    }

    /// The flush interval has passed since the timer was armed: what waits goes, full batch or not.
    @inlinable public mutating func flushTimerFired() -> Action {
        flushTimerArmed = false
        return nextStep(timerDue: true)
    }

    /// The batch in flight is done with.
    @inlinable public mutating func sent() -> Action {
        sending = false
        return nextStep(timerDue: false)
    }

    /// Closing: what waits goes now, in batches, without waiting for the timer.
    @inlinable public mutating func flush() -> Action {
        flushing = true
        return nextStep(timerDue: true)
    }

    /// Forgets every waiting span (export turned off, or closed).
    @inlinable public mutating func removeAll() {
        waiting.removeAll()
        head = 0
        queuedCount = 0
    }

    @inlinable mutating func nextStep(timerDue: Bool) -> Action {
        guard !sending, count > 0 else { return .none }
        if count >= batchSize || timerDue || flushing {
            sending = true
            return .send(takeBatch())
        }
        if flushTimerArmed { return .none }
        flushTimerArmed = true
        return .armFlushTimer(flushInterval)
    }

    @inlinable mutating func takeBatch() -> Batch {
        var pieces: [ArraySlice<Span>] = []
        var taken = 0
        while taken < batchSize, head < waiting.count {
            let piece = waiting[head]
            let wanted = batchSize - taken
            if piece.count <= wanted {
                pieces.append(piece)
                taken += piece.count
                waiting[head] = []
                head += 1
            } else {
                pieces.append(piece.prefix(wanted))
                waiting[head] = piece.dropFirst(wanted)
                taken += wanted
            }
        }
        queuedCount -= taken
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        } else if head * 2 >= waiting.count {
            waiting.removeFirst(head)
            head = 0
        }
        return Batch(pieces: pieces)
    }
}

extension SpanExportQueue: Sendable where Span: Sendable {}
extension SpanExportQueue.Action: Sendable where Span: Sendable {}
extension SpanExportQueue.Batch: Sendable where Span: Sendable {}
