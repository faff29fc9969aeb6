import NIOCore
import NIOHTTP1

/// HTTP/1-shaped heads and trailers encoded straight into a header block, without an `HPACKHeaders` in between (the
/// conversions each built one, four per proxied HTTP/2 request, ~6 % of the gRPC path's CPU in the profile). What
/// goes is what RFC 9113 §8.2.2 and §8.3 ask: pseudo-fields first, names lower-cased, and the fields that only mean
/// something to one HTTP/1.1 connection left out.
extension HPACKBlockEncoder {
    /// A request: `:method`, `:scheme`, `:authority` (from `host`, which is not sent itself) and `:path`, then the
    /// fields, then the proxy's own fields given beside them; of the connection-specific ones only `te: trailers` goes
    /// (gRPC needs it).
    public mutating func encode(request head: HTTPRequestHead, scheme: String, appending own: AppendedOwnFields = AppendedOwnFields(),
                                into buffer: inout ByteBuffer) {
        encode(name: ":method", value: head.method.rawValue, into: &buffer)
        encode(name: ":scheme", value: scheme, into: &buffer)
        if let host = head.headers.first(name: "host") { encode(name: ":authority", value: host, into: &buffer) }
        encode(name: ":path", value: head.uri, into: &buffer)
        for (name, value) in head.headers {
            name.withUTF8Bytes { name in
                if HTTP1Syntax.equalsIgnoringCase(name, "host") { return }
                if ProxyHeaders.isConnectionSpecific(name) {
                    if HTTP1Syntax.equalsIgnoringCase(name, "te"), HTTP1Syntax.equalsIgnoringCase(value, "trailers") {
                        encode(name: "te", value: "trailers", into: &buffer)
                    }
                    return
                }
                value.withUTF8Bytes { value in encode(name: name, value: value, lowercasingName: true, into: &buffer) }
            }
        }
        encode(appended: own, into: &buffer)
    }

    /// A response: `:status`, then the fields, then the proxy's own fields given beside them.
    public mutating func encode(response head: HTTPResponseHead, appending own: AppendedResponseFields = AppendedResponseFields(),
                                into buffer: inout ByteBuffer) {
        // The statuses the static table holds go as their index without a lookup by hash; the lookup and the status's
        // text cost ~800 instructions a response.
        if let staticIndex = staticIndex(ofStatus: head.status.code) {
            ByteWriter.write(into: &buffer, room: 1) { $0.integer(staticIndex, prefix: 7, bits: 0x80) }
        } else {
            encode(name: ":status", value: String(head.status.code), into: &buffer)
        }
        encode(fields: head.headers, into: &buffer)
        encode(appended: own, into: &buffer)
    }

    /// The proxy's own fields after a head's (`AppendedFieldSet`), their names lower-case already.
    private mutating func encode(appended own: some AppendedFieldSet, into buffer: inout ByteBuffer) {
        own.forEachField { name, value in encode(name: name, value: value, lowercasingName: false, into: &buffer) }
    }

    /// Trailers, or a response's fields: connection-specific ones left out.
    public mutating func encode(fields: HTTPHeaders, into buffer: inout ByteBuffer) {
        for (name, value) in fields {
            name.withUTF8Bytes { name in
                guard !ProxyHeaders.isConnectionSpecific(name) else { return }
                value.withUTF8Bytes { value in encode(name: name, value: value, lowercasingName: true, into: &buffer) }
            }
        }
    }
}
