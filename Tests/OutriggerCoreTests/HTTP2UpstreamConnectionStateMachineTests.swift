import OutriggerCore
import Testing

/// One multiplexed HTTP/2 upstream connection's bookkeeping, driven alone by event sequences.
@Suite("An HTTP/2 upstream connection's lifecycle")
struct HTTP2UpstreamConnectionStateMachineTests {
    typealias Machine = HTTP2UpstreamConnectionStateMachine

    @Test func theFirstRequestOpensTheConnectionAndTheOthersWaitForIt() {
        var machine = Machine()
        var slotsAsked = 0
        let reserve = { slotsAsked += 1; return true }
        #expect(machine.committedStreams == .max, "nothing open: the pool does not place streams here")
        do { let outcome = machine.leaseRequested(1, reserveConnection: reserve); #expect(outcome == .connect) }
        do { let outcome = machine.leaseRequested(2, reserveConnection: reserve); #expect(outcome == .wait) }
        do { let outcome = machine.leaseRequested(3, reserveConnection: reserve); #expect(outcome == .wait) }
        #expect(slotsAsked == 1, "one slot for the one connection")
        #expect(machine.committedStreams == 3)
        machine.waiterCancelled(2)
        #expect(machine.committedStreams == 2)

        let (ready, idle) = machine.connected()
        #expect(ready == [1, 3], "in the order they came, without the one that gave up")
        #expect(idle == .none)
        do { let outcome = machine.streamOpened(); #expect(outcome == .cancelIdleTimer) }
        do { let outcome = machine.streamOpened(); #expect(outcome == .cancelIdleTimer) }
        #expect(machine.committedStreams == 2)
        do { let outcome = machine.leaseRequested(4, reserveConnection: reserve); #expect(outcome == .openStream, "up: a stream at once") }
        #expect(slotsAsked == 1)
    }

    @Test func anIdleConnectionIsTimedAndARetiredOneClosesWithItsLastStream() {
        var machine = Machine()
        _ = machine.leaseRequested(1, reserveConnection: { true })
        _ = machine.connected()
        _ = machine.streamOpened()
        _ = machine.streamOpened()
        do { let outcome = machine.streamClosed(); #expect(outcome == .none, "a stream is still open") }
        do { let outcome = machine.streamClosed(); #expect(outcome == .armIdleTimer) }
        #expect(machine.isIdle)
        do { let outcome = machine.streamOpened(); #expect(outcome == .cancelIdleTimer) }
        do { let outcome = machine.retire(); #expect(outcome == .none, "a stream is open: it finishes first") }
        #expect(machine.committedStreams == .max, "retired: no new streams")
        do { let outcome = machine.streamClosed(); #expect(outcome == .close) }
        do { let outcome = machine.closed(); #expect(outcome, "it leaves its pool") }
        do { let outcome = machine.closed(); #expect(!outcome, "once") }
    }

    @Test func aConnectionWhoseWaitersAllGaveUpIsIdleOnceOpen() {
        var machine = Machine()
        _ = machine.leaseRequested(1, reserveConnection: { true })
        machine.waiterCancelled(1)
        let (ready, idle) = machine.connected()
        #expect(ready.isEmpty && idle == .armIdleTimer)

        var retired = Machine()
        _ = retired.leaseRequested(1, reserveConnection: { true })
        do { let outcome = retired.retire(); #expect(outcome == .none, "not open yet") }
        retired.waiterCancelled(1)
        do { let outcome = retired.connected().idle; #expect(outcome == .close) }
    }

    @Test func aRefusedSlotOverflowsAndAFailedConnectFailsItsWaiters() {
        var full = Machine()
        do { let outcome = full.leaseRequested(1, reserveConnection: { false }); #expect(outcome == .overflow) }

        var machine = Machine()
        _ = machine.leaseRequested(1, reserveConnection: { true })
        _ = machine.leaseRequested(2, reserveConnection: { true })
        let (failed, leavePool) = machine.connectFailed()
        #expect(failed == [1, 2] && leavePool)
        do { let outcome = machine.closed(); #expect(!outcome, "it never opened: nothing more to leave") }
    }

    @Test func aGoAwayTakesTheConnectionOutOfItsPoolOnceAndItClosesWhenIdle() {
        var machine = Machine()
        _ = machine.leaseRequested(1, reserveConnection: { true })
        _ = machine.connected()
        _ = machine.streamOpened()
        let first = machine.goAwayReceived()
        #expect(first.leavePool && first.idle == .none, "its stream finishes")
        #expect(machine.committedStreams == .max)
        let second = machine.goAwayReceived()
        #expect(!second.leavePool && second.idle == .none, "a second GOAWAY changes nothing")
        do { let outcome = machine.streamClosed(); #expect(outcome == .close) }
        do { let outcome = machine.closed(); #expect(!outcome, "it left its pool at the GOAWAY") }

        var idle = Machine()
        _ = idle.leaseRequested(1, reserveConnection: { true })
        _ = idle.connected()
        do { let outcome = idle.goAwayReceived().idle; #expect(outcome == .close, "no stream open: it closes at once") }
    }

    @Test func theUpstreamsStreamLimitIsKept() {
        var machine = Machine()
        #expect(machine.peerMaxConcurrentStreams == 100)
        machine.maxConcurrentStreamsChanged(to: 7)
        #expect(machine.peerMaxConcurrentStreams == 7)
    }
}
