import NIOCore
import OutriggerCore

/// What a `LoopTimers` timer calls when it is due.
protocol LoopTimerTarget: AnyObject {
    func loopTimerFired()
}

/// Every exchange timer of one event loop behind a single NIO timer: the deadlines live in a `DeadlineHeap`, so
/// arming, moving and cancelling one is a heap operation with no search and no allocation (a NIO timer per
/// request cost a scheduled task each, and its cancel scans the loop's whole task queue). The NIO timer is armed
/// at the earliest deadline; a cancelled earliest leaves it, and it finds nothing due when it fires and re-arms
/// for the next. Touched only on its event loop.
final class LoopTimers: NIOScheduledCallbackHandler {
    typealias Handle = DeadlineHeap<any LoopTimerTarget>.Handle

    private let eventLoop: any EventLoop
    private var deadlines = DeadlineHeap<any LoopTimerTarget>()
    private var scheduled: NIOScheduledCallback?
    /// When the NIO timer fires (`.max`: not armed).
    private var scheduledAt = UInt64.max

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Arms the timer `handle` names (or a new one, when it names none or a stale one) to call `target` at
    /// `deadline` (uptime nanoseconds).
    func arm(_ handle: inout Handle?, at deadline: UInt64, for target: any LoopTimerTarget) {
        if let armed = handle, deadlines.move(armed, to: deadline) {
            // Moved in place.
        } else {
            handle = deadlines.insert(target, at: deadline)
        }
        if deadline < scheduledAt { schedule(at: deadline) }
    }

    func cancel(_ handle: inout Handle?) {
        if let armed = handle { deadlines.remove(armed) }
        handle = nil
    }

    private func schedule(at deadline: UInt64) {
        scheduled?.cancel()
        scheduledAt = deadline
        scheduled = try? eventLoop.assumeIsolated().scheduleCallback(at: .uptimeNanoseconds(deadline), handler: self)
    }

    func handleScheduledCallback(eventLoop: some EventLoop) {
        scheduled = nil
        scheduledAt = .max
        let now = NIODeadline.now().uptimeNanoseconds
        // A target may arm or cancel timers as it runs: each is popped before it is called.
        while let target = deadlines.popDue(now: now) {
            target.loopTimerFired()
        }
        if let next = deadlines.earliest, next < scheduledAt { schedule(at: next) }
    }
}
