/// The `x-request-id` a request carries upstream, as `ProxyHeaders.prepareUpstreamRequest` left it.
public enum UpstreamRequestID: Equatable, Sendable {
    /// A field of the head: the one that came, one generated for a route whose header rules touch it, or what those
    /// rules left (empty when they removed it or set it empty).
    case inHead(String)
    /// Generated here, and sent after the head's fields (`AppendedOwnFields`): nothing on the way reads it.
    case appended(GeneratedRequestID)

    /// Its text (empty for none): for a span or an access log line.
    public var text: String {
        switch self {
        case .inHead(let text): text
        case .appended(let generated): generated.text
        }
    }
}
