/// The span exporter's queue and when it sends: a batch goes as soon as `batchSize` spans wait, or once the oldest
/// waiting span has waited `flushInterval` (a timer), or at once while closing; one batch is in flight at a time.
/// Full batches under load mean few requests to the collector (an OpenTelemetry SDK's batch processor waits the same
/// way). Bounded: spans that find `maxQueued` waiting are dropped. Pure: the exporter runs the actions it returns.
public struct SpanExportQueue<Span> {
    public enum Action {
        case none
        /// Send this batch now; call `sent()` once it is done with (exported, failed or given up).
        case send([Span])
        /// Call `flushTimerFired()` after this long (`flushInterval`).
        case armFlushTimer(Duration)
    }

    public var batchSize: Int
    public var maxQueued: Int
    public var flushInterval: Duration
    private var waiting: [Span] = []
    /// Spans before this index in `waiting` were taken already (compacted once they are half of it).
    private var head = 0
    private var sending = false
    private var flushTimerArmed = false
    private var flushing = false

    public init(batchSize: Int, maxQueued: Int, flushInterval: Duration = .seconds(1)) {
        self.batchSize = max(batchSize, 1)
        self.maxQueued = maxQueued
        self.flushInterval = flushInterval
    }

    public var count: Int { waiting.count - head }
    public var isIdle: Bool { !sending && count == 0 }

    /// Queues what fits; returns what to do and how many spans were dropped.
    public mutating func submitted(_ spans: some Collection<Span>) -> (action: Action, dropped: Int) {
        let room = max(maxQueued - count, 0)
        waiting.append(contentsOf: spans.prefix(room))
        let dropped = spans.count - min(room, spans.count)
        return (nextStep(timerDue: false), dropped)
    }

    /// The flush interval has passed since the timer was armed: what waits goes, full batch or not.
    public mutating func flushTimerFired() -> Action {
        flushTimerArmed = false
        return nextStep(timerDue: true)
    }

    /// The batch in flight is done with.
    public mutating func sent() -> Action {
        sending = false
        return nextStep(timerDue: false)
    }

    /// Closing: what waits goes now, in batches, without waiting for the timer.
    public mutating func flush() -> Action {
        flushing = true
        return nextStep(timerDue: true)
    }

    /// Forgets every waiting span (export turned off, or closed).
    public mutating func removeAll() {
        waiting.removeAll()
        head = 0
    }

    private mutating func nextStep(timerDue: Bool) -> Action {
        guard !sending, count > 0 else { return .none }
        if count >= batchSize || timerDue || flushing {
            sending = true
            return .send(takeBatch())
        }
        if flushTimerArmed { return .none }
        flushTimerArmed = true
        return .armFlushTimer(flushInterval)
    }

    private mutating func takeBatch() -> [Span] {
        let end = head + min(batchSize, count)
        let batch = Array(waiting[head..<end])
        head = end
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        } else if head * 2 >= waiting.count {
            waiting.removeFirst(head)
            head = 0
        }
        return batch
    }
}

extension SpanExportQueue: Sendable where Span: Sendable {}
extension SpanExportQueue.Action: Sendable where Span: Sendable {}
