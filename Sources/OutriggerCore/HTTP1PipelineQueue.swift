import NIOCore
import NIOHTTP1

/// HTTP/1.1 pipelining on a client connection: the parts of requests that arrive while an earlier one is still
/// being answered wait here, in order, and are handed to the exchange one request at a time once it is free.
/// Reading goes on meanwhile (stopping it costs two `epoll_ctl` calls per request), up to `maxBytes` of queued
/// body or `maxParts` parts.
public struct HTTP1PipelineQueue {
    public static let maxBytes = 64 * 1024
    public static let maxParts = 64

    private var parts = CircularBuffer<HTTPServerRequestPart>()
    /// Body bytes queued.
    private var bytes = 0

    public init() {}

    public var isEmpty: Bool { parts.isEmpty }

    /// Below both limits: the connection may read more.
    public var hasRoom: Bool { bytes <= Self.maxBytes && parts.count <= Self.maxParts }

    /// Whether `part` waits: behind anything already waiting, or when it starts a request while the exchange is
    /// still busy with the one before.
    public func mustQueue(_ part: HTTPServerRequestPart, exchangeBusy: Bool) -> Bool {
        if !parts.isEmpty { return true }
        guard case .head = part else { return false }
        return exchangeBusy
    }

    public mutating func append(_ part: HTTPServerRequestPart) {
        if case .body(let body) = part { bytes += body.readableBytes }
        parts.append(part)
    }

    /// The next part to hand on: a body or end at once, a head only to an idle exchange; nil when nothing can go.
    public mutating func next(exchangeIdle: Bool) -> HTTPServerRequestPart? {
        guard let first = parts.first else { return nil }
        if case .head = first, !exchangeIdle { return nil }
        if case .body(let body) = first { bytes -= body.readableBytes }
        return parts.removeFirst()
    }

    /// The last request queued is broken and will not be sent: its head and whatever of its body came go.
    public mutating func dropLastRequest() {
        while let part = parts.popLast() {
            if case .body(let body) = part { bytes -= body.readableBytes }
            if case .head = part { break }
        }
    }

    public mutating func removeAll() {
        parts.removeAll()
        bytes = 0
    }
}
