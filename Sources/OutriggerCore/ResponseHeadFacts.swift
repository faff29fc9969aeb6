/// What the proxy looks for in a response head on its way downstream, as far as the head's parse knows it: a field the
/// facts say is absent is not looked for. The HTTP/1.1 response parser gathers them while it reads the fields (where
/// each name is already told apart by its length); a head from anywhere else is `unknown`, and everything is looked
/// for. Each lookup skipped was a scan of the whole head — together about 900 instructions a response by callgrind.
public struct ResponseHeadFacts: Equatable, Sendable {
    /// A hop-by-hop field (`ProxyHeaders.hopByHopNames`, `te` among them): without one there is nothing to remove.
    public let mayHaveHopByHopFields: Bool
    /// A field named `x-outrigger-…`, in any case: the endpoint's drain signal, or an upstream service time of its own.
    public let mayHaveOwnFields: Bool
    /// Whether a `content-length` came; nil when not known.
    public let hasContentLength: Bool?

    /// Whether the head still has a `content-length` after `ProxyHeaders.prepareDownstreamResponse`, when known: not
    /// when `connection` may have named it (then it is gone with the hop-by-hop fields), nor when the route's response
    /// header rules may have set or removed one.
    public func contentLengthAfterPreparing(by route: Route) -> Bool? {
        mayHaveHopByHopFields || !route.responseHeaders.isEmpty ? nil : hasContentLength
    }

    /// Nothing known: every field may be there.
    public static let unknown = ResponseHeadFacts(mayHaveHopByHopFields: true, mayHaveOwnFields: true, hasContentLength: nil)
}
