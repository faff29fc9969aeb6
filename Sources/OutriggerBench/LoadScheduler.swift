/// Decides when each request of a load test is sent, with no sockets and an injected clock.
///
/// Open loop (`rate` requests/s): request *i* is *intended* at `start + i / rate`, whether or not a
/// connection is free then. A connection that frees up late sends the next request at once, and its
/// latency is counted from the intended time — so a stalled server shows up as latency instead of
/// silently lowering the offered load (coordinated omission, as wrk2 and Nighthawk correct it).
/// Closed loop (`rate == nil`): every free connection sends at once; latency counts from the send.
public struct LoadScheduler: Sendable {
    public let rate: Double?
    /// Nanoseconds on the injected clock.
    public let start: UInt64
    public let end: UInt64
    private var nextIndex = 0

    public init(rate: Double?, start: UInt64, duration: UInt64) {
        precondition(rate.map { $0 > 0 } ?? true, "rate must be positive")
        self.rate = rate
        self.start = start
        self.end = start + duration
    }

    public enum Action: Equatable, Sendable {
        /// Send now; count latency from `intended`.
        case send(intended: UInt64)
        /// Nothing to send before `at`: ask again then.
        case wait(until: UInt64)
        /// The test is over for this connection.
        case stop
    }

    /// A connection is free at `now`: what should it do?
    public mutating func connectionFree(now: UInt64) -> Action {
        guard let rate else {
            return now < end ? .send(intended: now) : .stop
        }
        let intended = start + UInt64((Double(nextIndex) * 1_000_000_000 / rate).rounded())
        guard intended < end else { return .stop }
        if intended > now { return .wait(until: intended) }
        nextIndex += 1
        return .send(intended: intended)
    }

    /// Requests handed out so far (open loop).
    public var scheduled: Int { nextIndex }
}

/// The free connections of a test and the one wake-up they share. A free connection waits in line; the line's
/// first sends when the next request is due, so each request costs one wake-up, not one per free connection
/// (each used to arm a timer of its own and, woken, all but one armed another: ~60 timers a request at 64
/// connections, most of a core at 5,000 req/s, taken from the target on a small machine).
public struct LoadDispatch<Worker> {
    public var scheduler: LoadScheduler
    private var free: [Worker] = []
    /// When the wake-up is armed for; nil when none is.
    public private(set) var wakeAt: UInt64?

    public init(scheduler: LoadScheduler) {
        self.scheduler = scheduler
    }

    public enum Action {
        case send(Worker, intended: UInt64)
        /// The test is over for this worker.
        case stop(Worker)
        /// Arm the wake-up for `at` (in place of any armed before), then call `woke`.
        case wake(at: UInt64)
    }

    /// Workers waiting for their next request.
    public var freeCount: Int { free.count }

    /// `worker` is ready for its next request. `usable`: whether a waiting worker can still send (its
    /// connection may have closed while it waited); those that cannot leave the line.
    public mutating func workerFree(_ worker: Worker, now: UInt64, usable: (Worker) -> Bool) -> [Action] {
        free.append(worker)
        return dispatch(now: now, usable: usable)
    }

    /// The wake-up fired.
    public mutating func woke(now: UInt64, usable: (Worker) -> Bool) -> [Action] {
        wakeAt = nil
        return dispatch(now: now, usable: usable)
    }

    private mutating func dispatch(now: UInt64, usable: (Worker) -> Bool) -> [Action] {
        var actions: [Action] = []
        while true {
            while let first = free.first, !usable(first) { free.removeFirst() }
            guard !free.isEmpty else { return actions }
            switch scheduler.connectionFree(now: now) {
            case .send(let intended):
                actions.append(.send(free.removeFirst(), intended: intended))
            case .stop:
                actions.append(.stop(free.removeFirst()))
            case .wait(let until):
                if wakeAt != until {
                    wakeAt = until
                    actions.append(.wake(at: until))
                }
                return actions
            }
        }
    }
}
