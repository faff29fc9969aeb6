import OutriggerConfig

/// A proxied request's timers — the route timeout, the upload's and the response's progress (stream idle), the
/// current try's per-try timeout and a retry's backoff — as one pure state machine on a clock reading, behind
/// one timer per request.
///
/// - The route timeout counts from the request's end (Envoy's rule: an upload is not part of it). Until the end
///   arrives, the timer is set at the request's start plus the timeout; if it fires while the body still flows
///   upstream, it watches the upload instead: no byte for a stream-idle period is `uploadStalled`.
/// - Once the response started, the same deadline looks at the body's progress every stream-idle period (the
///   first look at whichever is sooner: a period from the head, or the route deadline): no part since the last
///   look is `responseStalled`, unless the client is the side that stalls.
/// - A try's per-try timeout, like the route's, counts from the request's end; a retry's backoff replaces it.
///
/// Every event returns what to do with the one timer. The machine remembers when it is armed: a deadline later
/// than that is left for the timer to find when it fires (it fires rarely: a response usually ends first), an
/// earlier one re-arms it. Times are uptime nanoseconds.
public struct ExchangeTimer: Sendable {
    public enum Action: Equatable, Sendable {
        case none
        /// Cancel the timer if one is armed, and arm it at this time.
        case arm(at: UInt64)
        case cancel
    }

    /// What the timer found when it fired.
    public enum Expiry: Equatable, Sendable {
        /// No answer within the route timeout (or no upstream took the body by then).
        case routeTimeout
        /// The current try is past its per-try timeout.
        case perTryTimeout
        /// A retry's backoff is over: the next try starts.
        case backoffOver
        /// The body being sent upstream made no progress for a stream-idle period (the client's stall or the
        /// upstream's: `ProxyExchange.timerFired` tells them apart by whether the upstream stopped reading).
        case uploadStalled
        /// The response's body made no progress for a stream-idle period.
        case responseStalled

        /// The try's `error.type` in its span when this ends it.
        public var traceName: String {
            switch self {
            case .routeTimeout: "upstream_timeout"
            case .perTryTimeout: "per_try_timeout"
            case .backoffOver: "backoff_over"
            case .uploadStalled: "upload_stalled"
            case .responseStalled: "stream_idle_timeout"
            }
        }
    }

    public enum Fired: Equatable, Sendable {
        /// Something ran out. Nothing is armed now: after acting on it, the shell applies `settle()` if the
        /// request goes on.
        case expired(Expiry)
        /// Nothing ran out; the action arms the timer for what comes next.
        case nothingDue(Action)
    }

    /// The exchange's progress when the timer fires (`ProxyExchange.timerFired` fills it in).
    public struct Progress: Sendable {
        public var requestBodyBytes: Int
        public var responseParts: Int
        /// An upstream is taking the request's body (leased, not waiting for a connection).
        public var upstreamTakesBody: Bool
        public var downstreamWritable: Bool

        public init(requestBodyBytes: Int, responseParts: Int, upstreamTakesBody: Bool, downstreamWritable: Bool) {
            self.requestBodyBytes = requestBodyBytes
            self.responseParts = responseParts
            self.upstreamTakesBody = upstreamTakesBody
            self.downstreamWritable = downstreamWritable
        }
    }

    private enum Phase: Equatable {
        case sending, awaitingResponse, responding, over
    }

    private var phase = Phase.sending
    private let start: UInt64
    private let routeTimeout: UInt64
    private let streamIdle: UInt64
    private let perTryTimeout: UInt64?
    /// The route deadline, or the next look at the upload's or the response's progress.
    private var lookAt: UInt64?
    private var requestEndedAt: UInt64?
    private var perTryDeadline: UInt64?
    private var backoffUntil: UInt64?
    /// Progress at the last look (-1: not looked yet).
    private var uploadBytesSeen = -1
    private var responsePartsSeen = -1
    private var armedAt: UInt64?

    public init(start: UInt64, routeTimeout: Duration, streamIdleTimeout: Duration, perTryTimeout: Duration?) {
        self.start = start
        self.routeTimeout = Self.nanoseconds(routeTimeout)
        streamIdle = Self.nanoseconds(streamIdleTimeout)
        self.perTryTimeout = perTryTimeout.map(Self.nanoseconds)
        lookAt = start &+ self.routeTimeout
    }

    /// When the route timeout runs out; nil until the request has ended (or once the response started first).
    public var routeDeadline: UInt64? {
        guard phase == .awaitingResponse, let ended = requestEndedAt else { return nil }
        return ended &+ routeTimeout
    }

    /// How long the current try may take, from `now`: what is left of the route timeout (all of it until the
    /// request has ended), within the per-try timeout.
    public func timeLeftForTry(now: UInt64) -> UInt64 {
        var left = routeTimeout
        if let deadline = routeDeadline { left = deadline > now ? deadline - now : 0 }
        if let perTryTimeout { left = min(left, perTryTimeout) }
        return left
    }

    /// A backoff is running: no try is in progress.
    public var isBackingOff: Bool { backoffUntil != nil }

    /// The request's last part arrived.
    public mutating func requestEnded(now: UInt64) -> Action {
        guard phase == .sending else { return .none }
        phase = .awaitingResponse
        requestEndedAt = now
        lookAt = now &+ routeTimeout
        // The try under way is timed from here (a retry waiting out its backoff times its own).
        if backoffUntil == nil, let perTryTimeout { perTryDeadline = now &+ perTryTimeout }
        return settle()
    }

    /// A try starts (a lease is asked for): its per-try timeout runs from now once the request has ended.
    public mutating func tryStarted(now: UInt64) -> Action {
        backoffUntil = nil
        guard phase == .awaitingResponse, let perTryTimeout else { return .none }
        perTryDeadline = now &+ perTryTimeout
        return settle()
    }

    /// The current try is let go (failed, retried, the request ended): its per-try timeout and any backoff stop.
    /// The timer may still fire for them; it then finds nothing due.
    public mutating func tryEnded() {
        perTryDeadline = nil
        backoffUntil = nil
    }

    /// A retry waits `delay` nanoseconds before its try starts.
    public mutating func backoffStarted(now: UInt64, delay: UInt64) -> Action {
        perTryDeadline = nil
        backoffUntil = now &+ delay
        return settle()
    }

    /// The response's head went to the client: from here the timer watches the body (a tunnel's bytes are the
    /// application's: no timer).
    public mutating func responseStarted(now: UInt64, tunnel: Bool) -> Action {
        guard phase != .responding, phase != .over else { return .none }
        perTryDeadline = nil
        backoffUntil = nil
        if tunnel { return finished() }
        let deadline = routeDeadline ?? start &+ routeTimeout
        phase = .responding
        lookAt = min(now &+ streamIdle, deadline)
        return settle()
    }

    /// The request is over: nothing more to time.
    public mutating func finished() -> Action {
        phase = .over
        lookAt = nil
        perTryDeadline = nil
        backoffUntil = nil
        guard armedAt != nil else { return .none }
        armedAt = nil
        return .cancel
    }

    /// The timer fired at `now`: what ran out, the earliest first (the route timeout first on a tie), or when to
    /// look again.
    public mutating func fired(now: UInt64, progress: Progress) -> Fired {
        armedAt = nil
        let look = lookAt.flatMap { $0 <= now ? $0 : nil }
        let perTry = perTryDeadline.flatMap { $0 <= now ? $0 : nil }
        let backoff = backoffUntil.flatMap { $0 <= now ? $0 : nil }
        if let look, look <= perTry ?? .max, look <= backoff ?? .max, let expiry = lookedAt(now: now, progress: progress) {
            lookAt = nil
            return .expired(expiry)
        }
        if let perTry, perTry <= backoff ?? .max {
            perTryDeadline = nil
            return .expired(.perTryTimeout)
        }
        if backoff != nil {
            backoffUntil = nil
            return .expired(.backoffOver)
        }
        return .nothingDue(settle())
    }

    /// Arms the timer for the earliest deadline left, unless it is armed sooner already.
    public mutating func settle() -> Action {
        // Three optionals compared by hand: an array of them would be an allocation per event.
        let next = min(lookAt ?? .max, perTryDeadline ?? .max, backoffUntil ?? .max)
        guard next != .max else { return .none }
        if let armedAt, armedAt <= next { return .none }
        armedAt = next
        return .arm(at: next)
    }

    /// The route deadline or a progress look came: what ran out, or nil with the next look set.
    private mutating func lookedAt(now: UInt64, progress: Progress) -> Expiry? {
        switch phase {
        case .sending:
            // Armed from the request's start: the route timeout proper counts from its end. Meanwhile an upload
            // that makes progress goes on; one that waits for a connection has waited too long.
            guard progress.upstreamTakesBody else { return .routeTimeout }
            guard progress.requestBodyBytes == uploadBytesSeen else {
                uploadBytesSeen = progress.requestBodyBytes
                lookAt = now &+ streamIdle
                return nil
            }
            return .uploadStalled
        case .awaitingResponse:
            return .routeTimeout
        case .responding:
            // A client that takes nothing stalls the upstream: its send timeout decides, not this.
            if progress.downstreamWritable {
                guard progress.responseParts != responsePartsSeen else { return .responseStalled }
                responsePartsSeen = progress.responseParts
            }
            lookAt = now &+ streamIdle
            return nil
        case .over:
            return nil
        }
    }

    private static func nanoseconds(_ duration: Duration) -> UInt64 {
        UInt64(max(duration.nanoseconds, 0))
    }
}
