import Foundation
import NIOHTTP1
@testable import OutriggerCore
import Testing

@Suite("Spans: tries, records and their export formats")
struct SpanTests {
    static let incoming = IncomingTrace(traceID: TraceID(high: 0x4bf9_2f35_77b3_4da6, low: 0xa3ce_929d_0e0e_4736), parentSpanID: 0x00f0_67aa_0ba9_02b7,
                                        sampled: true, formats: .w3c, traceState: "congo=t61rcWkgMzE")

    static func sampledTrace() -> ExchangeTrace {
        var random = FastRandom(seed: 3)
        return ExchangeTrace(incoming: incoming, sampleRatio: 0, forced: false, random: &random)
    }

    @Test func aRetriedRequestsTriesAreSiblingSpansWithWhyEachStarted() throws {
        var trace = Self.sampledTrace()
        var headers = HTTPHeaders()
        _ = trace.startTry(spanID: 1, attempt: 1, endpoint: "10.0.0.1:80", at: 100, into: &headers)
        trace.tryAnswered(status: 503)
        let firstEnded = trace.endTry(at: 150)
        let first = try #require(firstEnded)
        #expect(first.spanID == 1 && first.attempt == 1 && first.cause == nil && first.status == 503 && first.failure == nil)
        #expect(first.startedAt == 100 && first.endedAt == 150)
        let again = trace.endTry(at: 160)
        #expect(again == nil, "ended once")

        trace.retrying(for: "5xx")
        _ = trace.startTry(spanID: 2, attempt: 2, endpoint: "10.0.0.2:80", at: 170, into: &headers)
        trace.tryFailed("upstream_reset")
        trace.tryFailed("upstream_timeout")
        let secondEnded = trace.endTry(at: 200)
        let second = try #require(secondEnded)
        #expect(second.cause == "5xx" && second.failure == "upstream_reset", "the first failure stands")

        _ = trace.startTry(spanID: 3, attempt: 3, endpoint: "10.0.0.1:80", at: 210, into: &headers)
        let third = trace.endTry(at: 220)
        #expect(third?.failure == "cancelled", "neither answered nor failed: the request ended first")

        let span = trace.clientSpan(second, method: "GET", cluster: "users", epochOffset: 1_000)
        #expect(span.parentSpanID == trace.serverSpanID && span.traceID == trace.traceID && span.kind == .client)
        #expect(span.startUnixNanoseconds == 1_170 && span.endUnixNanoseconds == 1_200)
        #expect(span.attribute("outrigger.retry_reason") == .string("5xx"))
        #expect(span.attribute("http.request.resend_count") == .int(1))
        #expect(span.attribute("server.address") == .string("10.0.0.2") && span.attribute("server.port") == .int(80))
        #expect(span.attribute("error.type") == .string("upstream_reset") && span.error == "upstream_reset")
        let answered = trace.clientSpan(first, method: "GET", cluster: "users", epochOffset: 0)
        #expect(answered.error == "HTTP 503" && answered.attribute("http.response.status_code") == .int(503))
    }

    @Test("a try's endpoint as server.address and server.port: IPv4, IPv6 in brackets, or nothing when it has no port",
          arguments: [("10.0.0.2:80", "10.0.0.2", 80), ("[::1]:8080", "::1", 8080), ("[fe80::1]:65535", "fe80::1", 65535),
                      ("users.internal:9", "users.internal", 9), ("a:00443", "a", 443), (":80", "", 80), ("::1:80", "::1", 80),
                      ("noport", nil, nil), ("host:", nil, nil), ("host:123456", nil, nil), ("host:8o", nil, nil),
                      ("[::1]", nil, nil), ("", nil, nil)] as [(String, String?, Int?)])
    func endpointSplitIntoAddressAndPort(endpoint: String, address: String?, port: Int?) throws {
        var trace = Self.sampledTrace()
        var headers = HTTPHeaders()
        _ = trace.startTry(spanID: 1, attempt: 1, endpoint: endpoint, at: 0, into: &headers)
        let endedTry = trace.endTry(at: 1)
        let ended = try #require(endedTry)
        let span = trace.clientSpan(ended, method: "GET", cluster: "c", epochOffset: 0)
        #expect(span.attribute("server.address") == address.map { .string($0) })
        #expect(span.attribute("server.port") == port.map { .int(Int64($0)) })
        #expect(span.attribute("outrigger.endpoint") == .string(endpoint))
    }

    @Test func aHedgedTryKeepsItsSpanWhileTheNextRacesIt() throws {
        var trace = Self.sampledTrace()
        var headers = HTTPHeaders()
        _ = trace.startTry(spanID: 1, attempt: 1, endpoint: "[::1]:8080", at: 0, into: &headers)
        trace.hedgeBegan()
        trace.retrying(for: "hedge")
        _ = trace.startTry(spanID: 2, attempt: 2, endpoint: "10.0.0.2:80", at: 50, into: &headers)
        #expect(trace.runningTry?.spanID == 2 && trace.hedgedTry?.spanID == 1)
        // The hedged try answers first: the racing one is cancelled, the first goes on and ends with its answer.
        let racingEnded = trace.endTry(at: 60)
        let racing = try #require(racingEnded)
        #expect(racing.spanID == 2 && racing.cause == "hedge" && racing.failure == "cancelled")
        trace.hedgeResumed()
        trace.tryAnswered(status: 200)
        let hedgedEnded = trace.endTry(at: 90)
        let hedged = try #require(hedgedEnded)
        #expect(hedged.spanID == 1 && hedged.status == 200 && hedged.failure == nil)
        let span = trace.clientSpan(hedged, method: "GET", cluster: "c", epochOffset: 0)
        #expect(span.attribute("server.address") == .string("::1") && span.error == nil)

        // A hedge that loses the race ends as cancelled; one that fails says why.
        _ = trace.startTry(spanID: 3, attempt: 3, endpoint: "10.0.0.1:80", at: 100, into: &headers)
        trace.hedgeBegan()
        let lost = trace.endHedge(at: 120)
        #expect(lost?.failure == "cancelled")
        _ = trace.startTry(spanID: 4, attempt: 4, endpoint: "10.0.0.1:80", at: 130, into: &headers)
        trace.hedgeBegan()
        let failed = trace.endHedge(at: 140, failure: "upstream_reset")
        #expect(failed?.failure == "upstream_reset")
    }

    /// A sampled trace keeps its tries out of line; a copy is still a value of its own.
    @Test func aCopiedTraceKeepsItsOwnTries() throws {
        var trace = Self.sampledTrace()
        var headers = HTTPHeaders()
        _ = trace.startTry(spanID: 1, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers)
        var copy = trace
        copy.tryAnswered(status: 503)
        copy.retrying(for: "5xx")
        _ = copy.endTry(at: 5)
        _ = copy.startTry(spanID: 2, attempt: 2, endpoint: "10.0.0.2:80", at: 10, into: &headers)
        #expect(copy.runningTry?.spanID == 2 && copy.runningTry?.cause == "5xx")
        #expect(trace.runningTry?.spanID == 1 && trace.runningTry?.status == 0, "the original is untouched")
        let endedTry = trace.endTry(at: 20)
        let ended = try #require(endedTry)
        #expect(ended.spanID == 1 && ended.failure == "cancelled" && copy.runningTry?.spanID == 2)
    }

    @Test func anUnsampledTraceRecordsNoTries() {
        var random = FastRandom(seed: 5)
        var trace = ExchangeTrace(incoming: nil, sampleRatio: 0, forced: false, random: &random)
        var headers = HTTPHeaders()
        let field = trace.startTry(spanID: 1, attempt: 1, endpoint: "10.0.0.1:80", at: 0, into: &headers)
        #expect(field?.text.hasSuffix("-00") == true, "still propagated")
        let ended = trace.endTry(at: 10)
        #expect(trace.runningTry == nil && ended == nil)
    }

    static func facts(status: Int, reason: String? = nil) -> ServerSpanFacts {
        ServerSpanFacts(method: "POST", target: "/orders/7?x=1", host: "orders", scheme: "http", protocolVersion: "2", status: status,
                        listener: "in", route: "orders", cluster: "orders-v1", reason: reason, tries: 1, requestBodyBytes: 12,
                        responseBodyBytes: 34, clientAddress: "10.1.1.1", requestID: "r-1", startedAt: 10, endedAt: 30)
    }

    @Test func aServerSpanIsAnErrorFor5xxOrNoResponseButNotForTheClients4xx() {
        let trace = Self.sampledTrace()
        let ok = trace.serverSpan(Self.facts(status: 200), epochOffset: 5)
        #expect(ok.name == "POST orders" && ok.kind == .server && ok.parentSpanID == Self.incoming.parentSpanID && ok.traceState == "congo=t61rcWkgMzE")
        #expect(ok.startUnixNanoseconds == 15 && ok.durationNanoseconds == 20 && ok.error == nil)
        #expect(ok.attribute("url.path") == .string("/orders/7"), "the path, without the query")
        #expect(ok.attribute("network.protocol.version") == .string("2") && ok.attribute("http.response.body.size") == .int(34))
        #expect(trace.serverSpan(Self.facts(status: 404), epochOffset: 0).error == nil)
        #expect(trace.serverSpan(Self.facts(status: 503, reason: "no_healthy_upstream"), epochOffset: 0).error == "no_healthy_upstream")
        #expect(trace.serverSpan(Self.facts(status: 0, reason: "client_gone"), epochOffset: 0).error == "client_gone")
    }

    static func sampleSpans() -> [SpanRecord] {
        let trace = Self.sampledTrace()
        var facts = Self.facts(status: 503, reason: "upstream_reset")
        facts.requestID = String(repeating: "é", count: 300)  // long enough for nested lengths of two bytes and more
        let server = trace.serverSpan(facts, epochOffset: 1_700_000_000_000_000_000)
        var ended = TrySpan(spanID: 0xABC, attempt: 1, startedAt: 12, endpoint: "10.0.0.1:80", cause: nil)
        ended.status = 200
        ended.endedAt = 28
        return [server, trace.clientSpan(ended, method: "POST", cluster: "orders-v1", epochOffset: 1_700_000_000_000_000_000)]
    }

    /// Read back with a protobuf reader of the test's own: every length nests, and each field is where
    /// opentelemetry-proto puts it (the end-to-end tests decode with the OpenTelemetry project's own types).
    @Test func otlpIsAnExportTraceServiceRequestWithEveryFieldInItsPlace() throws {
        let spans = Self.sampleSpans()
        let bytes = SpanEncoding.otlp(spans, resource: [SpanAttribute("service.name", "orders")], scopeName: "outrigger", scopeVersion: "0.1.0")
        let request = try ProtobufReader.fields(bytes[...])
        #expect(request.map(\.number) == [1], "one ResourceSpans")
        let resourceSpans = try ProtobufReader.fields(try #require(request.first?.bytes))
        #expect(resourceSpans.map(\.number) == [1, 2])
        let resource = try ProtobufReader.fields(resourceSpans[0].bytes!)
        let serviceName = try ProtobufReader.fields(try ProtobufReader.fields(resource[0].bytes!)[1].bytes!)
        #expect(String(decoding: serviceName[0].bytes!, as: UTF8.self) == "orders")
        let scopeSpans = try ProtobufReader.fields(resourceSpans[1].bytes!)
        #expect(scopeSpans.map(\.number) == [1, 2, 2], "the scope, then two spans")
        let scope = try ProtobufReader.fields(scopeSpans[0].bytes!)
        #expect(String(decoding: scope[0].bytes!, as: UTF8.self) == "outrigger" && String(decoding: scope[1].bytes!, as: UTF8.self) == "0.1.0")

        let server = try ProtobufReader.fields(scopeSpans[1].bytes!)
        let field = { (number: Int) in server.first { $0.number == number } }
        #expect(Array(try #require(field(1)?.bytes)) == [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36])
        #expect(field(2)?.bytes?.count == 8)
        #expect(Array(try #require(field(4)?.bytes)) == [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7], "the caller's span")
        #expect(String(decoding: try #require(field(3)?.bytes), as: UTF8.self) == "congo=t61rcWkgMzE")
        #expect(String(decoding: try #require(field(5)?.bytes), as: UTF8.self) == "POST orders")
        #expect(field(6)?.value == 2, "SPAN_KIND_SERVER")
        #expect(field(7)?.value == 1_700_000_000_000_000_010 && field(8)?.value == 1_700_000_000_000_000_030)
        #expect(field(16)?.value == 0x301, "sampled, with a remote parent")
        let status = try ProtobufReader.fields(try #require(field(15)?.bytes))
        #expect(status.map(\.number) == [2, 3] && status[1].value == 2 && String(decoding: status[0].bytes!, as: UTF8.self) == "upstream_reset")
        let attributes = try server.filter { $0.number == 9 }.map { try ProtobufReader.fields($0.bytes!) }
        #expect(attributes.count == spans[0].attributes.count)
        let values = try Dictionary(uniqueKeysWithValues: attributes.map { pair in
            (String(decoding: pair[0].bytes!, as: UTF8.self), try ProtobufReader.fields(pair[1].bytes!)[0])
        })
        let requestID = try #require(values["outrigger.request_id"])
        #expect(requestID.number == 1 && String(decoding: requestID.bytes!, as: UTF8.self) == String(repeating: "é", count: 300))
        #expect(values["http.response.status_code"]?.number == 3 && values["http.response.status_code"]?.value == 503)

        let client = try ProtobufReader.fields(scopeSpans[2].bytes!)
        #expect(client.first { $0.number == 6 }?.value == 3, "SPAN_KIND_CLIENT")
        #expect(client.first { $0.number == 16 }?.value == 0x101, "a local parent")
        #expect(!client.contains { $0.number == 15 }, "no status: unset")
    }

    /// A span over 16 KiB (its length takes three bytes, not the two left for it) and a batch written into a reused
    /// buffer: the same bytes as into a new one, and they read back.
    @Test func aHugeSpanAndAReusedBufferEncodeTheSameRequest() throws {
        let trace = Self.sampledTrace()
        var facts = Self.facts(status: 200)
        facts.requestID = String(repeating: "x", count: 20_000)
        let spans = Self.sampleSpans() + [trace.serverSpan(facts, epochOffset: 1)]
        let fresh = SpanEncoding.otlp(spans, resource: [SpanAttribute("service.name", "orders")], scopeName: "outrigger", scopeVersion: "0.1.0")
        let reused = EncodingBuffer(capacity: 16)
        _ = SpanEncoding.otlp(Self.sampleSpans(), resource: [], scopeName: "the last batch", scopeVersion: "", into: reused)
        let start = SpanEncoding.otlp(spans, resource: [SpanAttribute("service.name", "orders")], scopeName: "outrigger", scopeVersion: "0.1.0", into: reused)
        #expect(Array(reused.bytes(from: start)) == fresh)
        let scopeSpans = try ProtobufReader.fields(try ProtobufReader.fields(try ProtobufReader.fields(fresh[...])[0].bytes!)[1].bytes!)
        #expect(scopeSpans.map(\.number) == [1, 2, 2, 2])
        let huge = try ProtobufReader.fields(scopeSpans[3].bytes!)
        let attributes = try huge.filter { $0.number == 9 }.map { try ProtobufReader.fields($0.bytes!) }
        let requestID = try #require(attributes.first { String(decoding: $0[0].bytes!, as: UTF8.self) == "outrigger.request_id" })
        #expect(try ProtobufReader.fields(requestID[1].bytes!)[0].bytes?.count == 20_000)
    }

    /// A nested message's length written in the bytes left for it, or its body moved when it needs fewer or more.
    @Test func aNestedMessageMovesOnlyWhenItsLengthNeedsAnotherSize() {
        for (length, lengthBytes, expectedPrefix) in [(5, 1, [0x0a, 0x05]), (5, 2, [0x0a, 0x05]), (200, 1, [0x0a, 0xc8, 0x01]),
                                                      (200, 2, [0x0a, 0xc8, 0x01]), (20_000, 2, [0x0a, 0xa0, 0x9c, 0x01])] {
            let writer = ProtobufWriter(EncodingBuffer(capacity: 0))
            writer.message(1, lengthBytes: lengthBytes) { $0.out.append(repeating: 0x7f, count: length) }
            let bytes = Array(writer.out.bytes())
            #expect(Array(bytes.prefix(expectedPrefix.count)) == expectedPrefix.map(UInt8.init), "\(length) in \(lengthBytes)")
            #expect(bytes.count == expectedPrefix.count + length && bytes.dropFirst(expectedPrefix.count).allSatisfy { $0 == 0x7f })
        }
    }

    @Test func zipkinIsAListOfV2SpansWithAttributesAsTags() throws {
        let json = SpanEncoding.zipkin(Self.sampleSpans(), serviceName: "orders \"v1\"")
        let spans = try #require(try JSONSerialization.jsonObject(with: Data(json)) as? [[String: Any]])
        #expect(spans.count == 2)
        let server = spans[0]
        #expect(server["traceId"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736" && server["parentId"] as? String == "00f067aa0ba902b7")
        #expect(server["kind"] as? String == "SERVER" && server["name"] as? String == "post orders")
        #expect(server["timestamp"] as? Int == 1_700_000_000_000_000 && server["duration"] as? Int == 1, "microseconds, at least 1")
        #expect((server["localEndpoint"] as? [String: String])?["serviceName"] == "orders \"v1\"")
        let tags = try #require(server["tags"] as? [String: String])
        #expect(tags["http.response.status_code"] == "503" && tags["error"] == "upstream_reset")
        #expect(spans[1]["kind"] as? String == "CLIENT" && spans[1]["parentId"] as? String == server["id"] as? String)
        #expect((spans[1]["tags"] as? [String: String])?["error"] == nil)
    }
}

/// Just enough of Protocol Buffers' wire format to read what the encoder wrote: each field's number and its varint or
/// fixed value, or its bytes (nested messages are read again from those).
enum ProtobufReader {
    struct Field {
        var number: Int
        var value: UInt64 = 0
        var bytes: ArraySlice<UInt8>?
    }

    struct Malformed: Error {}

    static func fields(_ bytes: ArraySlice<UInt8>) throws -> [Field] {
        var fields: [Field] = []
        var index = bytes.startIndex
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < bytes.endIndex, shift < 64 else { throw Malformed() }
                let byte = bytes[index]
                index += 1
                value |= UInt64(byte & 0x7f) << shift
                if byte < 0x80 { return value }
                shift += 7
            }
        }
        func fixed(_ count: Int) throws -> UInt64 {
            guard bytes.endIndex - index >= count else { throw Malformed() }
            defer { index += count }
            return (0..<count).reduce(0) { $0 | UInt64(bytes[index + $1]) << UInt64(8 * $1) }
        }
        while index < bytes.endIndex {
            let key = try varint()
            var field = Field(number: Int(key >> 3))
            switch key & 7 {
            case 0: field.value = try varint()
            case 1: field.value = try fixed(8)
            case 5: field.value = try fixed(4)
            case 2:
                let length = Int(try varint())
                guard bytes.endIndex - index >= length else { throw Malformed() }
                field.bytes = bytes[index..<(index + length)]
                index += length
            default: throw Malformed()
            }
            fields.append(field)
        }
        return fields
    }
}

@Suite("Span export queue: full batches, the flush timer, one batch in flight")
struct SpanExportQueueTests {
    typealias Queue = SpanExportQueue<Int>

    static func batch(_ action: Queue.Action) -> [Int]? {
        guard case .send(let batch) = action else { return nil }
        let spans = Array(batch.pieces.joined())
        #expect(batch.count == spans.count)
        return spans
    }

    static func armsTimer(_ action: Queue.Action) -> Bool {
        if case .armFlushTimer = action { return true }
        return false
    }

    static func isNone(_ action: Queue.Action) -> Bool {
        if case .none = action { return true }
        return false
    }

    @Test func aPartialBatchWaitsForTheTimerAndAFullOneGoesAtOnce() {
        var queue = Queue(batchSize: 4, maxQueued: 100)
        let first = queue.submitted([1, 2])
        #expect(Self.armsTimer(first.action) && first.dropped == 0)
        let second = queue.submitted([3])
        #expect(Self.isNone(second.action), "the timer is armed already")
        let full = queue.submitted([4, 5])
        #expect(Self.batch(full.action) == [1, 2, 3, 4])
        #expect(queue.count == 1)
        // One batch in flight: more spans wait, even a full batch of them.
        let whileSending = queue.submitted([6, 7, 8])
        #expect(Self.isNone(whileSending.action))
        let next = queue.sent()
        #expect(Self.batch(next) == [5, 6, 7, 8])
        let afterLast = queue.sent()
        #expect(Self.isNone(afterLast) && queue.isIdle)
    }

    @Test func theTimerSendsWhatWaitsAndARemainderWaitsForTheNextOne() {
        var queue = Queue(batchSize: 4, maxQueued: 100)
        let armed = queue.submitted([1])
        #expect(Self.armsTimer(armed.action))
        let fired = queue.flushTimerFired()
        #expect(Self.batch(fired) == [1])
        let meanwhile = queue.submitted([2, 3])
        #expect(Self.isNone(meanwhile.action), "a batch is in flight")
        let done = queue.sent()
        #expect(Self.armsTimer(done), "two spans are fewer than a batch: they wait for the timer again")
        let firedAgain = queue.flushTimerFired()
        #expect(Self.batch(firedAgain) == [2, 3])
        let idleTimer = queue.flushTimerFired()
        #expect(Self.isNone(idleTimer), "a timer firing during a send does nothing")
    }

    @Test func pastTheBoundSpansAreDroppedAndCounted() {
        var queue = Queue(batchSize: 10, maxQueued: 3)
        let first = queue.submitted([1, 2])
        #expect(first.dropped == 0)
        let second = queue.submitted([3, 4, 5])
        #expect(second.dropped == 2 && queue.count == 3)
    }

    @Test func flushingSendsPartialBatchesInTurnWithoutTheTimer() {
        var queue = Queue(batchSize: 2, maxQueued: 100)
        let armed = queue.submitted([1])
        #expect(Self.armsTimer(armed.action))
        let firstOfFlush = queue.flush()
        #expect(Self.batch(firstOfFlush) == [1])
        let more = queue.submitted([2, 3, 4])
        #expect(Self.isNone(more.action))
        let second = queue.sent()
        #expect(Self.batch(second) == [2, 3])
        let third = queue.sent()
        #expect(Self.batch(third) == [4], "closing: the last partial batch goes without waiting")
        let end = queue.sent()
        #expect(Self.isNone(end) && queue.isIdle)
    }

    @Test func takingManyBatchesKeepsTheOrder() {
        var queue = Queue(batchSize: 3, maxQueued: 1_000)
        var sent: [Int] = []
        var action = queue.submitted(Array(0..<10)).action
        let more = queue.submitted(Array(10..<20))
        #expect(Self.isNone(more.action))
        while let batch = Self.batch(action) {
            sent += batch
            action = queue.sent()
        }
        #expect(Self.armsTimer(action))
        if let rest = Self.batch(queue.flushTimerFired()) { sent += rest }
        #expect(sent == Array(0..<20))
    }
}
