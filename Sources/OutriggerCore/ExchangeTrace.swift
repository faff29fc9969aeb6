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

    /// The upstream request's trace headers for one try, whose client span is `spanID`.
    public mutating func writeTry(spanID: UInt64, into headers: inout HTTPHeaders) {
        present.formUnion(TracePropagation.write(traceID: traceID, spanID: spanID, parentSpanID: serverSpanID, sampled: sampled, debug: debug,
                                                 formats: formats, traceState: traceState, present: present, into: &headers))
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
