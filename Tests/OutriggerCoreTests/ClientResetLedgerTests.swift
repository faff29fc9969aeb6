import OutriggerConfig
import OutriggerCore
import Testing

@Suite("Client reset ledger (rapid reset across connections)")
struct ClientResetLedgerTests {
    static let second: UInt64 = 1_000_000_000
    static let limits = RapidResetConfig(maxResetsPerAddress: 100, window: .seconds(10), refuseFor: .seconds(30))

    @Test func anAddressPastTheLimitIsRefusedForItsPenaltyThenWelcomeAgain() {
        var ledger = ClientResetLedger<String>()
        // Ten connections of 10 streams, all reset: 100 is the limit, not over it.
        for index in 0..<10 {
            #expect(ledger.record("a", streams: 10, resets: 10, now: UInt64(index) * Self.second / 10, limits: Self.limits) == .welcome)
        }
        let now = 2 * Self.second
        #expect(ledger.record("a", streams: 1, resets: 1, now: now, limits: Self.limits) == .refused(until: now + 30 * Self.second))
        #expect(!ledger.admits("a", now: now + 29 * Self.second))
        #expect(ledger.admits("b", now: now), "another address is not concerned")
        // Resets reported by connections still open while refused neither extend the refusal nor count after it.
        #expect(ledger.record("a", streams: 500, resets: 500, now: now + Self.second, limits: Self.limits) == .refused(until: now + 30 * Self.second))
        #expect(ledger.admits("a", now: now + 30 * Self.second))
        // Counting started over: the same pace is welcome for another 100 resets.
        #expect(ledger.record("a", streams: 100, resets: 100, now: now + 31 * Self.second, limits: Self.limits) == .welcome)
    }

    @Test func resetsOfLessThanThreeQuartersOfTheStreamsAreWelcome() {
        var ledger = ClientResetLedger<String>()
        // A report without a reset does not bring an address in …
        #expect(ledger.record("busy", streams: 1_000, resets: 0, now: 0, limits: Self.limits) == .welcome)
        #expect(ledger.trackedCount == 0)
        // … but counts once it is in.
        #expect(ledger.record("busy", streams: 100, resets: 50, now: 0, limits: Self.limits) == .welcome)
        #expect(ledger.record("busy", streams: 1_000, resets: 0, now: Self.second, limits: Self.limits) == .welcome)
        // Hedging every request cancels half: 650 of 1,300 — welcome, though past 100.
        #expect(ledger.record("busy", streams: 200, resets: 600, now: Self.second, limits: Self.limits) == .welcome, "650 of 1,300")
        #expect(ledger.record("busy", streams: 2_000, resets: 2_600, now: 2 * Self.second, limits: Self.limits) != .welcome, "3,250 of 3,300")
    }

    @Test func theWindowSlides() {
        var ledger = ClientResetLedger<String>()
        #expect(ledger.record("a", streams: 80, resets: 80, now: 0, limits: Self.limits) == .welcome)
        // Half a window into the next one, half of the previous window's 80 still counts: 40 + 50 = 90.
        #expect(ledger.record("a", streams: 50, resets: 50, now: 15 * Self.second, limits: Self.limits) == .welcome)
        // 70 + 40 > 100.
        #expect(ledger.record("a", streams: 20, resets: 20, now: 15 * Self.second, limits: Self.limits) != .welcome)
        // Two windows on, nothing of the past counts.
        var quiet = ClientResetLedger<String>()
        _ = quiet.record("a", streams: 100, resets: 100, now: 0, limits: Self.limits)
        #expect(quiet.record("a", streams: 100, resets: 100, now: 25 * Self.second, limits: Self.limits) == .welcome)
    }

    @Test func zeroTurnsTheDefenceOff() {
        var ledger = ClientResetLedger<String>()
        var off = Self.limits
        off.maxResetsPerAddress = 0
        #expect(ledger.record("a", streams: 10_000, resets: 10_000, now: 0, limits: off) == .welcome)
        #expect(ledger.trackedCount == 0)
    }

    @Test func memoryIsBoundedByTheCapacity() {
        var ledger = ClientResetLedger<Int>(capacity: 3)
        for client in 0..<3 { _ = ledger.record(client, streams: 1, resets: 1, now: 0, limits: Self.limits) }
        // Full, and no entry is old enough to sweep: a fourth address is not tracked (and not refused).
        #expect(ledger.record(3, streams: 500, resets: 500, now: Self.second, limits: Self.limits) == .welcome)
        #expect(ledger.trackedCount == 3)
        // Two windows later the old entries are swept to make room.
        #expect(ledger.record(3, streams: 500, resets: 500, now: 21 * Self.second, limits: Self.limits) != .welcome)
        #expect(ledger.trackedCount == 1)
        // Full again: the next sweep waits a window, whoever comes meanwhile.
        for client in 4..<6 { _ = ledger.record(client, streams: 1, resets: 1, now: 22 * Self.second, limits: Self.limits) }
        #expect(ledger.trackedCount == 3)
        #expect(ledger.record(9, streams: 500, resets: 500, now: 23 * Self.second, limits: Self.limits) == .welcome, "not tracked: no sweep yet")
    }
}
