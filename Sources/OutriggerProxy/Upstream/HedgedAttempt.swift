import NIOCore
import NIOHTTP1
import OutriggerCore

/// An earlier try left running when its per-try timeout started a hedge: it keeps its upstream (its hold on its
/// endpoint — load, breaker debt — is the exchange's `hedged`) and tells the handler how it ends. If its answer
/// wins, the request takes it back.
final class HedgedAttempt: UpstreamExchangeDelegate {
    let upstream: UpstreamExchangeHandler
    /// Strong, as `ProxiedRequest.owner` (which says why).
    var owner: ProxyRequestHandler?

    init(upstream: UpstreamExchangeHandler, owner: ProxyRequestHandler) {
        self.upstream = upstream
        self.owner = owner
    }

    /// A head is small and decides the race: always read it.
    var downstreamIsWritable: Bool { true }

    func upstreamResponseHead(_ head: consuming HTTPResponseHead, facts: ResponseHeadFacts) {
        guard let owner else { return upstream.abort() }
        owner.hedgeAnswered(self, head: head, facts: facts)
    }

    func upstreamFailed(_ failure: UpstreamFailure) {
        owner?.hedgeFailed(self, failure: failure)
    }

    // Body and end reach the request's handler itself once this try has won (the upstream is retargeted).
    func upstreamResponseBody(_ body: ByteBuffer) {}
    func upstreamResponseEnd(_ trailers: HTTPHeaders?) {}
    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}
}
