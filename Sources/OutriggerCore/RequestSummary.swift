/// How a request ended, made once at its one end, where everything that records requests reads it: the listener's
/// duration histogram, the local-reply counters, the access log line (and a trace span).
public struct RequestSummary: Sendable, Equatable {
    public enum Ending: Sendable, Equatable {
        /// The upstream's response went downstream — whole, or cut (why is among the request's decisions).
        case relayed
        /// The proxy answered itself, for this reason.
        case localReply(LocalReplyReason)
        /// The HTTP/1.1 parser broke the request off and its error handler answered (400/431; it counts those).
        case answeredByCodec(LocalReplyReason)
        /// The client left, or its connection failed, before the response ended.
        case clientGone(reason: String)
    }

    public var ending: Ending
    /// The status sent downstream (or that was being sent when the client left; 0 when none).
    public var status: Int
    /// Uptime nanoseconds; nil for a request never parsed whole.
    public var startedAt: UInt64?
    public var endedAt: UInt64

    public init(_ ending: Ending, status: Int, startedAt: UInt64?, endedAt: UInt64) {
        self.ending = ending
        self.status = status
        self.startedAt = startedAt
        self.endedAt = endedAt
    }

    public var durationMicroseconds: Int64 {
        guard let startedAt, endedAt > startedAt else { return 0 }
        return Int64((endedAt - startedAt) / 1000)
    }

    /// Whether the request's duration is one of a response's (relayed or local), for the listener's histogram.
    public var timesAResponse: Bool {
        switch ending {
        case .relayed, .localReply: true
        case .answeredByCodec, .clientGone: false
        }
    }

    /// The local reply this end counts by reason (the parser's error handler counts its own).
    public var localReplyToCount: LocalReplyReason? {
        if case .localReply(let reason) = ending { return reason }
        return nil
    }

    /// What the access log adds after the request's decisions: why the proxy answered, or why the exchange ended.
    public var finalReason: String? {
        switch ending {
        case .relayed: nil
        case .localReply(let reason), .answeredByCodec(let reason): reason.rawValue
        case .clientGone(let reason): reason
        }
    }
}
