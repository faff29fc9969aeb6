import NIOHTTP1

/// One proxied request's place in its trace, decided when its head arrives: the trace it joins (or a new one),
/// our server span (a child of the caller's), whether it is sampled, and the formats its headers go out in. Each
/// try gets a client span of its own, a child of the server span, written into the upstream request's headers.
/// Pure: ids come from the caller's random source.
public struct ExchangeTrace: Sendable {
    public let traceID: TraceID
    public let serverSpanID: UInt64
    /// The caller's span; nil at a trace's root.
    public let parentSpanID: UInt64?
    public let sampled: Bool
    public let debug: Bool
    public let formats: TraceFormats
    public let traceState: String?
    /// The formats whose headers the upstream request has: those that came in, then those a try wrote.
    private var present: TraceFormats
    /// Sampled only: the try running now, and an earlier one still racing it (a hedge).
    public private(set) var runningTry: TrySpan?
    public private(set) var hedgedTry: TrySpan?
    /// Why the next try starts (the retry condition, or `hedge`).
    private var nextCause: String?

    /// - Parameters:
    ///   - incoming: the context the request came with (`TracePropagation.incoming`), nil for none valid.
    ///   - sampleRatio: a root's share of traces sampled, decided on the trace id.
    ///   - forced: the trusted side asked for this request to be sampled (`x-outrigger-trace: 1`).
    public init(incoming: IncomingTrace?, sampleRatio: Double, forced: Bool, random: inout FastRandom) {
        let traceID = incoming?.traceID ?? TraceID(high: random.nonZero(), low: random.nonZero())
        self.traceID = traceID
        serverSpanID = random.nonZero()
        parentSpanID = incoming?.parentSpanID
        debug = incoming?.debug ?? false
        sampled = forced || debug || (incoming?.sampled ?? TracePropagation.sampledAtRoot(traceID, ratio: sampleRatio))
        // A sampling decision without ids (B3 `1`, `0`, `d`) starts the trace here, in the format it came in.
        formats = incoming?.formats ?? []
        present = formats
        traceState = incoming?.traceState
    }

    /// A try starts with client span `spanID`: its trace headers go into the upstream request's, and (sampled) its
    /// span starts running. A try still running is a hedge's to keep (`hedgeBegan`) or is ended first.
    public mutating func startTry(spanID: UInt64, attempt: Int, endpoint: String, at now: UInt64, into headers: inout HTTPHeaders) {
        present.formUnion(TracePropagation.write(traceID: traceID, spanID: spanID, parentSpanID: serverSpanID, sampled: sampled, debug: debug,
                                                 formats: formats, traceState: traceState, present: present, into: &headers))
        guard sampled else { return }
        runningTry = TrySpan(spanID: spanID, attempt: attempt, startedAt: now, endpoint: endpoint, cause: nextCause)
        nextCause = nil
    }

    /// The next try is a retry (or a hedge) for `cause`.
    public mutating func retrying(for cause: String) {
        if sampled { nextCause = cause }
    }

    /// The running try's upstream answered with `status` (or the hedged one, with `hedge`).
    public mutating func tryAnswered(status: Int, hedge: Bool = false) {
        if hedge { hedgedTry?.status = status } else { runningTry?.status = status }
    }

    /// The running try failed for `failure` (the first reason given stands).
    public mutating func tryFailed(_ failure: String) {
        guard runningTry != nil, runningTry!.failure == nil else { return }
        runningTry!.failure = failure
    }

    /// The running try is over: its span, ended at `now`, or nil when none runs (or the trace is not sampled). A try
    /// ended without an answer or a failure was cancelled (the request ended, or another try won).
    public mutating func endTry(at now: UInt64) -> TrySpan? {
        guard var ended = runningTry else { return nil }
        runningTry = nil
        return Self.end(&ended, at: now)
    }

    /// The running try goes on as a hedge while the next races it.
    public mutating func hedgeBegan() {
        hedgedTry = runningTry
        runningTry = nil
    }

    /// The hedged try became the request's running try again (the running one ended first).
    public mutating func hedgeResumed() {
        runningTry = hedgedTry
        hedgedTry = nil
    }

    /// The hedged try is over: lost the race, or failed.
    public mutating func endHedge(at now: UInt64, failure: String? = nil) -> TrySpan? {
        guard var ended = hedgedTry else { return nil }
        hedgedTry = nil
        if ended.failure == nil { ended.failure = failure }
        return Self.end(&ended, at: now)
    }

    private static func end(_ span: inout TrySpan, at now: UInt64) -> TrySpan {
        span.endedAt = max(now, span.startedAt)
        if span.status == 0 && span.failure == nil { span.failure = "cancelled" }
        return span
    }
}

extension FastRandom {
    /// A random id other than zero (W3C and B3 both make an all-zero id invalid).
    public mutating func nonZero() -> UInt64 {
        while true {
            let value = next()
            if value != 0 { return value }
        }
    }
}
