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
    /// The formats whose headers the upstream request has: those that came in, then those a try wrote (or
    /// `firstTryTraceparent` prepared).
    private var present: TraceFormats
    /// Sampled only (nil otherwise), out of line: an unsampled trace, most of them, is a few words to move.
    private var sampledTries: SampledTriesBox?
    /// Sampled only: the try running now, and an earlier one still racing it (a hedge).
    public var runningTry: TrySpan? { sampledTries?.tries.running }
    public var hedgedTry: TrySpan? { sampledTries?.tries.hedged }
    /// The first try's client span, when its `traceparent` went in with the request's own fields
    /// (`firstTryTraceparent`): `startTry` then writes nothing for it.
    private var preparedTrySpanID: UInt64?

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
        if sampled { sampledTries = SampledTriesBox() }
    }

    /// A sampled trace's tries, changed in place (the box copied first when a copy of this trace shares it); nil, and
    /// `body` not run, when the trace is not sampled.
    @discardableResult
    private mutating func withSampledTries<Result>(_ body: (inout SampledTries) -> Result) -> Result? {
        guard sampledTries != nil else { return nil }
        if !isKnownUniquelyReferenced(&sampledTries!) { sampledTries = SampledTriesBox(copying: sampledTries!) }
        return body(&sampledTries!.tries)
    }

    /// A try starts with client span `spanID`: its trace headers go into the upstream request's, and (sampled) its
    /// span starts running. A try still running is a hedge's to keep (`hedgeBegan`) or is ended first.
    /// `newSpanID` is not asked for the first try when `firstTryTraceparent` prepared it.
    public mutating func startTry(spanID newSpanID: @autoclosure () -> UInt64, attempt: Int, endpoint: String, at now: UInt64,
                                  into headers: inout HTTPHeaders) {
        let spanID: UInt64
        if let prepared = preparedTrySpanID {
            spanID = prepared
            preparedTrySpanID = nil
        } else {
            spanID = newSpanID()
            present.formUnion(TracePropagation.write(traceID: traceID, spanID: spanID, parentSpanID: serverSpanID, sampled: sampled, debug: debug,
                                                     formats: formats, traceState: traceState, present: present, into: &headers))
        }
        withSampledTries { tries in
            tries.running = TrySpan(spanID: spanID, attempt: attempt, startedAt: now, endpoint: endpoint, cause: tries.nextCause)
            tries.nextCause = nil
        }
    }

    /// A trace started here, before any try: the first try's client span `spanID` and its `traceparent`, for the
    /// caller to add with the request's other own fields before the try starts — one add instead of two. Only for a
    /// request head without any field the trace scan reads (`RequestHeadFacts.hasTraceFields`): nothing there to
    /// replace. Nil when the trace came in some format, or a try already wrote: `startTry` writes then.
    public mutating func firstTryTraceparent(spanID: UInt64) -> String? {
        // Nothing came and no try wrote yet (every try writes, or was prepared here: either fills `present`).
        guard formats.isEmpty, present.isEmpty else { return nil }
        preparedTrySpanID = spanID
        present = .w3c
        return TraceHex.traceparent(high: traceID.high, low: traceID.low, span: spanID, sampled: sampled)
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
    public mutating func nonZero() -> UInt64 {
        while true {
            let value = next()
            if value != 0 { return value }
        }
    }
}
