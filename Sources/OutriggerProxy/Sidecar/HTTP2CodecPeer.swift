import NIOCore
import NIOHTTP2
import OutriggerCore

/// What `HTTP2Codec` tells the connection handler after it (`HTTP2DownstreamConnection`, `HTTP2UpstreamConnection`),
/// in direct calls on the event loop: no frame boxed for the pipeline, no event cast back from `Any`.
protocol HTTP2CodecPeer: AnyObject {
    /// A header block, checked: a request's head (a new stream, server side), a response's head (client side), or
    /// trailers (a second block on a stream).
    func received(_ block: HTTP2ReceivedFields, on stream: HTTP2StreamID, endStream: Bool)
    func received(_ body: ByteBuffer, on stream: HTTP2StreamID, endStream: Bool)
    /// The receive window of a stream, or of the connection (`.rootStream`), after DATA came or credit went back.
    func inboundWindow(of stream: HTTP2StreamID, is size: Int)
    /// Both sides ended (`reason` nil), or a reset either way (a stream past the peer's GOAWAY: REFUSED_STREAM).
    func streamClosed(_ stream: HTTP2StreamID, reason: HTTP2ErrorCode?)
    /// The codec reset a stream for the peer's protocol error.
    func streamError(_ error: NIOHTTP2Errors.StreamError)
    /// The peer's GOAWAY: it takes no new streams (told before the streams past its last one close).
    func goAwayReceived()
    func maxConcurrentStreamsChanged(to limit: Int)
    /// The codec answered a connection error with GOAWAY: no new streams here; the connection closes next.
    func wentAway()
}
