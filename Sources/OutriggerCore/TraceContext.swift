import NIOHTTP1

/// A 128-bit trace id (a 64-bit B3 id has `high` zero and `is64Bit` set, and is answered in 64 bits).
public struct TraceID: Hashable, Sendable {
    public var high: UInt64
    public var low: UInt64
    public var is64Bit: Bool

    public init(high: UInt64, low: UInt64, is64Bit: Bool = false) {
        self.high = high
        self.low = low
        self.is64Bit = is64Bit
    }

    public var isZero: Bool { high == 0 && low == 0 }

    /// Lowercase hex: 32 digits, or 16 for a 64-bit B3 id.
    public var hex: String { is64Bit ? TraceHex.string(low) : TraceHex.string(high) + TraceHex.string(low) }
}

/// Which trace headers carried a context in, and so go out.
public struct TraceFormats: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// W3C Trace Context: `traceparent` and `tracestate`.
    public static let w3c = TraceFormats(rawValue: 1)
    /// B3 in several headers: `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`.
    public static let b3Multi = TraceFormats(rawValue: 2)
    /// B3 in one header: `b3: {trace}-{span}-{sampling}-{parent}`.
    public static let b3Single = TraceFormats(rawValue: 4)
}

/// The trace context a request came with, read from its headers (W3C Trace Context, B3 single or B3 multi).
public struct IncomingTrace: Equatable, Sendable {
    /// Nil when the caller sent only a sampling decision (B3 `0`, `1` or `d` without ids), or no valid context.
    public var traceID: TraceID?
    /// The caller's span: ours is its child.
    public var parentSpanID: UInt64?
    /// The caller's decision; nil when it left it to us (B3 without one).
    public var sampled: Bool?
    /// B3's debug flag (`x-b3-flags: 1`, or `d`): sampled, and said so again downstream.
    public var debug: Bool
    /// The formats it arrived in (what goes out); W3C's context wins when both W3C and B3 came.
    public var formats: TraceFormats
    /// W3C `tracestate`, within the propagation limits; only with a valid `traceparent`.
    public var traceState: String?

    public init(traceID: TraceID?, parentSpanID: UInt64?, sampled: Bool?, debug: Bool = false, formats: TraceFormats, traceState: String? = nil) {
        self.traceID = traceID
        self.parentSpanID = parentSpanID
        self.sampled = sampled
        self.debug = debug
        self.formats = formats
        self.traceState = traceState
    }
}

/// Reading and writing trace-context headers: W3C Trace Context (`traceparent`, `tracestate`), B3 single (`b3`) and
/// B3 multi (`x-b3-*`), and `baggage` kept within its limits. Pure: the ids and the clock come from the caller.
public enum TracePropagation {
    public static let traceparent = "traceparent"
    public static let tracestate = "tracestate"
    public static let baggage = "baggage"
    public static let b3 = "b3"
    public static let b3TraceID = "x-b3-traceid"
    public static let b3SpanID = "x-b3-spanid"
    public static let b3ParentSpanID = "x-b3-parentspanid"
    public static let b3Sampled = "x-b3-sampled"
    public static let b3Flags = "x-b3-flags"

    /// `tracestate` list members kept (W3C: at most 32) and its length kept at the least (W3C: propagate ≥ 512).
    public static let maxTraceStateMembers = 32
    public static let maxTraceStateLength = 512
    /// `baggage` (W3C Baggage): at most 180 members and 8,192 bytes.
    public static let maxBaggageMembers = 180
    public static let maxBaggageBytes = 8192

    /// The context of an incoming request; nil when it carries no trace header, and no ids when none is valid (a
    /// new trace starts, answered in the formats that came). A valid `traceparent` wins over B3 (and its
    /// `tracestate` comes along); `b3` wins over `x-b3-*`. One pass over the headers, and nothing more when none of
    /// them is a trace header (most requests at a mesh's edge).
    public static func incoming(_ headers: HTTPHeaders) -> IncomingTrace? {
        scan(headers).trace
    }

    /// What a request's headers say for tracing, read in one pass: its trace context (`incoming`), the force
    /// header's value (`x-outrigger-trace`) and whether it carries `baggage`.
    public struct Scan: Sendable {
        public var trace: IncomingTrace?
        public var force: String?
        public var hasBaggage = false

        /// What a request without any field the scan reads says: nothing.
        public init() {}
    }

    public static func scan(_ headers: HTTPHeaders) -> Scan {
        var result = Scan()
        var formats: TraceFormats = []
        var parents: [String] = []
        var states: [String] = []
        var singles: [String] = []
        var multi = B3Fields()
        for (name, value) in headers {
            var kind: TraceHeaderKind?
            name.withUTF8Bytes { kind = traceHeaderKind($0) }
            guard let kind else { continue }
            switch kind {
            case .traceparent: parents.append(value)
            case .tracestate: states.append(value)
            case .b3: singles.append(value)
            case .b3Multi(let field):
                formats.insert(.b3Multi)
                if multi[keyPath: field] == nil { multi[keyPath: field] = value }
            case .force: result.force = value
            case .baggage: result.hasBaggage = true
            }
        }
        if !parents.isEmpty { formats.insert(.w3c) }
        if !singles.isEmpty { formats.insert(.b3Single) }
        guard !formats.isEmpty else { return result }
        var chosen: IncomingTrace?
        if parents.count == 1, let parsed = parseTraceparent(parents[0]) {
            chosen = IncomingTrace(traceID: parsed.traceID, parentSpanID: parsed.parentSpanID, sampled: parsed.sampled, formats: [],
                                   traceState: states.isEmpty ? nil : trimmedTraceState(states.joined(separator: ",")))
        }
        if chosen == nil, singles.count == 1 { chosen = parseB3Single(singles[0]) }
        if chosen == nil, formats.contains(.b3Multi) { chosen = parseB3Multi(multi) }
        var trace = chosen ?? IncomingTrace(traceID: nil, parentSpanID: nil, sampled: nil, formats: [])
        trace.formats = formats
        result.trace = trace
        return result
    }

    private enum TraceHeaderKind { case traceparent, tracestate, b3, b3Multi(WritableKeyPath<B3Fields, String?>), force, baggage }

    /// The `x-b3-*` values (the first of each), as the one pass over the headers found them.
    private struct B3Fields {
        var traceID: String?
        var spanID: String?
        var parentSpanID: String?
        var sampled: String?
        var flags: String?
    }

    /// Whether a field named `name` is one `scan` reads (a trace header, `baggage` or the force header), so that a
    /// pass over a request's fields made anyway (`RequestHeadFacts`) can tell when `scan` has nothing to find.
    public static func isTraceField(_ name: UnsafeRawBufferPointer) -> Bool {
        traceHeaderKind(name) != nil
    }

    /// Which trace header `name` is, if any. Told by length and first byte before any comparison: nearly every field
    /// of a request is none of them.
    private static func traceHeaderKind(_ name: UnsafeRawBufferPointer) -> TraceHeaderKind? {
        guard let first = name.first else { return nil }
        func isName(_ lowercase: StaticString) -> Bool { HTTP1Syntax.equalsIgnoringCase(name, lowercase) }
        switch (first | 0x20, name.count) {
        case (UInt8(ascii: "t"), 11): return isName("traceparent") ? .traceparent : nil
        case (UInt8(ascii: "t"), 10): return isName("tracestate") ? .tracestate : nil
        case (UInt8(ascii: "b"), 2): return isName("b3") ? .b3 : nil
        case (UInt8(ascii: "b"), 7): return isName("baggage") ? .baggage : nil
        case (UInt8(ascii: "x"), 12):
            if isName("x-b3-traceid") { return .b3Multi(\.traceID) }
            return isName("x-b3-sampled") ? .b3Multi(\.sampled) : nil
        case (UInt8(ascii: "x"), 11): return isName("x-b3-spanid") ? .b3Multi(\.spanID) : nil
        case (UInt8(ascii: "x"), 10): return isName("x-b3-flags") ? .b3Multi(\.flags) : nil
        case (UInt8(ascii: "x"), 17):
            if isName("x-b3-parentspanid") { return .b3Multi(\.parentSpanID) }
            return isName("x-outrigger-trace") ? .force : nil  // OutriggerHeader.forceTrace
        default:
            return nil
        }
    }

    /// `traceparent`: version, trace id, parent id and flags as lowercase hex (version 00's layout; a later version
    /// is read by its first 55 characters, and must have a `-` after them if longer); `ff`, zero ids and uppercase
    /// hex are invalid.
    public static func parseTraceparent<S: StringProtocol>(_ value: S) -> (traceID: TraceID, parentSpanID: UInt64, sampled: Bool)? {
        let bytes = Array(value.utf8)
        guard bytes.count >= 55, let version = hexValue(bytes[0..<2]), version != 0xff else { return nil }
        if version == 0 { guard bytes.count == 55 else { return nil } } else if bytes.count > 55, bytes[55] != UInt8(ascii: "-") { return nil }
        guard bytes[2] == UInt8(ascii: "-"), bytes[35] == UInt8(ascii: "-"), bytes[52] == UInt8(ascii: "-"),
              let high = hexValue(bytes[3..<19]), let low = hexValue(bytes[19..<35]), high != 0 || low != 0,
              let parent = hexValue(bytes[36..<52]), parent != 0, let flags = hexValue(bytes[53..<55])
        else { return nil }
        return (TraceID(high: high, low: low), parent, flags & 1 == 1)
    }

    /// `b3`: `{trace}-{span}`, then optionally `-{sampling}` and `-{parent}`; or a sampling decision alone (`0`,
    /// `1`, `d`).
    public static func parseB3Single(_ value: String) -> IncomingTrace? {
        let fields = value.split(separator: "-", omittingEmptySubsequences: false)
        if fields.count == 1 {
            guard let (sampled, debug) = b3Sampling(fields[0]) else { return nil }
            return IncomingTrace(traceID: nil, parentSpanID: nil, sampled: sampled, debug: debug, formats: .b3Single)
        }
        guard fields.count <= 4, let traceID = b3TraceID(fields[0]), let span = spanID(fields[1]) else { return nil }
        var sampled: Bool?
        var debug = false
        if fields.count >= 3 {
            guard let decision = b3Sampling(fields[2]) else { return nil }
            (sampled, debug) = decision
        }
        if fields.count == 4 { guard spanID(fields[3]) != nil else { return nil } }
        return IncomingTrace(traceID: traceID, parentSpanID: span, sampled: sampled, debug: debug, formats: .b3Single)
    }

    /// `x-b3-*`: trace and span id together (or neither: a sampling decision alone), `x-b3-sampled` `1`/`0` (or
    /// `true`/`false`), `x-b3-flags: 1` for debug.
    private static func parseB3Multi(_ fields: B3Fields) -> IncomingTrace? {
        let debug = fields.flags == "1"
        var sampled: Bool? = debug ? true : nil
        if !debug, let value = fields.sampled {
            switch value {
            case "1", "true": sampled = true
            case "0", "false": sampled = false
            default: return nil
            }
        }
        switch (fields.traceID, fields.spanID) {
        case (let trace?, let span?):
            guard let traceID = b3TraceID(Substring(trace)), let spanID = spanID(Substring(span)) else { return nil }
            if let parent = fields.parentSpanID, self.spanID(Substring(parent)) == nil { return nil }
            return IncomingTrace(traceID: traceID, parentSpanID: spanID, sampled: sampled, debug: debug, formats: .b3Multi)
        case (nil, nil):
            guard sampled != nil else { return nil }
            return IncomingTrace(traceID: nil, parentSpanID: nil, sampled: sampled, debug: debug, formats: .b3Multi)
        default:
            return nil
        }
    }

    /// A root's sampling decision from its trace id alone, so every hop that decides for the same trace agrees:
    /// the id's low 64 bits against the ratio's share of their range.
    public static func sampledAtRoot(_ traceID: TraceID, ratio: Double) -> Bool {
        guard ratio > 0 else { return false }
        guard ratio < 1 else { return true }
        return traceID.low < UInt64(ratio * 18_446_744_073_709_551_616.0)
    }

    /// Replaces the request's trace headers with the context of one try: our client span `spanID`, child of our
    /// server span `parentSpanID`, in every format that came in (a trace that started here, with none, sends its
    /// `traceparent` beside the head: `ExchangeTrace.startTry`). `tracestate` goes on only beside a `traceparent`
    /// that came in valid. Those formats' fields, the caller's or an earlier try's, are the ones removed first.
    public static func write(traceID: TraceID, spanID: UInt64, parentSpanID: UInt64, sampled: Bool, debug: Bool, formats: TraceFormats,
                             traceState: String?, into headers: inout HTTPHeaders) {
        if formats.contains(.w3c) {
            headers.remove(name: traceparent)
            headers.remove(name: tracestate)
            // W3C ids are 128 bits: a 64-bit B3 id is left-padded with zeros.
            let parent = (traceparent, TraceparentField(traceID: traceID, spanID: spanID, sampled: sampled).text)
            headers.addOwn(traceState.map { [parent, (tracestate, $0)] } ?? [parent])
        }
        if formats.contains(.b3Single) {
            headers.remove(name: b3)
            headers.add(name: b3, value: "\(traceID.hex)-\(TraceHex.string(spanID))-\(debug ? "d" : sampled ? "1" : "0")-\(TraceHex.string(parentSpanID))")
        }
        if formats.contains(.b3Multi) {
            for name in [b3TraceID, b3SpanID, b3ParentSpanID, b3Sampled, b3Flags] { headers.remove(name: name) }
            headers.add(name: b3TraceID, value: traceID.hex)
            headers.add(name: b3SpanID, value: TraceHex.string(spanID))
            headers.add(name: b3ParentSpanID, value: TraceHex.string(parentSpanID))
            if debug { headers.add(name: b3Flags, value: "1") } else { headers.add(name: b3Sampled, value: sampled ? "1" : "0") }
        }
    }

    /// `tracestate` within its limits: at most 32 members (the first ones); past 512 characters, members longer than
    /// 128 go first, then the last ones (W3C Trace Context §3.3.1.5). Empty members are dropped.
    public static func trimmedTraceState(_ value: String) -> String? {
        var members = listMembers(value, limit: maxTraceStateMembers)
        if joinedLength(members) > maxTraceStateLength { members.removeAll { $0.utf8.count > 128 } }
        while joinedLength(members) > maxTraceStateLength { members.removeLast() }
        return members.isEmpty ? nil : members.joined(separator: ",")
    }

    /// `baggage` within its limits (180 members, 8,192 bytes): the last members go first; nil when none is left.
    public static func trimmedBaggage(_ value: String) -> String? {
        var members = listMembers(value, limit: maxBaggageMembers)
        while joinedLength(members) > maxBaggageBytes { members.removeLast() }
        return members.isEmpty ? nil : members.joined(separator: ",")
    }

    /// A list header's members: split at commas, optional whitespace trimmed, empty ones dropped, the first `limit`.
    private static func listMembers(_ value: String, limit: Int) -> [Substring] {
        Array(value.split(separator: ",").lazy.map { $0.trimmingOWS() }.filter { !$0.isEmpty }.prefix(limit))
    }

    /// The length of `members` joined with commas.
    public static func joinedLength<S: StringProtocol>(_ members: [S]) -> Int {
        members.reduce(max(members.count - 1, 0)) { $0 + $1.utf8.count }
    }

    // MARK: Parts

    private static func b3TraceID(_ field: Substring) -> TraceID? {
        let bytes = Array(field.utf8)
        switch bytes.count {
        case 16:
            guard let low = hexValue(bytes[0..<16]), low != 0 else { return nil }
            return TraceID(high: 0, low: low, is64Bit: true)
        case 32:
            guard let high = hexValue(bytes[0..<16]), let low = hexValue(bytes[16..<32]), high != 0 || low != 0 else { return nil }
            return TraceID(high: high, low: low)
        default:
            return nil
        }
    }

    private static func spanID(_ field: Substring) -> UInt64? {
        let bytes = Array(field.utf8)
        guard bytes.count == 16, let value = hexValue(bytes[0..<16]), value != 0 else { return nil }
        return value
    }

    private static func b3Sampling(_ field: Substring) -> (sampled: Bool, debug: Bool)? {
        switch field {
        case "1": (true, false)
        case "0": (false, false)
        case "d": (true, true)
        default: nil
        }
    }

    /// Lowercase hex digits only (W3C and B3 both say lowercase).
    private static func hexValue(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        for byte in bytes {
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            default: return nil
            }
            value = value << 4 | UInt64(digit)
        }
        return value
    }
}

/// Ids as lowercase hex.
public enum TraceHex {
    /// 16 lowercase hex digits, zero-padded.
    public static func string(_ value: UInt64) -> String {
        String(unsafeUninitializedCapacity: 16) { buffer in
            HexDigits.write(value, into: buffer, at: 0)
            return 16
        }
    }
}

extension Substring {
    /// Without the optional whitespace (spaces and tabs) around a list member.
    func trimmingOWS() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return result
    }
}
