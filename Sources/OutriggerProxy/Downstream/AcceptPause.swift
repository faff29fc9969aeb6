#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP2
import OutriggerCore

/// On a listening socket: when accept fails for want of resources (EMFILE, ENFILE, ENOBUFS, ENOMEM), stops
/// accepting for `pause`, then accepts again. NIO's `AcceptBackoffHandler` cannot do it when no accept of the
/// read succeeded: the channel keeps its read pending and stays registered, so the event loop wakes and fails
/// to accept again at once, about 14,000 times a second. Turning `autoRead` off takes the socket out of the
/// poll set; turning it on again puts it back.
final class AcceptPause: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Channel
    typealias InboundOut = Channel

    private let pause: TimeAmount
    private var resume: Scheduled<Void>?

    init(pause: TimeAmount = .milliseconds(250)) {
        self.pause = pause
    }

    /// A listening socket's initializer (`ServerBootstrap.serverChannelInitializer`) that adds one.
    @Sendable static func install(_ channel: Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(AcceptPause()) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode), resume == nil,
           let options = context.channel.syncOptions, (try? options.setOption(.autoRead, value: false)) != nil {
            resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) { [weak self] in
                self?.resume = nil
                try? context.channel.syncOptions?.setOption(.autoRead, value: true)
            }
            return
        }
        context.fireErrorCaught(error)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
    }
}
