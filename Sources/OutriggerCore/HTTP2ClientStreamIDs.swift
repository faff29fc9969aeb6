/// The stream ids a client opens on one HTTP/2 connection: odd and rising, up to 2^31-1, never reused (RFC 9113
/// §5.1.1). A connection that runs out must go; so that the requests already given to it still get an id, it is
/// told when only `reserve` ids are left, once, and should take no new requests from then (they go to a new one).
public struct HTTP2ClientStreamIDs: Sendable {
    public static let last = UInt32(Int32.max)
    private var next: UInt32?
    public let reserve: UInt32
    private var toldRunningOut = false

    public init(first: UInt32 = 1, reserve: UInt32 = 1 << 16) {
        next = first
        self.reserve = reserve
    }

    /// The next id, and whether the connection is now running out (true once); nil when none is left.
    public mutating func take() -> (id: UInt32, runningOut: Bool)? {
        guard let id = next else { return nil }
        next = id <= Self.last - 2 ? id + 2 : nil
        let runningOut = !toldRunningOut && Self.last - id < 2 * reserve
        if runningOut { toldRunningOut = true }
        return (id, runningOut)
    }
}
