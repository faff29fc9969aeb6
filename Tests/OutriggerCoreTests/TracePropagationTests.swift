import NIOCore
import NIOHTTP1
import OutriggerCore
import Testing

/// Trace-context headers read and written alone, by tables of header cases: W3C Trace Context, B3 single and multi,
/// and the limits on `tracestate` and `baggage`.
@Suite("Trace-context propagation")
struct TracePropagationTests {
    static let trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let parent = "00f067aa0ba902b7"

    @Test(arguments: [
        ("00-\(trace)-\(parent)-01", true, true),
        ("00-\(trace)-\(parent)-00", true, false),
        ("00-\(trace)-\(parent)-09", true, true),  // other flags: the sampled bit alone counts
        ("01-\(trace)-\(parent)-01-future", true, true),  // a later version, read by its first 55 characters
        ("01-\(trace)-\(parent)-01", true, true),
        ("ff-\(trace)-\(parent)-01", false, false),  // version ff is invalid
        ("00-\(trace)-\(parent)-01-x", false, false),  // version 00 is exactly 55 characters
        ("01-\(trace)-\(parent)-01x", false, false),  // past 55, a later version goes on with '-'
        ("00-\(trace.uppercased())-\(parent)-01", false, false),  // uppercase hex
        ("00-00000000000000000000000000000000-\(parent)-01", false, false),  // zero trace id
        ("00-\(trace)-0000000000000000-01", false, false),  // zero parent id
        ("00-\(trace)-\(parent)", false, false),
        ("00_\(trace)_\(parent)_01", false, false),
        ("", false, false),
    ])
    func traceparentIsReadStrictly(_ value: String, valid: Bool, sampled: Bool) {
        let parsed = TracePropagation.parseTraceparent(value)
        #expect((parsed != nil) == valid, "\(value)")
        if let parsed {
            #expect(parsed.traceID.hex == Self.trace)
            #expect(TraceHex.string(parsed.parentSpanID) == Self.parent)
            #expect(parsed.sampled == sampled)
        }
    }

    @Test(arguments: [
        ("\(trace)-\(parent)-1-b7ad6b7169203331", true, Optional(true)),
        ("\(trace)-\(parent)-0", true, Optional(false)),
        ("\(trace)-\(parent)-d", true, Optional(true)),
        ("\(trace)-\(parent)", true, Optional<Bool>.none),  // the decision left to us
        ("a3ce929d0e0e4736-\(parent)-1", true, Optional(true)),  // a 64-bit trace id
        ("1", true, Optional(true)),  // a decision alone
        ("0", true, Optional(false)),
        ("\(trace)-\(parent)-2", false, Optional<Bool>.none),
        ("\(trace)-\(parent)-1-zz", false, Optional<Bool>.none),
        ("\(trace)-0000000000000000-1", false, Optional<Bool>.none),
        ("abc-\(parent)-1", false, Optional<Bool>.none),
        ("\(trace)-\(parent)-1-b7ad6b7169203331-extra", false, Optional<Bool>.none),
        ("yes", false, Optional<Bool>.none),
    ])
    func b3SingleIsRead(_ value: String, valid: Bool, sampled: Bool?) {
        let parsed = TracePropagation.parseB3Single(value)
        #expect((parsed != nil) == valid, "\(value)")
        #expect(parsed?.sampled == (valid ? sampled : nil), "\(value)")
    }

    @Test func b3MultiIsReadWithItsSamplingAndDebugFlags() throws {
        var headers: HTTPHeaders = ["X-B3-TraceId": "a3ce929d0e0e4736", "X-B3-SpanId": Self.parent, "X-B3-Sampled": "1"]
        var trace = try #require(TracePropagation.incoming(headers))
        #expect(trace.formats == .b3Multi && trace.sampled == true && trace.traceID?.is64Bit == true)
        headers = ["x-b3-traceid": Self.trace, "x-b3-spanid": Self.parent, "x-b3-flags": "1"]
        trace = try #require(TracePropagation.incoming(headers))
        #expect(trace.debug && trace.sampled == true)
        headers = ["x-b3-sampled": "0"]
        trace = try #require(TracePropagation.incoming(headers))
        #expect(trace.traceID == nil && trace.sampled == false, "a decision alone")
        // Invalid: no context (a new trace starts), answered in B3 multi.
        for invalid: HTTPHeaders in [["x-b3-traceid": Self.trace], ["x-b3-traceid": Self.trace, "x-b3-spanid": "nothex-nothex-00"], ["x-b3-sampled": "maybe"]] {
            let read = try #require(TracePropagation.incoming(invalid))
            #expect(read.traceID == nil && read.sampled == nil && read.formats == .b3Multi, "\(invalid)")
        }
    }

    @Test func w3cWinsOverB3AndB3SingleOverMulti() throws {
        let both: HTTPHeaders = ["traceparent": "00-\(Self.trace)-\(Self.parent)-01", "b3": "a3ce929d0e0e4736-b7ad6b7169203331-0",
                                 "x-b3-traceid": "1111111111111111", "x-b3-spanid": "2222222222222222"]
        let trace = try #require(TracePropagation.incoming(both))
        #expect(trace.traceID?.hex == Self.trace && trace.sampled == true)
        #expect(trace.formats == [.w3c, .b3Single, .b3Multi], "answered in every format that came")

        let b3Only: HTTPHeaders = ["b3": "a3ce929d0e0e4736-b7ad6b7169203331-0", "x-b3-traceid": "1111111111111111", "x-b3-spanid": "2222222222222222"]
        let single = try #require(TracePropagation.incoming(b3Only))
        #expect(single.traceID?.hex == "a3ce929d0e0e4736" && single.sampled == false)

        // An invalid traceparent: B3 is read instead, and W3C is still answered (with B3's ids).
        let broken: HTTPHeaders = ["traceparent": "00-zz", "tracestate": "a=1", "b3": "a3ce929d0e0e4736-b7ad6b7169203331-1"]
        let fallback = try #require(TracePropagation.incoming(broken))
        #expect(fallback.traceID?.hex == "a3ce929d0e0e4736" && fallback.formats.contains(.w3c))
        #expect(fallback.traceState == nil, "no tracestate without a valid traceparent")

        #expect(TracePropagation.incoming(["traceparent": "00-zz"])?.traceID == nil, "invalid and nothing else: a new trace")
        #expect(TracePropagation.incoming(["content-type": "text/plain", "x-request-id": "1"]) == nil, "no trace header")
        let twice = HTTPHeaders([("traceparent", "00-\(Self.trace)-\(Self.parent)-01"), ("traceparent", "00-\(Self.trace)-\(Self.parent)-01")])
        #expect(TracePropagation.incoming(twice)?.traceID == nil, "two traceparent headers are invalid")
    }

    @Test func aTryCarriesItsOwnSpanAsAChildOfOursInEveryFormatThatCame() throws {
        let incoming = try #require(TracePropagation.incoming([
            "TraceParent": "00-\(Self.trace)-\(Self.parent)-01", "tracestate": "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",
            "x-b3-traceid": Self.trace, "x-b3-spanid": Self.parent, "x-b3-sampled": "1",
        ]))
        var random = FastRandom(seed: 7)
        var exchange = ExchangeTrace(incoming: incoming, sampleRatio: 0, forced: false, random: &random)
        #expect(exchange.parentSpanID != nil && exchange.sampled, "the caller's decision is followed")
        var headers: HTTPHeaders = ["TraceParent": "00-\(Self.trace)-\(Self.parent)-01", "tracestate": "x=1", "x-b3-traceid": Self.trace,
                                    "x-b3-spanid": Self.parent, "x-b3-sampled": "1", "accept": "*/*"]
        _ = exchange.startTry(spanID: 0xABC, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers)
        #expect(headers[canonicalForm: "traceparent"] == ["00-\(Self.trace)-0000000000000abc-01"])
        #expect(headers["tracestate"] == ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"])
        #expect(headers.first(name: "x-b3-traceid") == Self.trace)
        #expect(headers.first(name: "x-b3-spanid") == "0000000000000abc")
        #expect(headers.first(name: "x-b3-parentspanid") == TraceHex.string(exchange.serverSpanID), "the try's parent is our server span")
        #expect(headers.first(name: "x-b3-sampled") == "1")
        #expect(headers.first(name: "accept") == "*/*")

        // The next try replaces them: one set of trace headers, the new span.
        _ = exchange.startTry(spanID: 0xDEF, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers)
        #expect(headers[canonicalForm: "traceparent"] == ["00-\(Self.trace)-0000000000000def-01"])
        #expect(headers[canonicalForm: "x-b3-spanid"] == ["0000000000000def"])
        #expect(headers["tracestate"].count == 1)
    }

    @Test func aNewTraceGoesOutInW3CAndIsSampledByItsIdAtTheRatio() {
        var random = FastRandom(seed: 11)
        var sampled = 0
        for _ in 0..<10_000 {
            let trace = ExchangeTrace(incoming: nil, sampleRatio: 0.1, forced: false, random: &random)
            if trace.sampled { sampled += 1 }
            #expect(trace.parentSpanID == nil && trace.formats.isEmpty)
        }
        #expect((800...1200).contains(sampled), "about 10 %: \(sampled)")
        let forced = ExchangeTrace(incoming: nil, sampleRatio: 0, forced: true, random: &random)
        #expect(forced.sampled)
        let id = TraceID(high: 1, low: 1 << 62)  // a quarter of the way
        #expect(TracePropagation.sampledAtRoot(id, ratio: 0.3) && !TracePropagation.sampledAtRoot(id, ratio: 0.2), "the same id, the same decision")

        var headers: HTTPHeaders = ["accept": "*/*"]
        var root = ExchangeTrace(incoming: nil, sampleRatio: 1, forced: false, random: &random)
        let first = root.startTry(spanID: 1, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers)
        #expect(first?.text == "00-\(root.traceID.hex)-0000000000000001-01", "W3C alone, no tracestate")
        #expect(headers == ["accept": "*/*"], "sent beside the head's fields, which have no trace field to replace")
        let second = root.startTry(spanID: 2, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers)
        #expect(second?.text == "00-\(root.traceID.hex)-0000000000000002-01", "a retry's try has its own")
        #expect(root.runningTry?.spanID == 2)

        // A B3 decision without ids starts the trace here, answered in B3.
        let decision = IncomingTrace(traceID: nil, parentSpanID: nil, sampled: false, formats: .b3Single)
        var started = ExchangeTrace(incoming: decision, sampleRatio: 1, forced: false, random: &random)
        #expect(!started.sampled && started.parentSpanID == nil)
        var b3Headers: HTTPHeaders = ["b3": "0"]
        _ = started.startTry(spanID: 2, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &b3Headers)
        #expect(b3Headers[canonicalForm: "b3"] == ["\(started.traceID.hex)-0000000000000002-0-\(TraceHex.string(started.serverSpanID))"])
    }

    /// A trace started here hands each try's `traceparent` back, to go after the head's fields (the encoder's part is
    /// `HTTP1MessageEncoderTests`); a trace that came in some format is written into the head.
    @Test func aTryOfATraceThatCameInIsWrittenIntoTheHead() {
        let field = TraceparentField(traceID: TraceID(high: 0x4bf9_2f35_77b3_4da6, low: 0xa3ce_929d_0e0e_4736), spanID: 0x00f0_67aa_0ba9_02b7, sampled: true)
        #expect(field.text == "00-\(Self.trace)-\(Self.parent)-01")
        // A trace header came: the try writes into the head, replacing it, and sends nothing beside.
        var random = FastRandom(seed: 3)
        let incoming = TracePropagation.incoming(["traceparent": "00-\(Self.trace)-\(Self.parent)-01"])
        var joined = ExchangeTrace(incoming: incoming, sampleRatio: 0, forced: false, random: &random)
        var headers: HTTPHeaders = ["traceparent": "00-\(Self.trace)-\(Self.parent)-01"]
        #expect(joined.startTry(spanID: 0x9, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers) == nil)
        #expect(headers["traceparent"] == ["00-\(Self.trace)-0000000000000009-01"])
    }

    @Test func tracestateAndBaggageAreTrimmedToTheirLimitsNotRefused() {
        let members = (0..<40).map { "k\($0)=v" }
        #expect(TracePropagation.trimmedTraceState(members.joined(separator: ","))?.split(separator: ",").count == 32)
        let long = "big=" + String(repeating: "x", count: 200)
        let mixed = ([long] + (0..<30).map { "key\($0)=value\($0)" }).joined(separator: " , ")
        let trimmed = TracePropagation.trimmedTraceState(mixed)
        #expect(trimmed?.hasPrefix("key0=value0") == true, "the over-long member goes first")
        #expect((trimmed?.utf8.count ?? 0) <= 512)
        #expect(TracePropagation.trimmedTraceState(" , ") == nil)

        let baggage = (0..<200).map { "k\($0)=" + String(repeating: "v", count: 50) }.joined(separator: ",")
        let kept = TracePropagation.trimmedBaggage(baggage)
        #expect((kept?.utf8.count ?? 0) <= 8192)
        #expect(kept?.hasPrefix("k0=") == true)
        #expect((kept?.split(separator: ",").count ?? 0) <= 180)
    }
}
