import NIOHTTP1

/// One proxied request's place in its trace, decided when its head arrives: the trace it joins (or a new one),
/// our server span (a child of the caller's), whether it is sampled, and the formats its headers go out in. Each
/// try gets a client span of its own, a child of the server span: written into the upstream request's headers in the
/// formats that came, or, for a trace started here, handed back as the try's `traceparent` (`TraceparentField`).
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
    /// Sampled only (nil otherwise), out of line: an unsampled trace, most of them, is a few words to move.
    private var sampledTries: SampledTriesBox?
    /// Sampled only: the try running now, and an earlier one still racing it (a hedge).
    public var runningTry: TrySpan? { sampledTries?.tries.running }
    public var hedgedTry: TrySpan? { sampledTries?.tries.hedged }

    /// - Parameters:
    ///   - incoming: the context the request came with (`TracePropagation.incoming`), nil for none valid.
    ///   - sampleRatio: a root's share of traces sampled, decided on the trace id.
    ///   - forced: the trusted side asked for this request to be sampled (`x-outrigger-trace: 1`).
    public init(incoming: IncomingTrace?, sampleRatio: Double, forced: Bool, random: inout FastRandom) {
        guard let incoming else {
            self.init(rootSampleRatio: sampleRatio, forced: forced, random: &random)
            return
        }
        let traceID = incoming.traceID ?? TraceID(high: random.nonZero(), low: random.nonZero())
        // A sampling decision without ids (B3 `1`, `0`, `d`) starts the trace here, in the format it came in.
        self.init(traceID: traceID, serverSpanID: random.nonZero(), parentSpanID: incoming.parentSpanID,
                  sampled: forced || incoming.debug || (incoming.sampled ?? TracePropagation.sampledAtRoot(traceID, ratio: sampleRatio)),
                  debug: incoming.debug, formats: incoming.formats, traceState: incoming.traceState)
    }

    /// A trace that starts here, no context having come: sampled at `sampleRatio` on its trace id, or `forced`. Reads
    /// no incoming context (an optional one is copied field by field, through the generic witness: ~270 instructions
    /// on every request of a listener that takes part).
    public init(rootSampleRatio sampleRatio: Double, forced: Bool = false, random: inout FastRandom) {
        let traceID = TraceID(high: random.nonZero(), low: random.nonZero())
        self.init(traceID: traceID, serverSpanID: random.nonZero(), parentSpanID: nil,
                  sampled: forced || TracePropagation.sampledAtRoot(traceID, ratio: sampleRatio),
                  debug: false, formats: [], traceState: nil)
    }

    @inline(__always)
    private init(traceID: TraceID, serverSpanID: UInt64, parentSpanID: UInt64?, sampled: Bool, debug: Bool, formats: TraceFormats,
                 traceState: String?) {
        self.traceID = traceID
        self.serverSpanID = serverSpanID
        self.parentSpanID = parentSpanID
        self.sampled = sampled
        self.debug = debug
        self.formats = formats
        self.traceState = traceState
        sampledTries = sampled ? SampledTriesBox() : nil
    }

    /// A sampled trace's tries, changed in place (the box copied first when a copy of this trace shares it); nil, and
    /// `body` not run, when the trace is not sampled.
    @discardableResult
    private mutating func withSampledTries<Result>(_ body: (inout SampledTries) -> Result) -> Result? {
        guard sampledTries != nil else { return nil }
        if !isKnownUniquelyReferenced(&sampledTries!) { sampledTries = SampledTriesBox(copying: sampledTries!) }
        return body(&sampledTries!.tries)
    }

    /// A try starts with client span `spanID`, and (sampled) its span starts running. A try still running is a
    /// hedge's to keep (`hedgeBegan`) or is ended first.
    /// - Returns: the try's `traceparent`, for the caller to send after the head's fields, when no trace format came
    ///   in: the trace started here and goes out in W3C alone, and the head has no trace field to replace. Nil when a
    ///   format came: the try's headers, in every format that came, then replaced those in `headers`.
    public mutating func startTry(spanID: UInt64, attempt: Int, endpoint: String, at now: UInt64,
                                  into headers: inout HTTPHeaders) -> TraceparentField? {
        let field: TraceparentField?
        if formats.isEmpty {
            field = TraceparentField(traceID: traceID, spanID: spanID, sampled: sampled)
        } else {
            field = nil
            TracePropagation.write(traceID: traceID, spanID: spanID, parentSpanID: serverSpanID, sampled: sampled, debug: debug,
                                   formats: formats, traceState: traceState, into: &headers)
        }
        withSampledTries { tries in
            tries.running = TrySpan(spanID: spanID, attempt: attempt, startedAt: now, endpoint: endpoint, cause: tries.nextCause)
            tries.nextCause = nil
        }
        return field
    }

    /// The next try is a retry (or a hedge) for `cause`.
    public mutating func retrying(for cause: String) {
        withSampledTries { $0.nextCause = cause }
    }

    /// The running try's upstream answered with `status` (or the hedged one, with `hedge`).
    public mutating func tryAnswered(status: Int, hedge: Bool = false) {
        withSampledTries { tries in
            if hedge { tries.hedged?.status = status } else { tries.running?.status = status }
        }
    }

    /// The running try failed for `failure` (the first reason given stands).
    public mutating func tryFailed(_ failure: String) {
        withSampledTries { tries in
            if tries.running?.failure == nil { tries.running?.failure = failure }
        }
    }

    /// The running try is over: its span, ended at `now`, or nil when none runs (or the trace is not sampled). A try
    /// ended without an answer or a failure was cancelled (the request ended, or another try won).
    public mutating func endTry(at now: UInt64) -> TrySpan? {
        withSampledTries { tries -> TrySpan? in
            guard var ended = tries.running else { return nil }
            tries.running = nil
            return Self.end(&ended, at: now)
        } ?? nil
    }

    /// The running try goes on as a hedge while the next races it.
    public mutating func hedgeBegan() {
        withSampledTries { tries in
            tries.hedged = tries.running
            tries.running = nil
        }
    }

    /// The hedged try became the request's running try again (the running one ended first).
    public mutating func hedgeResumed() {
        withSampledTries { tries in
            tries.running = tries.hedged
            tries.hedged = nil
        }
    }

    /// The hedged try is over: lost the race, or failed.
    public mutating func endHedge(at now: UInt64, failure: String? = nil) -> TrySpan? {
        withSampledTries { tries -> TrySpan? in
            guard var ended = tries.hedged else { return nil }
            tries.hedged = nil
            if ended.failure == nil { ended.failure = failure }
            return Self.end(&ended, at: now)
        } ?? nil
    }

    private static func end(_ span: inout TrySpan, at now: UInt64) -> TrySpan {
        span.endedAt = max(now, span.startedAt)
        if span.status == 0 && span.failure == nil { span.failure = "cancelled" }
        return span
    }
}

/// A sampled trace's tries: the one running, an earlier one still racing it (a hedge), why the next starts (the
/// retry condition, or `hedge`).
private struct SampledTries {
    var running: TrySpan?
    var hedged: TrySpan?
    var nextCause: String?
}

/// Copied on write (`withSampledTries` changes it only when no other trace holds it): what two traces share is never
/// changed, as with the standard library's own storage, hence `@unchecked Sendable`.
private final class SampledTriesBox: @unchecked Sendable {
    var tries: SampledTries

    init(copying other: SampledTriesBox? = nil) {
        tries = other?.tries ?? SampledTries()
    }
}

extension FastRandom {
    /// A random id other than zero (W3C and B3 both make an all-zero id invalid).
    @inline(__always)
    public mutating func nonZero() -> UInt64 {
        while true {
            let value = next()
            if value != 0 { return value }
        }
    }
}
