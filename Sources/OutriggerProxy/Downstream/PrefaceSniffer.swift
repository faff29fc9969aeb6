import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// Tells HTTP/2 prior knowledge (RFC 9113 §3.3: the client starts with the connection preface) from
/// HTTP/1.1 on a plaintext listener by the first bytes, then hands over to the chosen pipeline.
public final class PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private var buffered: ByteBuffer?
    private let configure: (Channel, _ isHTTP2: Bool) throws -> Void

    /// - Parameter configure: adds the HTTP/2 or HTTP/1.1 handlers after the sniffer, which then removes itself.
    public init(configure: @escaping (Channel, _ isHTTP2: Bool) throws -> Void) {
        self.configure = configure
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var buffered = self.buffered {
            buffered.writeBuffer(&incoming)
            self.buffered = buffered
        } else {
            self.buffered = incoming
        }
        let bytes = self.buffered!.readableBytesView
        let compared = min(bytes.count, Self.preface.count)
        let matches = bytes.prefix(compared).elementsEqual(Self.preface.prefix(compared))
        guard !matches || compared == Self.preface.count else { return }  // need more bytes to decide
        do {
            try configure(context.channel, matches)
        } catch {
            context.close(promise: nil)
            return
        }
        let data = self.buffered!
        self.buffered = nil
        context.fireChannelRead(wrapInboundOut(data))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
