import OutriggerCore
import Testing

@Suite("HTTP/2 inbound flow-control credit")
struct HTTP2InboundWindowTests {
    @Test func nothingIsGivenBackUntilHalfTheWindowIsUsed() {
        var window = HTTP2InboundWindow(target: 1000)
        #expect(window.reported(size: 1000) == nil)
        #expect(window.reported(size: 600) == nil)
        #expect(window.reported(size: 501) == nil)
        // Half used: topped up to the target in one update.
        #expect(window.reported(size: 500) == 500)
        #expect(window.reported(size: 1000) == nil)
    }

    @Test func aWindowSmallerThanTheTargetIsRaisedAtTheFirstReport() {
        // The connection window starts at 65,535 whatever the target; the first DATA frame raises it.
        var window = HTTP2InboundWindow(target: 1 << 20)
        #expect(window.reported(size: 65_535 - 100) == (1 << 20) - (65_535 - 100))
    }

    @Test func heldBytesAreGivenBackOnlyWhenReleased() {
        var window = HTTP2InboundWindow(target: 1000)
        window.held(700)
        // 700 of the 800 used are still held: the peer has 200 left, but only 100 were handed on.
        #expect(window.reported(size: 200) == nil)
        #expect(window.released(300) == nil)  // 400 handed on, 400 held: 600 counted as the window
        #expect(window.released(400) == 800)  // all handed on: back to the target
        #expect(window.heldBytes == 0)
    }

    @Test func aNegativeWindowIsRaisedBackToTheTarget() {
        // A SETTINGS that lowers the initial window can leave a stream's window below zero.
        var window = HTTP2InboundWindow(target: 1000)
        #expect(window.reported(size: -200) == 1200)
    }

    @Test func releasingBeforeAnyReportSendsNothing() {
        var window = HTTP2InboundWindow(target: 1000)
        window.held(10)
        #expect(window.released(10) == nil)
    }
}

@Suite("HTTP/2 stream send watermark")
struct SendWatermarkTests {
    @Test func aStreamStopsAboveTheHighMarkAndResumesBelowTheLowOne() {
        var mark = SendWatermark(high: 100, low: 50)
        let atTheMark = mark.queued(100)
        #expect(!atTheMark && mark.isBelow, "at the mark, not over it")
        let over = mark.queued(1)
        #expect(over && !mark.isBelow)
        let aboveLow = mark.sent(40)  // 61 left: above the low mark, still stopped
        #expect(!aboveLow && !mark.isBelow)
        let belowLow = mark.sent(12)  // 49 left
        #expect(belowLow && mark.isBelow)
        #expect(mark.unsentBytes == 49)
    }
}
