import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// The sidecar's spans once their requests ended: the last `recentCapacity` kept for the admin's `/traces`, and,
/// with `traceExport`, queued and POSTed in batches (OTLP/HTTP protobuf or Zipkin JSON) by a thread of its own:
/// a batch goes when `batchSize` spans wait or the oldest has waited `flushInterval` (`SpanExportQueue`).
/// Event loops hand spans over in batches (`SpanBuffer`) and never wait: past `maxQueuedSpans` a span is dropped
/// and counted. A batch the collector refuses for a while (connection failed, timeout, 429, 502, 503, 504) is sent
/// again with exponential backoff, five times at most; then, or on any other refusal, its spans count as failed.
public final class SpanExporter: Sendable {
    public static let recentCapacity = 256
    static let maxLeftRing = 4_096
    static let maxSendsPerBatch = 5

    /// What `configure` set: where and how to send, and the resource every batch describes.
    struct Settings: Sendable, Equatable {
        var config: TraceExportConfig
        var serviceName: String
        var resource: [SpanAttribute]
    }

    private struct State {
        var settings: Settings?
        /// The last spans ended, in the batches the loops handed over (oldest first): a batch is kept or let go
        /// whole, so a loop's hand-over does no work per span for the ring.
        var recent: [[SpanRecord]] = []
        var recentCount = 0
        /// Batches that left the ring, let go on the exporter's thread when it takes its next batch, so that an event
        /// loop does not pay for freeing spans — unless there is no export, or they pile up (`maxLeftRing` spans:
        /// a batch stuck retrying), and then the loop lets them go itself.
        var leftRing: [[SpanRecord]] = []
        var leftRingCount = 0
        var queue = SpanExportQueue<SpanRecord>(batchSize: TraceExportConfig.defaultBatchSize, maxQueued: TraceExportConfig.defaultMaxQueuedSpans,
                                                flushInterval: TraceExportConfig.defaultFlushInterval)
        var closed = false
        /// `close` waits on it until the queue is idle (or its time is up): completed once, by whoever takes it.
        var drainWaiter: EventLoopPromise<Void>?

        mutating func takeLeftRing(into taken: inout [[SpanRecord]]) {
            swap(&taken, &leftRing)
            leftRingCount = 0
        }
    }

    private let state = NIOLockedValueBox(State())
    /// One thread: encodes batches and talks to the collector, so no event loop ever does.
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let poster: SpanPoster
    /// Where batches are encoded, reused: touched on the exporter's thread only.
    private let encoding: NIOLoopBoundBox<EncodingBuffer>
    private let recordedCount = ManagedAtomic<Int>(0)
    private let exportedCount = ManagedAtomic<Int>(0)
    private let droppedCount = ManagedAtomic<Int>(0)
    private let failedCount = ManagedAtomic<Int>(0)
    private let postsSucceeded = ManagedAtomic<Int>(0)
    private let postsFailed = ManagedAtomic<Int>(0)

    public init() {
        poster = SpanPoster(eventLoop: group.next())
        encoding = .makeBoxSendingValue(EncodingBuffer(capacity: 64 * 1024), eventLoop: poster.eventLoop)
    }

    deinit {
        // A sidecar that failed to start never called close().
        group.shutdownGracefully { _ in }
    }

    /// Sets (or clears) where spans go. `serviceName` and `instance` describe this sidecar in every batch.
    public func configure(_ config: TraceExportConfig?, serviceName: String, instance: String?) {
        let settings = config.map { config -> Settings in
            let name = config.serviceName ?? serviceName
            var resource = [SpanAttribute("service.name", name)]
            if let instance { resource.append(SpanAttribute("service.instance.id", instance)) }
            resource += [SpanAttribute("telemetry.sdk.name", "outrigger"), SpanAttribute("telemetry.sdk.language", "swift")]
            return Settings(config: config, serviceName: name, resource: resource)
        }
        state.withLockedValue { state in
            state.settings = settings
            if let config = settings?.config {
                state.queue.batchSize = config.batchSize
                state.queue.maxQueued = config.maxQueuedSpans
                state.queue.flushInterval = config.flushInterval
            } else {
                state.queue.removeAll()
            }
        }
        if settings == nil { drainWaiterMayGo() }
    }

    // MARK: Figures

    /// Spans ended and handed over by the event loops.
    public var recorded: Int { recordedCount.load(ordering: .relaxed) }
    /// Spans the collector accepted.
    public var exported: Int { exportedCount.load(ordering: .relaxed) }
    /// Spans thrown away because the queue was full (the collector is slow or down).
    public var dropped: Int { droppedCount.load(ordering: .relaxed) }
    /// Spans given up on: their batch was refused, or failed `maxSendsPerBatch` times.
    public var failed: Int { failedCount.load(ordering: .relaxed) }
    public var exportRequestsSucceeded: Int { postsSucceeded.load(ordering: .relaxed) }
    public var exportRequestsFailed: Int { postsFailed.load(ordering: .relaxed) }
    public var queued: Int { state.withLockedValue { $0.queue.count } }
    public var isExporting: Bool { state.withLockedValue { $0.settings != nil } }

    /// The last spans ended (`recentCapacity` at most), newest first.
    public var recentSpans: [SpanRecord] {
        state.withLockedValue { state in
            Array(state.recent.joined().reversed().prefix(Self.recentCapacity))
        }
    }

    // MARK: Spans in

    /// Takes spans ended on an event loop: kept among the recent ones and queued for the collector. Never blocks
    /// beyond a short lock.
    func submit(_ spans: [SpanRecord]) {
        recordedCount.wrappingIncrement(by: spans.count, ordering: .relaxed)
        var leftRing: [[SpanRecord]] = []
        let (action, dropped) = state.withLockedValue { state -> (SpanExportQueue<SpanRecord>.Action, Int) in
            state.recent.append(spans)
            state.recentCount += spans.count
            while let oldest = state.recent.first, state.recentCount - oldest.count >= Self.recentCapacity {
                state.leftRing.append(state.recent.removeFirst())
                state.recentCount -= oldest.count
                state.leftRingCount += oldest.count
            }
            let exporting = state.settings != nil && !state.closed
            if !exporting || state.leftRingCount > Self.maxLeftRing { state.takeLeftRing(into: &leftRing) }
            return exporting ? state.queue.submitted(spans) : (.none, 0)
        }
        if dropped > 0 { droppedCount.wrappingIncrement(by: dropped, ordering: .relaxed) }
        run(action)
        _ = leftRing  // let go here, outside the lock
    }

    // MARK: Sending (on the exporter's thread)

    /// Runs what the queue asked for: a batch sent (from the exporter's thread), or the flush timer armed.
    private func run(_ action: SpanExportQueue<SpanRecord>.Action) {
        switch action {
        case .none:
            return
        case .send(let batch):
            poster.eventLoop.execute {
                var leftRing: [[SpanRecord]] = []
                let settings = self.state.withLockedValue { state in
                    state.takeLeftRing(into: &leftRing)
                    return state.settings
                }
                _ = leftRing  // let go here, on the exporter's thread
                guard let settings else { return self.batchDone() }
                self.send(batch, settings: settings, sendsSoFar: 0)
            }
        case .armFlushTimer(let interval):
            poster.eventLoop.scheduleTask(in: .nanoseconds(interval.nanoseconds)) {
                self.run(self.state.withLockedValue { $0.queue.flushTimerFired() })
            }
        }
    }

    /// The batch in flight is done with (exported, failed, or dropped with the export turned off): the next may go.
    private func batchDone() {
        run(state.withLockedValue { $0.queue.sent() })
        drainWaiterMayGo()
    }

    /// `close`'s wait ends when nothing is left to send (or at once with `timeUp`).
    private func drainWaiterMayGo(timeUp: Bool = false) {
        let waiter = state.withLockedValue { state -> EventLoopPromise<Void>? in
            guard timeUp || state.settings == nil || state.queue.isIdle else { return nil }
            defer { state.drainWaiter = nil }
            return state.drainWaiter
        }
        waiter?.succeed()
    }

    private func send(_ batch: SpanExportQueue<SpanRecord>.Batch, settings: Settings, sendsSoFar: Int) {
        let config = settings.config
        var body = poster.reusableBody()
        body.clear()
        let contentType: String
        switch config.format {
        case .otlp:
            let start = SpanEncoding.otlp(pieces: batch.pieces, resource: settings.resource, scopeName: "outrigger", scopeVersion: "0.1.0", into: encoding.value)
            body.writeBytes(encoding.value.bytes(from: start))
            contentType = "application/x-protobuf"
        case .zipkin:
            body.writeBytes(SpanEncoding.zipkin(pieces: batch.pieces, serviceName: settings.serviceName))
            contentType = "application/json"
        }
        poster.post(body, contentType: contentType, to: config.address, path: config.path, timeout: config.timeout).whenComplete { result in
            let status = (try? result.get()) ?? 0
            if (200..<300).contains(status) {
                self.postsSucceeded.wrappingIncrement(ordering: .relaxed)
                self.exportedCount.wrappingIncrement(by: batch.count, ordering: .relaxed)
                self.batchDone()
                return
            }
            self.postsFailed.wrappingIncrement(ordering: .relaxed)
            // OTLP/HTTP: these are worth another try; any other answer says the batch itself is refused.
            let retryable = status == 0 || status == 429 || status == 502 || status == 503 || status == 504
            let sends = sendsSoFar + 1
            guard retryable, sends < Self.maxSendsPerBatch, self.isOpen else {
                self.failedCount.wrappingIncrement(by: batch.count, ordering: .relaxed)
                self.batchDone()
                return
            }
            // 100 ms, 200 ms, 400 ms, 800 ms, with ±25 % jitter so that sidecars do not retry in step.
            let delay = Int64(100_000_000) << Int64(sends - 1)
            let jittered = delay * 3 / 4 + Int64.random(in: 0...(delay / 2))
            self.poster.eventLoop.scheduleTask(in: .nanoseconds(jittered)) {
                self.send(batch, settings: self.state.withLockedValue { $0.settings } ?? settings, sendsSoFar: sends)
            }
        }
    }

    private var isOpen: Bool { state.withLockedValue { !$0.closed } }

    // MARK: Shutdown

    /// Sends what is queued, for up to `within`, then stops the exporter's thread; later spans are only kept as recent.
    public func close(within: Duration) async {
        let drain = state.withLockedValue { state -> (flush: SpanExportQueue<SpanRecord>.Action, done: EventLoopPromise<Void>)? in
            guard state.settings != nil else { return nil }
            // A close already under way: this one waits for the same drain.
            if let waiting = state.drainWaiter { return (.none, waiting) }
            let done = poster.eventLoop.makePromise(of: Void.self)
            state.drainWaiter = done
            return (state.queue.flush(), done)
        }
        if let drain {
            run(drain.flush)
            // Woken when the last batch is done with, or when the time is up; at once when nothing was queued.
            let timeLimit = poster.eventLoop.scheduleTask(in: .nanoseconds(within.nanoseconds)) { self.drainWaiterMayGo(timeUp: true) }
            drainWaiterMayGo()
            try? await drain.done.futureResult.get()
            timeLimit.cancel()
        }
        state.withLockedValue { state in
            state.closed = true
            state.queue.removeAll()
        }
        try? await poster.eventLoop.submit { self.poster.close() }.get()
        try? await group.shutdownGracefully()
    }
}
