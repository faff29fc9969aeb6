import NIOCore
import NIOHTTP1

/// The request half of a proxied exchange: what goes upstream, and when. The head waits for an upstream and, for an
/// HTTP/2 request without `content-length` bound for an HTTP/1.1 upstream, for the part that tells whether a body
/// follows (the upstream needs the framing). Parts read before a lease wait with it. Every part sent is kept for
/// replay while the route may retry and the body fits its replay buffer, and a retry sends the head and the kept
/// parts again. Pure: the shell sends what it is told, the head being its own (each try writes into it).
public struct RequestRelay {
    /// A head held for framing, let go: with `transfer-encoding: chunked` added when a body follows, sent at once
    /// when an upstream takes parts (`sendNow`), else when one is leased.
    public struct ReleasedHead: Equatable, Sendable {
        public var chunked: Bool
        public var sendNow: Bool
    }

    /// The head is held until the next part says whether a body follows.
    public private(set) var headHeldForFraming: Bool
    /// The head goes with the next lease.
    public private(set) var headPending: Bool
    /// Parts waiting for a lease.
    private var waiting: [HTTPClientRequestPart] = []
    /// Every part sent so far (nil: not kept — the route does not retry, or the body outgrew the buffer).
    private var replay: [HTTPClientRequestPart]?
    private var replayBodyBytes = 0
    private let replayLimit: Int

    /// - Parameters:
    ///   - holdsHeadForFraming: the head waits for the next part (HTTP/2 downstream, HTTP/1.1 upstream, no length).
    ///   - keepsReplay: the route may retry: parts are kept, up to `replayLimit` body bytes.
    public init(holdsHeadForFraming: Bool, keepsReplay: Bool, replayLimit: Int) {
        headHeldForFraming = holdsHeadForFraming
        headPending = !holdsHeadForFraming
        replay = keepsReplay ? [] : nil
        self.replayLimit = replayLimit
    }

    /// Every part sent so far is still at hand to be sent again.
    public var replayKept: Bool { replay != nil }

    /// A part of the request, from the client. `leased`: an upstream takes parts now, and the part goes at once;
    /// otherwise it waits for the lease. Returns the head when this part releases a held one (sent first).
    public mutating func forward(_ part: HTTPClientRequestPart, leased: Bool) -> ReleasedHead? {
        var released: ReleasedHead?
        if headHeldForFraming {
            var chunked = false
            if case .body = part { chunked = true }
            released = releaseHead(chunked: chunked, leased: leased)
        }
        if replay != nil {
            if case .body(.byteBuffer(let body)) = part { replayBodyBytes += body.readableBytes }
            if replayBodyBytes > replayLimit {
                replay = nil  // too big to send again: this request will not be retried
            } else {
                replay!.append(part)
            }
        }
        if !leased { waiting.append(part) }
        return released
    }

    /// A read burst ended: a head still held saw neither body nor end, so a body is coming. It goes chunked now, so a
    /// client that waits for the response before it sends more (gRPC streaming) is not stalled.
    public mutating func readBurstEnded(leased: Bool) -> ReleasedHead? {
        headHeldForFraming ? releaseHead(chunked: true, leased: leased) : nil
    }

    /// An upstream was leased: whether the head goes now, and the parts that waited for it, in order.
    public mutating func leased() -> (sendsHead: Bool, parts: [HTTPClientRequestPart]) {
        let sendsHead = headPending
        headPending = false
        var parts: [HTTPClientRequestPart] = []
        swap(&parts, &waiting)
        return (sendsHead, parts)
    }

    /// The next try starts: its lease gets the head again (unless still held for framing) and every part kept. A
    /// request that was not kept sent nothing yet (its connection never opened): what it read still waits.
    public mutating func nextTryStarts() {
        headPending = !headHeldForFraming
        if let replay { waiting = replay }
    }

    /// A request not kept for replay is to be sent again once (it provably went nowhere, and sent no body): kept
    /// from here on, its end included when it was read.
    public mutating func keepForResend(requestComplete: Bool) {
        if replay == nil { replay = requestComplete ? [.end(nil)] : [] }
    }

    private mutating func releaseHead(chunked: Bool, leased: Bool) -> ReleasedHead {
        headHeldForFraming = false
        if !leased { headPending = true }
        return ReleasedHead(chunked: chunked, sendNow: leased)
    }
}
