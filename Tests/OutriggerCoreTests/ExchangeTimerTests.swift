import OutriggerCore
import Testing

/// The one timer of a proxied request, driven alone on a manual clock (milliseconds below).
@Suite("A request's timers")
struct ExchangeTimerTests {
    static let ms: UInt64 = 1_000_000

    /// Route timeout 1 s, stream idle 300 ms, per-try `perTry`; started at 0.
    static func timer(perTry: Duration? = nil, streamIdle: Duration = .milliseconds(300)) -> ExchangeTimer {
        ExchangeTimer(start: 0, routeTimeout: .seconds(1), streamIdleTimeout: streamIdle, perTryTimeout: perTry)
    }

    static func progress(body: Int = 0, parts: Int = 0, leased: Bool = true, writable: Bool = true) -> ExchangeTimer.Progress {
        .init(requestBodyBytes: body, responseParts: parts, upstreamTakesBody: leased, downstreamWritable: writable)
    }

    @Test func theRouteTimeoutCountsFromTheRequestsEndAndTheTimerIsArmedOnce() {
        var timer = Self.timer()
        #expect(timer.settle() == .arm(at: 1000 * Self.ms), "armed from the start")
        #expect(timer.routeDeadline == nil)
        #expect(timer.requestEnded(now: 200 * Self.ms) == .none, "a later deadline is found when the timer fires: no cancel")
        #expect(timer.routeDeadline == 1200 * Self.ms)
        #expect(timer.fired(now: 1000 * Self.ms, progress: Self.progress()) == .nothingDue(.arm(at: 1200 * Self.ms)))
        #expect(timer.fired(now: 1200 * Self.ms, progress: Self.progress()) == .expired(.routeTimeout))
    }

    @Test func anUploadThatKeepsMovingIsNotCutAndOneThatStallsIs() {
        var timer = Self.timer()
        _ = timer.settle()
        // The timer fires at the route timeout while the body still flows: it watches the upload.
        #expect(timer.fired(now: 1000 * Self.ms, progress: Self.progress(body: 10)) == .nothingDue(.arm(at: 1300 * Self.ms)))
        #expect(timer.fired(now: 1300 * Self.ms, progress: Self.progress(body: 20)) == .nothingDue(.arm(at: 1600 * Self.ms)))
        #expect(timer.fired(now: 1600 * Self.ms, progress: Self.progress(body: 20)) == .expired(.uploadStalled))

        // Still waiting for a connection at the route timeout: no upstream took the body, that is a timeout.
        var waiting = Self.timer()
        _ = waiting.settle()
        #expect(waiting.fired(now: 1000 * Self.ms, progress: Self.progress(body: 10, leased: false)) == .expired(.routeTimeout))
    }

    @Test func theEndOfAWatchedUploadStartsTheRouteTimeout() {
        var timer = Self.timer()
        _ = timer.settle()
        #expect(timer.fired(now: 1000 * Self.ms, progress: Self.progress(body: 10)) == .nothingDue(.arm(at: 1300 * Self.ms)))
        #expect(timer.requestEnded(now: 1100 * Self.ms) == .none)
        #expect(timer.fired(now: 1300 * Self.ms, progress: Self.progress(body: 10)) == .nothingDue(.arm(at: 2100 * Self.ms)),
                "no upload to watch any more: the response has its full timeout")
        #expect(timer.fired(now: 2100 * Self.ms, progress: Self.progress(body: 10)) == .expired(.routeTimeout))
    }

    @Test func aResponseIsWatchedForProgressNotForItsLength() {
        var timer = Self.timer()
        _ = timer.settle()
        _ = timer.requestEnded(now: 0)
        // The head at 100 ms: the first look a stream-idle period later, sooner than the route deadline.
        #expect(timer.responseStarted(now: 100 * Self.ms, tunnel: false) == .arm(at: 400 * Self.ms))
        #expect(timer.routeDeadline == nil, "the route timeout is over once the response started")
        #expect(timer.fired(now: 400 * Self.ms, progress: Self.progress(parts: 3)) == .nothingDue(.arm(at: 700 * Self.ms)))
        #expect(timer.fired(now: 700 * Self.ms, progress: Self.progress(parts: 9)) == .nothingDue(.arm(at: 1000 * Self.ms)))
        // A client that takes nothing is not the upstream's stall.
        #expect(timer.fired(now: 1000 * Self.ms, progress: Self.progress(parts: 9, writable: false)) == .nothingDue(.arm(at: 1300 * Self.ms)))
        #expect(timer.fired(now: 1300 * Self.ms, progress: Self.progress(parts: 9)) == .expired(.responseStalled))
    }

    @Test func aLongStreamIdlePeriodFirstLooksAtTheRouteDeadline() {
        var timer = Self.timer(streamIdle: .seconds(60))
        _ = timer.settle()
        _ = timer.requestEnded(now: 100 * Self.ms)
        #expect(timer.responseStarted(now: 200 * Self.ms, tunnel: false) == .none, "armed at 1,000 ms already, sooner than 1,100")
        #expect(timer.fired(now: 1000 * Self.ms, progress: Self.progress(parts: 1)) == .nothingDue(.arm(at: 1100 * Self.ms)))
        #expect(timer.fired(now: 1100 * Self.ms, progress: Self.progress(parts: 1)) == .nothingDue(.arm(at: 61100 * Self.ms)),
                "the first look only notes the progress")
        #expect(timer.fired(now: 61100 * Self.ms, progress: Self.progress(parts: 1)) == .expired(.responseStalled))
    }

    @Test func aTunnelAndAFinishedRequestHaveNoTimer() {
        var tunnel = Self.timer()
        _ = tunnel.settle()
        _ = tunnel.requestEnded(now: 0)
        #expect(tunnel.responseStarted(now: 10 * Self.ms, tunnel: true) == .cancel)
        #expect(tunnel.finished() == .none, "cancelled once")
        var done = Self.timer()
        #expect(done.finished() == .none, "never armed: nothing to cancel")
    }

    @Test func aTryIsTimedFromTheRequestsEndAndARetryWaitsOutItsBackoff() {
        var timer = Self.timer(perTry: .milliseconds(200))
        _ = timer.settle()
        #expect(timer.tryStarted(now: 0) == .none, "the request has not ended: its try is not timed yet")
        #expect(timer.timeLeftForTry(now: 0) == 200 * Self.ms)
        #expect(timer.requestEnded(now: 50 * Self.ms) == .arm(at: 250 * Self.ms), "sooner than the route's: re-armed")
        #expect(timer.fired(now: 250 * Self.ms, progress: Self.progress()) == .expired(.perTryTimeout))
        // The shell retries after a backoff of 25 ms; the timer was not armed after the expiry.
        timer.tryEnded()
        #expect(timer.backoffStarted(now: 250 * Self.ms, delay: 25 * Self.ms) == .arm(at: 275 * Self.ms))
        #expect(timer.isBackingOff)
        #expect(timer.fired(now: 275 * Self.ms, progress: Self.progress(leased: false)) == .expired(.backoffOver))
        #expect(timer.tryStarted(now: 275 * Self.ms) == .arm(at: 475 * Self.ms))
        #expect(!timer.isBackingOff)
        // What the second try may still take: the route's 1,050 ms deadline is further than its own 200 ms.
        #expect(timer.timeLeftForTry(now: 275 * Self.ms) == 200 * Self.ms)
        #expect(timer.timeLeftForTry(now: 950 * Self.ms) == 100 * Self.ms)
        #expect(timer.timeLeftForTry(now: 2000 * Self.ms) == 0)
        // The answer comes in time: the per-try timeout is over, the timer finds nothing when it fires.
        #expect(timer.responseStarted(now: 300 * Self.ms, tunnel: false) == .none)
        #expect(timer.fired(now: 475 * Self.ms, progress: Self.progress(parts: 0)) == .nothingDue(.arm(at: 600 * Self.ms)))
    }

    @Test func theRequestsEndDuringABackoffLeavesTheNextTryToTimeItself() {
        var timer = Self.timer(perTry: .milliseconds(200))
        _ = timer.settle()
        #expect(timer.backoffStarted(now: 10 * Self.ms, delay: 40 * Self.ms) == .arm(at: 50 * Self.ms))
        #expect(timer.requestEnded(now: 20 * Self.ms) == .none, "no try is running")
        #expect(timer.fired(now: 50 * Self.ms, progress: Self.progress(leased: false)) == .expired(.backoffOver))
        #expect(timer.tryStarted(now: 50 * Self.ms) == .arm(at: 250 * Self.ms))
    }

    @Test func whenTheRouteAndATryRunOutTogetherTheRouteDecides() {
        var timer = ExchangeTimer(start: 0, routeTimeout: .milliseconds(200), streamIdleTimeout: .seconds(1), perTryTimeout: .milliseconds(200))
        _ = timer.settle()
        _ = timer.requestEnded(now: 0)
        #expect(timer.fired(now: 200 * Self.ms, progress: Self.progress()) == .expired(.routeTimeout))
        // A try that ran out first is the retry policy's: the route timeout is still to come.
        var earlier = Self.timer(perTry: .milliseconds(100))
        _ = earlier.settle()
        _ = earlier.requestEnded(now: 0)
        #expect(earlier.fired(now: 1000 * Self.ms, progress: Self.progress()) == .expired(.perTryTimeout), "the sooner deadline first")
        #expect(earlier.settle() == .arm(at: 1000 * Self.ms), "the route's still due: the timer fires again at once")
        #expect(earlier.fired(now: 1000 * Self.ms, progress: Self.progress()) == .expired(.routeTimeout))
    }

    @Test func anEndedTryLeavesNothingDue() {
        var timer = Self.timer(perTry: .milliseconds(100))
        _ = timer.settle()
        _ = timer.requestEnded(now: 0)
        timer.tryEnded()
        #expect(timer.fired(now: 100 * Self.ms, progress: Self.progress()) == .nothingDue(.arm(at: 1000 * Self.ms)))
    }
}
