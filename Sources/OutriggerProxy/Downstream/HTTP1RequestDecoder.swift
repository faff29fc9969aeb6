import NIOCore
import NIOHTTP1
import OutriggerCore

/// Reads an HTTP/1.1 connection's requests from its bytes with the pure `HTTP1RequestParser`, where NIO's llhttp
/// decoder sat: the parts go on to `HTTP1ProtocolErrorHandler` and `ProxyRequestHandler`, a parse error goes on as
/// an error (an `HTTP1ParseError`, answered 400 or 431 there), after which nothing more is read. When the connection
/// becomes a tunnel it leaves the pipeline last and hands on the bytes it holds.
final class HTTP1RequestDecoder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart

    private var parser = HTTP1RequestParser()
    /// Bytes received and not yet parsed: a head cut by the read, or what follows an upgrade request.
    private var unparsed = ByteBuffer.noBytes
    /// A parse error was reported, the connection closed, or the handler left: nothing more is parsed.
    private var done = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        unparsed.appendReceived(unwrapInboundIn(data))
        do {
            // A part handed on may close the connection or take this handler out of the pipeline.
            while !done, let part = try parser.next(&unparsed) {
                context.fireChannelRead(wrapInboundOut(part))
            }
        } catch {
            done = true
            context.fireErrorCaught(error)
        }
        unparsed.releaseIfParsed()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            // A request cut short by the close is an error, as it was from NIO's decoder (the answer goes nowhere,
            // but the request is logged as broken).
            do {
                if let part = try parser.connectionClosed(leaving: unparsed) { context.fireChannelRead(wrapInboundOut(part)) }
            } catch {
                context.fireErrorCaught(error)
            }
        }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        done = true
        // The bytes after an upgrade request are the tunnel's: on to the relay, which is in place by now. (Not when
        // the pipeline is torn down at the close: no tunnel takes them then.)
        guard unparsed.readableBytes > 0, context.channel.isActive else { return }
        context.fireChannelRead(NIOAny(unparsed.takeUnparsed()))
    }
}
