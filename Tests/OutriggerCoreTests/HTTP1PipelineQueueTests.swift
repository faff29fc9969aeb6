import NIOCore
import NIOHTTP1
import OutriggerCore
import Testing

/// HTTP/1.1 pipelining, driven alone: what waits, what goes on when, and what a broken request takes with it.
@Suite("A connection's pipelined requests")
struct HTTP1PipelineQueueTests {
    static func head(_ uri: String) -> HTTPServerRequestPart { .head(HTTPRequestHead(version: .http1_1, method: .POST, uri: uri)) }
    static func body(_ size: Int) -> HTTPServerRequestPart { .body(ByteBuffer(repeating: 0x61, count: size)) }

    static func describe(_ part: HTTPServerRequestPart?) -> String {
        switch part {
        case .head(let head): "head \(head.uri)"
        case .body(let body): "body \(body.readableBytes)"
        case .end: "end"
        case nil: "-"
        }
    }

    @Test func aHeadWaitsWhileTheExchangeIsBusyAndEverythingWaitsBehindIt() {
        var queue = HTTP1PipelineQueue()
        #expect(!queue.mustQueue(Self.head("/1"), exchangeBusy: false), "an idle exchange takes the head")
        #expect(!queue.mustQueue(Self.body(3), exchangeBusy: true), "the body of the request in flight goes on")
        #expect(queue.mustQueue(Self.head("/2"), exchangeBusy: true))
        queue.append(Self.head("/2"))
        #expect(queue.mustQueue(.end(nil), exchangeBusy: false), "behind a queued head, its end waits too")
        queue.append(Self.body(5))
        queue.append(.end(nil))
        queue.append(Self.head("/3"))

        #expect(Self.describe(queue.next(exchangeIdle: false)) == "-", "a head goes only to an idle exchange")
        #expect(Self.describe(queue.next(exchangeIdle: true)) == "head /2")
        // The exchange is busy with /2 now: its body and end go on, the next head waits.
        #expect(Self.describe(queue.next(exchangeIdle: false)) == "body 5")
        #expect(Self.describe(queue.next(exchangeIdle: false)) == "end")
        #expect(Self.describe(queue.next(exchangeIdle: false)) == "-")
        #expect(Self.describe(queue.next(exchangeIdle: true)) == "head /3")
        #expect(queue.isEmpty)
    }

    @Test func readingStopsPastTheLimitsAndGoesOnBelowThem() {
        var queue = HTTP1PipelineQueue()
        queue.append(Self.head("/2"))
        queue.append(Self.body(HTTP1PipelineQueue.maxBytes))
        #expect(queue.hasRoom, "at the byte limit")
        queue.append(Self.body(1))
        #expect(!queue.hasRoom, "past it")
        _ = queue.next(exchangeIdle: true)
        _ = queue.next(exchangeIdle: false)
        #expect(queue.hasRoom, "the bytes handed on no longer count")

        var parts = HTTP1PipelineQueue()
        for index in 0...HTTP1PipelineQueue.maxParts { parts.append(Self.head("/\(index)")) }
        #expect(!parts.hasRoom, "past the part limit")
    }

    @Test func aBrokenLastRequestTakesItsHeadAndBodyOnly() {
        var queue = HTTP1PipelineQueue()
        queue.append(Self.head("/2"))
        queue.append(.end(nil))
        queue.append(Self.head("/3"))
        queue.append(Self.body(HTTP1PipelineQueue.maxBytes + 1))
        #expect(!queue.hasRoom)
        queue.dropLastRequest()
        #expect(queue.hasRoom, "its body no longer counts")
        #expect(Self.describe(queue.next(exchangeIdle: true)) == "head /2")
        #expect(Self.describe(queue.next(exchangeIdle: false)) == "end")
        #expect(queue.isEmpty)

        queue.append(Self.head("/4"))
        queue.removeAll()
        #expect(queue.isEmpty && queue.hasRoom)
    }
}
