import NIOCore
import NIOHTTP1
import NIOHTTP2
import OutriggerCore

/// The parts an HTTP/2 stream received that its exchange does not take yet (a body while the other side cannot
/// take more), in order, and the flow-control credit they hold back: credit for a body goes back only once it
/// is handed on (`HTTP2InboundWindow`).
struct HTTP2HeldParts<Head: Equatable> {
    typealias Part = HTTPPart<Head, ByteBuffer>
    private var parts: [Part] = []
    private var window: HTTP2InboundWindow
    private var takenBytes = 0
    /// The peer ended the stream (END_STREAM received): its window is over, and NIO refuses a WINDOW_UPDATE for a
    /// half-closed (remote) stream as a stream error, which would cut an exchange whose body all arrived.
    private var peerEnded = false

    init(windowTarget: Int) {
        window = HTTP2InboundWindow(target: windowTarget)
    }

    var isEmpty: Bool { parts.isEmpty }

    /// A part the peer sent: returned to be handed on now, or held (nil) when it must wait — parts are already
    /// waiting, it is a body the exchange does not take now, or `behindHead` (the head is not handed on yet).
    /// An end is noted either way: the peer has ended the stream.
    /// The part is taken, not copied: a head goes on owned once, so the exchange changes its fields in place.
    mutating func arrived(_ part: consuming Part, exchangeTakesBody: Bool, behindHead: Bool = false) -> Part? {
        var mustWait = behindHead || !parts.isEmpty
        switch copy part {
        case .head: break
        case .body: mustWait = mustWait || !exchangeTakesBody
        case .end: peerEnded = true
        }
        guard mustWait else { return part }
        hold(part)
        return nil
    }

    private mutating func hold(_ part: consuming Part) {
        if case .body(let body) = copy part { window.held(body.readableBytes) }
        parts.append(part)
    }

    /// The next part to hand on (removed), unless it is a body and the exchange does not take one now.
    mutating func take(exchangeTakesBody: Bool) -> Part? {
        guard let part = parts.first else { return nil }
        if case .body(let body) = part {
            guard exchangeTakesBody else { return nil }
            takenBytes += body.readableBytes
        }
        parts.removeFirst()
        return part
    }

    /// The peer's END_STREAM came where no part goes through `arrived` (with the head, or with no exchange to take
    /// it): no credit goes back for this stream (the connection's still does).
    mutating func peerEndedStream() {
        peerEnded = true
    }

    /// The credit to give back for the bodies taken since last asked, if an update is due.
    mutating func creditToReturn() -> Int? {
        guard takenBytes > 0 else { return nil }
        defer { takenBytes = 0 }
        let increment = window.released(takenBytes)
        return peerEnded ? nil : increment
    }

    /// The codec reported the stream's window. - Returns: the credit to give back, if an update is due.
    mutating func windowReported(size: Int) -> Int? {
        let increment = window.reported(size: size)
        return peerEnded ? nil : increment
    }

    mutating func removeAll() {
        parts.removeAll()
    }
}
