import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// Tells `ProxyRequestHandler` that the last pipelined request it queued is broken and will not be sent.
struct DropLastQueuedRequest {}

/// Tells `ProxyRequestHandler` that a request the parser rejected was answered (400 or 431), for its access log.
struct ProtocolErrorAnswered {
    let reason: LocalReplyReason
}

/// Answers HTTP/1.1 the parser rejected: 400 (431 for oversized headers) with a reason, then closes.
/// Sits between the decoder and `ProxyRequestHandler`, counting the requests read; the responses written are
/// counted by the handler's `HTTP1ResponseWriter`, so a broken pipelined request is answered only after the
/// responses owed before it.
final class HTTP1ProtocolErrorHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    /// `ProxyRequestHandler`'s writer, while that handler is in the pipeline.
    var responses: HTTP1ResponseWriter?
    /// Request heads read.
    private var requestsRead = 0
    /// A request head was read and its end not yet.
    private var requestOpen = false
    private var failed = false
    private let stats: ProxyStats

    init(stats: ProxyStats) {
        self.stats = stats
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        switch unwrapInboundIn(data) {
        case .head:
            requestsRead += 1
            requestOpen = true
        case .body: break
        case .end: requestOpen = false
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard let parserError = error as? HTTP1ParseError, let responses else {
            context.close(promise: nil)
            return
        }
        guard !failed else { return }
        failed = true
        let reason: LocalReplyReason = parserError == .headTooLarge ? .headersTooLarge : .badRequest
        let outstanding = requestsRead - responses.messagesEnded
        if outstanding > 1 || (!requestOpen && outstanding > 0) {
            // A later pipelined request is broken: answer the earlier ones first, then this one.
            var owed = requestsRead
            if requestOpen {
                // Its head and some body wait in the request handler's queue: they are never forwarded.
                owed -= 1
                context.fireUserInboundEventTriggered(DropLastQueuedRequest())
            }
            responses.whenMessagesEnded(owed) { [self] in writeReply(reason, context: context) }
            return
        }
        // The broken bytes belong to the request being read: the request handler lets go of it.
        context.fireErrorCaught(error)
        if responses.messageStarted {
            context.close(promise: nil)
        } else {
            writeReply(reason, context: context)
        }
    }

    private func writeReply(_ reason: LocalReplyReason, context: ChannelHandlerContext) {
        guard let responses else { return }
        stats.recordLocalReply(reason)
        context.fireUserInboundEventTriggered(ProtocolErrorAnswered(reason: reason))
        LocalReply.write(reason, version: .http1_1, isGRPC: false, isHEAD: false, closeConnection: true, to: .http1(responses), eventLoop: context.eventLoop)
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
