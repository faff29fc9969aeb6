import OutriggerConfig

/// Counts, per client address, the HTTP/2 streams its connections opened and reset, across connections, and
/// refuses an address for a while once it resets too many (the "rapid reset" attack, CVE-2023-44487, spread
/// over many connections so that no single one reaches NIO's per-connection limit). An address is refused
/// when, over the sliding `window`, it reset more than `maxResetsPerAddress` streams *and* at least three
/// quarters of the streams it opened: a caller whose cancellations add up (hedging cancels at most half its
/// streams, timeouts fewer) stays welcome.
///
/// Pure: the clock is passed in (nanoseconds). Memory is bounded by `capacity` addresses: an address enters
/// with its first reset (a report without one only updates an address already there); when full, entries
/// whose window has passed are swept, at most once a window, and an address that finds no room is not tracked.
public struct ClientResetLedger<Client: Hashable & Sendable>: Sendable {
    public enum Verdict: Equatable, Sendable {
        case welcome
        /// The address just crossed the limit, or already had: refused until this time (nanoseconds).
        case refused(until: UInt64)
    }

    /// Two consecutive fixed windows; the previous one counts in proportion to how much of it still overlaps
    /// the sliding window ending now.
    private struct Entry: Sendable {
        var windowStart: UInt64
        var streams = 0
        var resets = 0
        var previousStreams = 0
        var previousResets = 0
        var refusedUntil: UInt64 = 0
    }

    private var entries: [Client: Entry] = [:]
    public let capacity: Int
    /// When entries were last swept for room (nanoseconds).
    private var lastSweep: UInt64?

    public init(capacity: Int = 65_536) {
        self.capacity = capacity
    }

    public var trackedCount: Int { entries.count }

    /// Whether a connection from `client` may be accepted at `now`.
    public func admits(_ client: Client, now: UInt64) -> Bool {
        guard let entry = entries[client] else { return true }
        return entry.refusedUntil <= now
    }

    /// Adds what one of `client`'s connections saw since it last reported, and says whether the address is now refused.
    public mutating func record(_ client: Client, streams: Int, resets: Int, now: UInt64, limits: RapidResetConfig) -> Verdict {
        let window = UInt64(max(limits.window.nanoseconds, 1))
        guard limits.maxResetsPerAddress > 0 else { return .welcome }
        if entries[client] == nil {
            guard resets > 0, entries.count < capacity || sweep(now: now, window: window) else { return .welcome }
            entries[client] = Entry(windowStart: now)
        }
        return Self.update(&entries[client]!, streams: streams, resets: resets, now: now, window: window, limits: limits)
    }

    private static func update(_ entry: inout Entry, streams: Int, resets: Int, now: UInt64, window: UInt64, limits: RapidResetConfig) -> Verdict {
        let elapsed = now &- entry.windowStart
        if now >= entry.windowStart, elapsed >= window {
            // One window on: the current counts become the previous ones; two or more: both are forgotten.
            let oneOn = elapsed < 2 * window
            entry.previousStreams = oneOn ? entry.streams : 0
            entry.previousResets = oneOn ? entry.resets : 0
            entry.streams = 0
            entry.resets = 0
            entry.windowStart = now - elapsed % window
        }
        // While refused, what its open connections still report is not counted: counting starts over after.
        if entry.refusedUntil > now { return .refused(until: entry.refusedUntil) }
        entry.streams += streams
        entry.resets += resets
        let overlap = Double(window - min(now &- entry.windowStart, window)) / Double(window)
        let recentResets = Double(entry.resets) + Double(entry.previousResets) * overlap
        let recentStreams = Double(entry.streams) + Double(entry.previousStreams) * overlap
        guard recentResets > Double(limits.maxResetsPerAddress), recentResets * 4 >= recentStreams * 3 else { return .welcome }
        entry.refusedUntil = now + UInt64(max(limits.refuseFor.nanoseconds, 0))
        // Counting starts over when the refusal ends.
        entry.streams = 0
        entry.resets = 0
        entry.previousStreams = 0
        entry.previousResets = 0
        return .refused(until: entry.refusedUntil)
    }

    /// Forgets addresses neither refused nor seen within the last two windows, at most once a window (a full
    /// ledger must not cost a pass over every entry per new address); true when that made room.
    private mutating func sweep(now: UInt64, window: UInt64) -> Bool {
        if let lastSweep, now >= lastSweep, now - lastSweep < window { return false }
        lastSweep = now
        entries = entries.filter { _, entry in
            entry.refusedUntil > now || (now >= entry.windowStart && now - entry.windowStart < 2 * window)
        }
        return entries.count < capacity
    }
}
