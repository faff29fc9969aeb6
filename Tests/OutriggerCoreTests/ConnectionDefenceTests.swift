import NIOCore
import OutriggerCore
import Testing

@Suite("HTTP/2 frame headers and connection timeouts")
struct ConnectionDefenceStateTests {
    typealias Header = HTTP2FrameHeaderScanner.FrameHeader

    static func scanAll(_ chunks: [[UInt8]], preface: Int = 0) -> [(Header, Int)] {
        var scanner = HTTP2FrameHeaderScanner(skippingPreface: preface)
        var seen: [(Header, Int)] = []
        var offset = 0
        for chunk in chunks {
            scanner.scan(ByteBuffer(bytes: chunk)) { header, payload in seen.append((header, offset + payload)) }
            offset += chunk.count
        }
        return seen
    }

    // SETTINGS (empty), HEADERS on stream 3 without END_HEADERS (2 bytes), CONTINUATION with END_HEADERS (1 byte).
    static let stream: [UInt8] = [0, 0, 0, 0x4, 0, 0, 0, 0, 0]
        + [0, 0, 2, 0x1, 0x1, 0, 0, 0, 3, 0xAA, 0xBB]
        + [0, 0, 1, 0x9, 0x4, 0x80, 0, 0, 3, 0xCC]

    @Test func framesAreFoundWhateverTheReadsSplitThem() {
        let whole = Self.scanAll([Self.stream])
        #expect(whole.map(\.0) == [
            Header(length: 0, type: 0x4, flags: 0, streamID: 0),
            Header(length: 2, type: 0x1, flags: 0x1, streamID: 3),
            Header(length: 1, type: 0x9, flags: 0x4, streamID: 3),  // the reserved bit is not part of the id
        ])
        #expect(whole.map(\.1) == [9, 18, 29])
        #expect(whole[1].0.startsUnfinishedHeaderBlock && !whole[0].0.startsUnfinishedHeaderBlock)
        #expect(whole[2].0.endsHeaderBlock && !whole[1].0.endsHeaderBlock)
        // Every split point, and one byte at a time: the same frames.
        for split in 1..<Self.stream.count {
            let parts = [Array(Self.stream[..<split]), Array(Self.stream[split...])]
            #expect(Self.scanAll(parts).map(\.0) == whole.map(\.0), "split at \(split)")
        }
        #expect(Self.scanAll(Self.stream.map { [$0] }).map(\.0) == whole.map(\.0))
    }

    @Test func theClientPrefaceIsSkipped() {
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        let seen = Self.scanAll([Array(preface.prefix(5)), Array(preface.dropFirst(5)) + Self.stream], preface: 24)
        #expect(seen.map(\.0.type) == [0x4, 0x1, 0x9])
    }

    @Test func anHTTP2ConnectionClosesWhenNoStreamIsOpenForItsIdleTimeout() {
        var timeouts = HTTP2ConnectionTimeouts(requestHeadersTimeout: .seconds(10), idleTimeout: .seconds(300), now: 0)
        #expect(timeouts.check(now: 0) == .checkAgain(at: 300_000_000_000))
        timeouts.streamOpened()
        #expect(timeouts.check(now: 300_000_000_000) == .checkAgain(at: 600_000_000_000), "an open stream is not idle")
        timeouts.streamClosed(now: 400_000_000_000)
        #expect(timeouts.check(now: 600_000_000_000) == .checkAgain(at: 700_000_000_000), "idle counts from the last stream's close")
        #expect(timeouts.check(now: 700_000_000_000) == .closeIdle)
    }

    @Test func aHeaderBlockMustBeFinishedWithinTheRequestHeadersTimeout() {
        var timeouts = HTTP2ConnectionTimeouts(requestHeadersTimeout: .seconds(10), idleTimeout: .seconds(300), now: 0)
        #expect(timeouts.headerBlockStarted(now: 5_000_000_000) == 15_000_000_000)
        #expect(timeouts.headerBlockStarted(now: 6_000_000_000) == 15_000_000_000, "timed from the first HEADERS")
        #expect(timeouts.check(now: 14_000_000_000) == .checkAgain(at: 15_000_000_000))
        #expect(timeouts.check(now: 15_000_000_000) == .headerBlockTimedOut)
        timeouts.headerBlockEnded()
        timeouts.streamOpened()
        #expect(timeouts.check(now: 15_000_000_000) == .checkAgain(at: 315_000_000_000))
    }
}
