import NIOCore
import NIOHTTP1
@testable import OutriggerCore
import Testing

@Suite("Request relay: what of a request goes upstream, and when")
struct RequestRelayTests {
    static func body(_ text: String) -> HTTPClientRequestPart { .body(.byteBuffer(ByteBuffer(string: text))) }

    static func texts(_ parts: [HTTPClientRequestPart]) -> [String] {
        parts.map { part in
            switch part {
            case .head: "head"
            case .body(.byteBuffer(let buffer)): String(buffer: buffer)
            case .body: "file"
            case .end: "end"
            }
        }
    }

    @Test func theHeadAndEarlyPartsWaitForTheLeaseThenPartsGoAtOnce() {
        var relay = RequestRelay(holdsHeadForFraming: false, keepsReplay: false, replayLimit: 0)
        let released1 = relay.forward(Self.body("a"), leased: false)
        #expect(released1 == nil)
        let released2 = relay.forward(Self.body("b"), leased: false)
        #expect(released2 == nil)
        let (sendsHead, parts) = relay.leased()
        #expect(sendsHead && Self.texts(parts) == ["a", "b"])
        let released3 = relay.forward(.end(nil), leased: true)
        #expect(released3 == nil, "leased: it goes now, nothing waits")
        let (again, nothing) = relay.leased()
        #expect(!again && nothing.isEmpty, "the head went once")
    }

    @Test func aHeadHeldForFramingGoesWithTheFramingItsNextPartTells() {
        var withBody = RequestRelay(holdsHeadForFraming: true, keepsReplay: false, replayLimit: 0)
        let (early, _) = withBody.leased()
        #expect(!early, "held: not sent with the lease")
        let released4 = withBody.forward(Self.body("a"), leased: true)
        #expect(released4 == RequestRelay.ReleasedHead(chunked: true, sendNow: true))
        #expect(!withBody.headHeldForFraming)
        let released5 = withBody.forward(.end(nil), leased: true)
        #expect(released5 == nil)

        var bodiless = RequestRelay(holdsHeadForFraming: true, keepsReplay: false, replayLimit: 0)
        let released6 = bodiless.forward(.end(nil), leased: false)
        #expect(released6 == RequestRelay.ReleasedHead(chunked: false, sendNow: false))
        let (sendsHead, parts) = bodiless.leased()
        #expect(sendsHead && Self.texts(parts) == ["end"], "it went with the lease")

        var streaming = RequestRelay(holdsHeadForFraming: true, keepsReplay: false, replayLimit: 0)
        let released7 = streaming.readBurstEnded(leased: true)
        #expect(released7 == RequestRelay.ReleasedHead(chunked: true, sendNow: true),
                "a burst with neither body nor end: a body is coming")
        let released8 = streaming.readBurstEnded(leased: true)
        #expect(released8 == nil)
    }

    @Test func aRetrySendsTheHeadAndEveryKeptPartAgain() {
        var relay = RequestRelay(holdsHeadForFraming: false, keepsReplay: true, replayLimit: 4)
        _ = relay.leased()
        _ = relay.forward(Self.body("ab"), leased: true)
        _ = relay.forward(Self.body("cd"), leased: true)
        _ = relay.forward(.end(nil), leased: true)
        #expect(relay.replayKept)
        relay.nextTryStarts()
        let (sendsHead, parts) = relay.leased()
        #expect(sendsHead && Self.texts(parts) == ["ab", "cd", "end"])
        relay.nextTryStarts()
        let second = relay.leased().parts
        #expect(Self.texts(second) == ["ab", "cd", "end"], "as often as the route retries")
    }

    @Test func aBodyPastTheReplayBufferIsNotKept() {
        var relay = RequestRelay(holdsHeadForFraming: false, keepsReplay: true, replayLimit: 4)
        _ = relay.leased()
        _ = relay.forward(Self.body("abc"), leased: true)
        #expect(relay.replayKept)
        _ = relay.forward(Self.body("de"), leased: true)
        #expect(!relay.replayKept)
        _ = relay.forward(.end(nil), leased: true)
        #expect(!relay.replayKept, "gone for good")
    }

    @Test func aRequestNotKeptStillHasWhatWaitedWhenItsConnectionNeverOpened() {
        var relay = RequestRelay(holdsHeadForFraming: false, keepsReplay: false, replayLimit: 0)
        _ = relay.forward(Self.body("a"), leased: false)
        relay.nextTryStarts()
        let (sendsHead, parts) = relay.leased()
        #expect(sendsHead && Self.texts(parts) == ["a"])
    }

    @Test func aTransparentResendKeepsTheRequestFromThen() {
        var complete = RequestRelay(holdsHeadForFraming: false, keepsReplay: false, replayLimit: 10)
        _ = complete.leased()
        _ = complete.forward(.end(nil), leased: true)
        #expect(!complete.replayKept)
        complete.keepForResend(requestComplete: true)
        complete.nextTryStarts()
        let (sendsHead, parts) = complete.leased()
        #expect(sendsHead && Self.texts(parts) == ["end"])

        var open = RequestRelay(holdsHeadForFraming: false, keepsReplay: false, replayLimit: 10)
        _ = open.leased()
        open.keepForResend(requestComplete: false)
        _ = open.forward(Self.body("late"), leased: false)
        open.nextTryStarts()
        let resent = open.leased().parts
        #expect(Self.texts(resent) == ["late"], "kept once, not twice")
    }
}
