/// Whether one HTTP/2 stream takes more to send: it stops once more than `high` bytes written to it are not
/// out yet (peer flow control, or the socket, holds them), and takes more again below `low` — so a stream
/// whose peer gives no credit back pins at most about `high` bytes in the proxy.
public struct SendWatermark: Sendable {
    public let high: Int
    public let low: Int
    public private(set) var unsentBytes = 0
    public private(set) var isBelow = true

    /// One proxied HTTP/2 stream, either side: NIO's stream-channel defaults (8,196 / 4,092 bytes).
    public static var http2Stream: SendWatermark { SendWatermark(high: 8_196, low: 4_092) }

    public init(high: Int, low: Int) {
        precondition(low < high)
        self.high = high
        self.low = low
    }

    /// Bytes were written. - Returns: whether `isBelow` changed.
    public mutating func queued(_ bytes: Int) -> Bool {
        unsentBytes += bytes
        return update()
    }

    /// Bytes went out. - Returns: whether `isBelow` changed.
    public mutating func sent(_ bytes: Int) -> Bool {
        unsentBytes -= bytes
        precondition(unsentBytes >= 0, "sent more than was queued")
        return update()
    }

    private mutating func update() -> Bool {
        if isBelow, unsentBytes > high {
            isBelow = false
            return true
        }
        if !isBelow, unsentBytes < low {
            isBelow = true
            return true
        }
        return false
    }
}
