import NIOCore
import NIOSSL
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// Who keeps an `UpstreamExchangeHandler` (held weakly; a protocol rather than closures, so an HTTP/2 stream costs no
/// closure context).
protocol UpstreamExchangeOwner: AnyObject {
    /// Once per exchange, when both directions are done: `reusable` says whether the connection can carry another
    /// exchange, `completedOnTheWire` whether the request was all sent and the response all received (an HTTP/2
    /// stream in that state is closed by the protocol) rather than cut short.
    func exchangeFinished(_ handler: UpstreamExchangeHandler, reusable: Bool, completedOnTheWire: Bool)
    /// Once, when the connection (HTTP/1.1) or the stream (HTTP/2) closes.
    func exchangeClosed(_ handler: UpstreamExchangeHandler)
    /// The connection left its pool to carry a tunnel (HTTP/1.1 only); its close is not reported.
    func exchangeDetached(_ handler: UpstreamExchangeHandler)
}

/// The downstream side of an exchange, as the upstream connection sees it. Both sides live on the same
/// event loop (pools are per event loop), so calls are direct: no hops, no locks.
protocol UpstreamExchangeDelegate: AnyObject {
    /// `facts`: what the head's parse knows of its fields (`unknown` but from the HTTP/1.1 parser).
    func upstreamResponseHead(_ head: consuming HTTPResponseHead, facts: ResponseHeadFacts)
    func upstreamResponseBody(_ body: ByteBuffer)
    func upstreamResponseEnd(_ trailers: HTTPHeaders?)
    /// The upstream read burst ended: flush what was written downstream.
    func upstreamReadComplete()
    func upstreamFailed(_ failure: UpstreamFailure)
    /// The upstream can take more request body (or not).
    func upstreamWritabilityChanged(isWritable: Bool)
    /// Whether the downstream can take more response body; reads from upstream pause while it cannot.
    var downstreamIsWritable: Bool { get }
}

/// Carries one exchange at a time between the wire and its delegate: the HTTP/1.1 codec of an upstream connection
/// (the only handler after TLS: requests written as bytes by its `HTTP1RequestWriter`, responses read by its
/// `HTTP1ResponseParser`), or driven by an HTTP/2 stream (`HTTP2UpstreamConnection`).
final class UpstreamExchangeHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State {
        case idle
        case active(requestComplete: Bool, responseComplete: Bool, reusable: Bool)
        /// Handed over to a tunnel after `101 Switching Protocols`; no longer HTTP.
        case tunnelled
        case closed
    }

    private(set) var state: State = .idle
    private var delegate: (any UpstreamExchangeDelegate)?
    private var side: UpstreamSide = .detached
    private var readPending = false
    private var needsFlush = false
    /// HTTP/1.1: the responses' parser, and the bytes received and not yet parsed (a head or chunk size line
    /// cut by the read; after a `101`, what the tunnel carries on with).
    private var parser = HTTP1ResponseParser()
    private var unparsed = ByteBuffer.noBytes
    /// Its HTTP/1.1 pool, or the HTTP/2 connection its stream is on: hears when an exchange finishes, when the
    /// connection or stream closes (once), and when it leaves to carry a tunnel.
    weak var owner: (any UpstreamExchangeOwner)?
    let id: Int
    /// When the connection last went back to its pool idle.
    var idleSince = NIODeadline.uptimeNanoseconds(0)
    /// Exchanges this connection has carried, the current one included: more than one means it was reused
    /// from the pool (and may have been closed by the upstream while it sat idle).
    private(set) var exchanges = 0

    init(id: Int) {
        self.id = id
    }

    /// An HTTP/1.1 connection's channel (nil for an HTTP/2 stream).
    var channel: Channel? {
        if case .http1(let output) = side { return output.context.channel }
        return nil
    }
    var isWritable: Bool { side.isWritable }
    var isIdle: Bool { if case .idle = state { return true } else { return false } }

    func handlerAdded(context: ChannelHandlerContext) {
        side = .http1(HTTP1RequestWriter(context: context))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        side = .detached
    }

    /// An HTTP/2 stream carries this exchange.
    func attach(_ stream: HTTP2UpstreamStream) {
        side = .http2(stream)
    }

    /// Closes what carries the exchange: the HTTP/1.1 connection, or the HTTP/2 stream (reset unless it ended).
    func closeTransport() {
        side.close()
    }

    // MARK: Driven by the downstream side

    func begin(_ delegate: any UpstreamExchangeDelegate) {
        precondition(isIdle, "an upstream connection carries one exchange at a time")
        self.delegate = delegate
        exchanges += 1
        state = .active(requestComplete: false, responseComplete: false, reusable: true)
        if readPending, delegate.downstreamIsWritable {
            readPending = false
            side.read()
        }
    }

    /// Hands the exchange in progress to another delegate: a hedged attempt left running answers to its own
    /// watcher, and to its request again if it wins the race.
    func retarget(to delegate: any UpstreamExchangeDelegate) {
        guard case .active = state else { return }
        self.delegate = delegate
    }

    /// The request's head, and the proxy's own fields to send after its fields (`AppendedOwnFields`).
    /// - Parameter mayHaveConnectionField: false when the head is known to have no `connection` field (the proxy
    ///   removed the client's, and nothing put one back): it is not looked for.
    func sendHead(_ head: HTTPRequestHead, appending own: AppendedOwnFields = AppendedOwnFields(), mayHaveConnectionField: Bool = true) {
        guard side.isAttached, case .active(let requestComplete, let responseComplete, var reusable) = state else { return }
        // NIO's `isKeepAlive` reads the `connection` options into an array; without the field, which the proxy
        // removes as hop-by-hop, the version says (one scan, ~300 instructions less; none when it cannot be there).
        let hasConnectionField = mayHaveConnectionField && head.headers.contains(name: "connection")
        if hasConnectionField ? !head.isKeepAlive : !(head.version.major == 1 && head.version.minor >= 1) {
            reusable = false
        }
        parser.expectResponse(to: head.method)
        state = .active(requestComplete: requestComplete, responseComplete: responseComplete, reusable: reusable)
        side.writeHead(head, appending: own)
        needsFlush = true
    }

    /// A request part; a head goes as `sendHead` sends it.
    func send(_ part: HTTPClientRequestPart) {
        if case .head(let head) = part {
            sendHead(head)
            return
        }
        guard side.isAttached, case .active(let requestComplete, let responseComplete, let reusable) = state else { return }
        var complete = requestComplete
        if case .end = part { complete = true }
        state = .active(requestComplete: complete, responseComplete: responseComplete, reusable: reusable)
        side.write(part)
        needsFlush = true
        if complete && responseComplete { finishExchange(completedOnTheWire: true) }
    }

    func flush() {
        guard needsFlush else { return }
        needsFlush = false
        side.flush()
    }

    /// The downstream can take more: resume reading the response.
    func downstreamBecameWritable() {
        guard readPending else { return }
        readPending = false
        side.read()
    }

    /// A lease that arrived for a request that had already ended: the connection was never used, so
    /// it goes back to its pool as it came (an HTTP/2 stream just closes).
    func releaseUnused() {
        guard isIdle else {
            abort()
            return
        }
        state = .active(requestComplete: true, responseComplete: true, reusable: true)
        finishExchange()
    }

    /// The downstream gave up (client left, timeout): the connection is in an unknown state, close it.
    func abort() {
        delegate = nil
        if case .active = state {
            state = .active(requestComplete: true, responseComplete: true, reusable: false)
            finishExchange()
        }
        side.close()
    }

    /// Takes the connection out of HTTP after a `101`: the pool forgets it, and `relay` carries its bytes from
    /// now on. Returns the bytes already received after the `101` response, which the caller sends on to its client.
    func switchToTunnel(_ relay: TunnelRelay) throws -> ByteBuffer {
        guard case .http1(let output) = side else { throw UpstreamFailure.reset }
        let context = output.context
        state = .tunnelled
        delegate = nil
        let owner = owner
        self.owner = nil  // closing later is not the pool's concern
        owner?.exchangeDetached(self)
        let received = unparsed.takeUnparsed()
        let pipeline = context.pipeline.syncOperations
        try pipeline.addHandler(relay)
        pipeline.removeHandler(context: context, promise: nil)
        return received
    }

    private func finishExchange(completedOnTheWire: Bool = false) {
        guard case .active(_, _, let reusable) = state else { return }
        state = .idle
        delegate = nil
        owner?.exchangeFinished(self, reusable: reusable, completedOnTheWire: completedOnTheWire)
    }

    // MARK: Channel events

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        unparsed.appendReceived(unwrapInboundIn(data))
        do {
            while let part = try parser.next(&unparsed) {
                // Handed on, not copied: the head's headers stay uniquely owned, so the exchange changes them in place.
                received(consume part)
                // The exchange's end may have turned the connection into a tunnel, or closed it.
                switch state {
                case .tunnelled, .closed: return
                case .idle, .active: continue
                }
            }
        } catch {
            failed(error)
        }
        // Nothing kept of a receive buffer read whole, so the channel can read into it again.
        unparsed.releaseIfParsed()
    }

    func received(_ part: consuming HTTPClientResponsePart) {
        guard let delegate, case .active(let requestComplete, _, var reusable) = state else {
            // A response nobody asked for: the connection is out of step; drop it.
            side.close()
            return
        }
        switch consume part {
        case .head(let head):
            // HTTP/1.1: the parser's verdict, read while it parsed the head (llhttp's rules, as NIO's decoder gave it);
            // a body delimited by the close ends the connection too.
            let keepsConnection = side.isHTTP1 ? parser.keepsConnection && !parser.bodyEndsAtClose : head.isKeepAlive
            if !keepsConnection { reusable = false }
            state = .active(requestComplete: requestComplete, responseComplete: false, reusable: reusable)
            delegate.upstreamResponseHead(head, facts: side.isHTTP1 ? parser.headFacts : .unknown)
        case .body(let body):
            delegate.upstreamResponseBody(body)
        case .end(let trailers):
            // A response that ends before its request was fully sent leaves the connection unusable: the
            // exchange ends now (the pool closes it) rather than waiting for a body nobody will send.
            state = .active(requestComplete: true, responseComplete: true, reusable: reusable && requestComplete)
            delegate.upstreamResponseEnd(trailers)
            finishExchange(completedOnTheWire: requestComplete)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readComplete()
        context.fireChannelReadComplete()
    }

    func readComplete() {
        delegate?.upstreamReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        // An idle pooled connection keeps reading, so a close from the upstream is seen at once.
        if mayRead {
            context.read()
        } else {
            readPending = true
        }
    }

    /// Whether the response may come on: not while the downstream cannot take more.
    var mayRead: Bool {
        guard let delegate else { return true }
        return delegate.downstreamIsWritable
    }

    /// HTTP/2: the stream holds response parts until the downstream can take them.
    func holdingReads() {
        readPending = true
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func writabilityChanged() {
        delegate?.upstreamWritabilityChanged(isWritable: side.isWritable)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive()
        context.fireChannelInactive()
    }

    /// The connection (HTTP/1.1) or the stream (HTTP/2) closed.
    func inactive() {
        // A body delimited by the connection's close ends here; a response cut short is a protocol error.
        do {
            if let part = try parser.connectionClosed(leaving: unparsed) { received(part) }
        } catch {
            failed(error)
        }
        // After an error, `errorCaught` has already failed the exchange with it.
        fail(.closed)
        state = .closed
        let owner = owner
        self.owner = nil  // told once
        owner?.exchangeClosed(self)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failed(error)
    }

    /// The connection failed with `error` (HTTP/1.1), or the stream was reset (HTTP/2: `NIOHTTP2Errors.StreamClosed`),
    /// by the upstream or, for a malformed response, by this side (`NIOHTTP2Errors.StreamError`).
    func failed(_ error: Error) {
        if let closed = error as? NIOHTTP2Errors.StreamClosed,
           closed.errorCode == .refusedStream {
            // REFUSED_STREAM, or past the GOAWAY's last stream id: the upstream did not process it (RFC 9113 §8.7, §6.8).
            fail(.refusedStream)
        } else {
            // A TLS peer that closes without close_notify closed all the same (as plaintext FIN): `.closed`.
            let closedUncleanly = (error as? NIOSSLError) == .uncleanShutdown
            let malformed = error is HTTP1ParseError || error is NIOHTTP2Errors.StreamError
            fail(malformed ? .protocolError : closedUncleanly ? .closed : .reset)
        }
        side.close()
    }

    private func fail(_ failure: UpstreamFailure) {
        guard case .active(_, let responseComplete, _) = state else { return }
        let delegate = self.delegate
        self.delegate = nil
        state = .active(requestComplete: true, responseComplete: true, reusable: false)
        finishExchange()
        if !responseComplete { delegate?.upstreamFailed(failure) }
    }
}
