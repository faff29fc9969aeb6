/// How far a proxied exchange got, each way, and its one end: the request's end received, a response head gone
/// downstream, and the exchange over for its cluster (relayed whole or cut, answered here, or the client gone).
public struct ExchangeProgress: Sendable {
    /// What the client's connection does once the response is done.
    public enum AfterResponse: Equatable, Sendable {
        /// The request was read whole: the connection is free for the next one.
        case nextRequest
        /// The upstream answered before the request's end: the rest of its body is read and dropped first.
        case discardRestOfRequest
    }

    /// The request's end was received.
    public private(set) var requestComplete = false
    /// A response head went downstream: from here no local reply and no other try.
    public private(set) var responseStarted = false
    /// The exchange is over for its cluster: it left the gauges (once).
    public private(set) var ended = false

    public init() {}

    public mutating func requestEnded() {
        requestComplete = true
    }

    public mutating func responseCommitted() {
        responseStarted = true
    }

    /// The exchange ends: true the first time only, when the gauges and the endpoint's load are to be let go.
    public mutating func end() -> Bool {
        guard !ended else { return false }
        ended = true
        return true
    }

    public var afterResponse: AfterResponse {
        requestComplete ? .nextRequest : .discardRestOfRequest
    }
}
