/// When to give an HTTP/2 peer send credit back (a WINDOW_UPDATE, RFC 9113 §6.9), for the connection or one
/// stream: the window is topped up to `target` once half of it is used. Bytes received but still held (not yet
/// handed on, because the request's upstream cannot take them) count as unused: credit for them goes back only
/// when they are released, so a client can never have more than a window's worth waiting in the proxy.
public struct HTTP2InboundWindow: Sendable {
    public let target: Int
    /// The window as the HTTP/2 state machine last reported it (what the peer may still send).
    private var reported: Int?
    /// Received and not yet handed on.
    public private(set) var heldBytes = 0

    public init(target: Int) {
        precondition(target > 0 && target <= Int(Int32.max))
        self.target = target
    }

    /// The state machine reports the window's size (after a DATA frame arrived, or an update went out).
    /// - Returns: the increment to send now, if any.
    public mutating func reported(size: Int) -> Int? {
        reported = size
        return increment()
    }

    /// Bytes received that are held back for now.
    public mutating func held(_ bytes: Int) {
        heldBytes += bytes
    }

    /// Held bytes were handed on. - Returns: the increment to send now, if any.
    public mutating func released(_ bytes: Int) -> Int? {
        heldBytes -= bytes
        precondition(heldBytes >= 0, "released more than was held")
        return increment()
    }

    private func increment() -> Int? {
        guard let reported else { return nil }
        let window = reported + heldBytes
        if window >= target { return nil }
        if window < 0 {
            // SETTINGS can shrink a window below zero: back to the target, within a frame's 31 bits.
            return min(target - window, Int(Int32.max))
        }
        let increment = target - window
        // Not for every frame: once at least half the window is used.
        return increment >= window ? increment : nil
    }
}
