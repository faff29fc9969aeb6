import NIOHTTP1
import OutriggerConfig

/// Header handling every proxied request and response gets: hop-by-hop removal (RFC 9110 §7.6.1),
/// forwarding headers, request id, rewrites and `via`. Pure functions over `HTTPHeaders`.
public enum ProxyHeaders {
    /// Fields that describe one connection and never cross a proxy. `te` comes last and is handled apart:
    /// `te: trailers` is kept because gRPC needs it.
    static let hopByHopNames = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
        "transfer-encoding", "upgrade", "http2-settings", "te",
    ]
    private static let connectionIndex = 0
    private static let teIndex = hopByHopNames.count - 1

    /// Removes hop-by-hop fields, the fields `Connection` names, and `te` values other than `trailers`; and the
    /// field named `own`, if one is given (a field of the proxy's own the message must not bring in).
    ///
    /// One scan finds which hop-by-hop fields are there and reads the `Connection` and `te` lists in place; only the
    /// fields present are removed. Nothing is allocated unless `Connection` names a field that is neither hop-by-hop
    /// nor `close`, or the field named `own` is there.
    public static func removeHopByHop(_ headers: inout HTTPHeaders, alongWith own: StaticString? = nil) {
        var present: UInt16 = 0  // bit i: hopByHopNames[i] is there
        var ownPresent = false
        var namesClose = false
        var keepTrailers = false
        var named: [String] = []  // the other fields `Connection` names
        for (name, value) in headers {
            var found: Int?
            name.withUTF8Bytes { bytes in
                if let own, HTTP1Syntax.equalsIgnoringCase(bytes, own) { ownPresent = true }
                found = hopByHopIndex(bytes)
            }
            guard let index = found else { continue }
            present |= 1 << index
            guard index == connectionIndex || index == teIndex else { continue }
            value.withUTF8Bytes { bytes in
                HTTP1Syntax.forEachListElement(bytes) { element in
                    if index == teIndex {
                        if HTTP1Syntax.equalsIgnoringCase(element, "trailers") { keepTrailers = true }
                    } else if HTTP1Syntax.equalsIgnoringCase(element, "close") {
                        namesClose = true
                    } else if !element.isEmpty, hopByHopIndex(element) == nil {
                        named.append(String(decoding: element, as: UTF8.self).lowercased())
                    }
                }
            }
        }
        if ownPresent, let own { headers.remove(name: "\(own)") }
        guard present != 0 else { return }
        for (index, name) in hopByHopNames.enumerated() where present & (1 << index) != 0 {
            headers.remove(name: name)
        }
        if namesClose { headers.remove(name: "close") }
        for name in named { headers.remove(name: name) }
        if keepTrailers { headers.add(name: "te", value: "trailers") }
    }

    /// The index in `hopByHopNames` of `name` in any case, or nil.
    @inline(__always)
    static func hopByHopIndex(_ name: String) -> Int? {
        var index: Int?
        name.withUTF8Bytes { index = hopByHopIndex($0) }
        return index
    }

    /// The same for a name's bytes: by its length first (most names have no hop-by-hop name's length, and go without
    /// a byte read), then against the one or two names of that length. `hopByHopNames`' order, which a test checks.
    @inline(__always)
    static func hopByHopIndex(_ name: UnsafeRawBufferPointer) -> Int? {
        switch name.count {
        case 2: HTTP1Syntax.equalsIgnoringCase(name, "te") ? 8 : nil
        case 7: HTTP1Syntax.equalsIgnoringCase(name, "upgrade") ? 6 : nil
        case 10:
            HTTP1Syntax.equalsIgnoringCase(name, "connection") ? 0 : HTTP1Syntax.equalsIgnoringCase(name, "keep-alive") ? 1 : nil
        case 14: HTTP1Syntax.equalsIgnoringCase(name, "http2-settings") ? 7 : nil
        case 16: HTTP1Syntax.equalsIgnoringCase(name, "proxy-connection") ? 2 : nil
        case 17: HTTP1Syntax.equalsIgnoringCase(name, "transfer-encoding") ? 5 : nil
        case 18: HTTP1Syntax.equalsIgnoringCase(name, "proxy-authenticate") ? 3 : nil
        case 19: HTTP1Syntax.equalsIgnoringCase(name, "proxy-authorization") ? 4 : nil
        default: nil
        }
    }

    /// A field value an HTTP/1.1 message may carry (RFC 9110 §5.5: visible characters, obs-text, space and tab —
    /// no other control character). HTTP/2 forbids only NUL, CR and LF (RFC 9113 §8.2.1), so a request that came
    /// over HTTP/2 is checked before it can be forwarded as HTTP/1.1.
    public static func isValidFieldValue(_ value: String) -> Bool {
        var valid = true
        value.withUTF8Bytes { valid = HTTP1Syntax.areFieldValueBytes($0) }
        return valid
    }

    /// Whether a field only means something to one HTTP/1.1 connection (hop-by-hop, or `te`): such fields are
    /// not sent in HTTP/2 (RFC 9113 §8.2.2). Case-insensitive, without allocating.
    @inline(__always)
    public static func isConnectionSpecific(_ name: String) -> Bool {
        hopByHopIndex(name) != nil
    }

    @inline(__always)
    static func isConnectionSpecific(_ name: UnsafeRawBufferPointer) -> Bool {
        hopByHopIndex(name) != nil
    }

    /// Everything done to a request head on its way upstream.
    /// - Parameter facts: the head's, as it was read (only override fields and `expect` are removed before): a
    ///   field they say is absent is not looked for. One they say is there is looked for still: `connection` may
    ///   name it, and then it is gone with the hop-by-hop fields.
    /// - Parameter own: the proxy's own fields that go after the head's (`AppendedOwnFields`), for a route without
    ///   request header rules; with rules, which may read or change them, they go into the head as one block.
    /// - Returns: the request id the request carries upstream: kept, or generated when missing.
    @discardableResult
    public static func prepareUpstreamRequest(
        _ head: inout HTTPRequestHead,
        facts: RequestHeadFacts,
        route: Route,
        clientAddress: String?,
        scheme: String,
        addVia: Bool,
        appending own: inout AppendedOwnFields,
        random: inout FastRandom
    ) -> UpstreamRequestID {
        // Room for what the proxy may add to the head (framing, forwarding headers, request id, via): one growth.
        head.headers.reserveCapacity(head.headers.count + 8)
        if facts.hasHopByHopFields { removeHopByHop(&head.headers) }
        let appends = route.requestHeaders.isEmpty
        // The fields added to the head go in as one block, after the others, in this order.
        var added: [(String, String)] = []
        // Keep framing: a chunked body stays chunked on an HTTP/1.1 upstream; NIO's encoder writes the chunks.
        if facts.lastTransferCodingIsChunked && !(facts.hasContentLength && head.headers.contains(name: "content-length")) {
            added.append(("transfer-encoding", "chunked"))
        }
        if let clientAddress {
            if facts.hasForwardedFor, let existing = head.headers.first(name: OutriggerHeader.forwardedFor) {
                head.headers.remove(name: OutriggerHeader.forwardedFor)
                added.append((OutriggerHeader.forwardedFor, "\(existing), \(clientAddress)"))
            } else if appends {
                own.forwardedFor = clientAddress
            } else {
                added.append((OutriggerHeader.forwardedFor, clientAddress))
            }
        }
        if !(facts.hasForwardedProto && head.headers.contains(name: OutriggerHeader.forwardedProto)) {
            if appends { own.forwardedProto = scheme } else { added.append((OutriggerHeader.forwardedProto, scheme)) }
        }
        var requestID: UpstreamRequestID
        let receivedID = facts.hasRequestID ? head.headers.first(name: OutriggerHeader.requestID) : nil
        if let receivedID, !receivedID.isEmpty {
            requestID = .inHead(receivedID)
        } else {
            if receivedID != nil { head.headers.remove(name: OutriggerHeader.requestID) }
            let generated = GeneratedRequestID(random: &random)
            if appends {
                requestID = .appended(generated)
                own.requestID = generated
            } else {
                let text = generated.text
                requestID = .inHead(text)
                added.append((OutriggerHeader.requestID, text))
            }
        }
        head.headers.addOwn(added)
        if addVia { appendVia(&head.headers, version: head.version) }
        if route.prefixRewrite != nil { head.uri = route.rewrittenURI(head.uri) }
        if let host = route.hostRewrite { head.headers.replaceOrAdd(name: "host", value: host) }
        route.requestHeaders.apply(to: &head.headers)
        // The route's own header rules have the last word, on this header too.
        if route.requestHeadersChangeRequestID { requestID = .inHead(head.headers.first(name: OutriggerHeader.requestID) ?? "") }
        // The head's method, URI and version share storage with the downstream head: set only when it differs.
        if head.version != .http1_1 { head.version = .http1_1 }
        return requestID
    }

    /// Everything done to an upstream response head on its way back.
    /// - Parameter facts: the head's, as it was read: no hop-by-hop or `x-outrigger-…` field, no scan for them.
    /// - Parameter own: the proxy's own fields that go after the head's (`AppendedResponseFields`), for a route without
    ///   response header rules; with rules, which may read or change them, they go into the head.
    public static func prepareDownstreamResponse(
        _ head: inout HTTPResponseHead,
        facts: ResponseHeadFacts = .unknown,
        route: Route,
        upstreamServiceMilliseconds: Int64,
        addVia: Bool,
        appending own: inout AppendedResponseFields
    ) {
        // The upstream's own `x-outrigger-upstream-service-time`, if it sent one, goes in the same scan.
        if facts.mayHaveHopByHopFields || facts.mayHaveOwnFields {
            removeHopByHop(&head.headers, alongWith: OutriggerHeader.upstreamServiceTimeName)
        }
        if head.status.reasonPhrase.isEmpty {
            head.status = .custom(code: head.status.code, reasonPhrase: reasonPhrase(forUnknown: head.status.code))
        }
        // After the head's fields, unless the route's rules may read or change it.
        if route.responseHeaders.isEmpty {
            own.upstreamServiceMilliseconds = upstreamServiceMilliseconds
        } else {
            head.headers.addOwn(name: OutriggerHeader.upstreamServiceTime, value: DecimalText.string(upstreamServiceMilliseconds))
        }
        if addVia { appendVia(&head.headers, version: head.version) }
        route.responseHeaders.apply(to: &head.headers)
    }

    /// A reason phrase for a status code NIO does not name: some HTTP/1.1 clients (h2load `--h1` among
    /// them) miscount responses whose status line has none.
    static func reasonPhrase(forUnknown code: UInt) -> String {
        switch code {
        case 100..<200: return "Informational"
        case 200..<300: return "Success"
        case 300..<400: return "Redirection"
        case 400..<500: return "Client Error"
        default: return "Server Error"
        }
    }

    private static func appendVia(_ headers: inout HTTPHeaders, version: HTTPVersion) {
        let hop = version.major == 2 ? "2 outrigger" : "\(version.major).\(version.minor) outrigger"
        if let existing = headers.first(name: "via") {
            headers.replaceOrAdd(name: "via", value: "\(existing), \(hop)")
        } else {
            headers.add(name: "via", value: hop)
        }
    }

    /// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): a bracketed IPv6 literal or a reg-name / IPv4 address of
    /// unreserved, percent-encoded and sub-delimiter characters; an empty value is allowed (no authority).
    public static func isValidHost(_ value: String) -> Bool {
        var valid = false
        value.withUTF8Bytes { valid = isValidHost($0) }
        return valid
    }

    /// Read from the bytes in place: through `String.UTF8View`'s indices it cost ~120 instructions a byte.
    private static func isValidHost(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        if bytes.first == UInt8(ascii: "[") {
            index = 1
            while index < bytes.count, isHexDigit(bytes[index]) || bytes[index] == UInt8(ascii: ":") || bytes[index] == UInt8(ascii: ".") {
                index += 1
            }
            guard index > 1, index < bytes.count, bytes[index] == UInt8(ascii: "]") else { return false }
            index += 1
        } else {
            while index < bytes.count, bytes[index] != UInt8(ascii: ":") {
                guard isRegNameByte(bytes[index]) else { return false }
                index += 1
            }
        }
        guard index < bytes.count else { return true }
        guard bytes[index] == UInt8(ascii: ":") else { return false }
        let port = bytes.count - index - 1
        guard port <= 5 else { return false }
        for offset in (index + 1)..<bytes.count where bytes[offset] < UInt8(ascii: "0") || bytes[offset] > UInt8(ascii: "9") {
            return false
        }
        return true
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte | 0x20 >= UInt8(ascii: "a") && byte | 0x20 <= UInt8(ascii: "f"))
    }

    /// unreserved / pct-encoded / sub-delims (RFC 3986 §3.2.2).
    private static func isRegNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"),
             UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="): return true
        default: return false
        }
    }

    /// The path of a request target without its query (`/a/b?x=1` → `/a/b`).
    @inline(__always)
    public static func path(of uri: String) -> Substring {
        if let question = uri.utf8.firstIndex(of: UInt8(ascii: "?")) {
            return uri[..<question]
        }
        return uri[...]
    }
}

extension HeaderMutations {
    /// Applies remove, then set, then add.
    public func apply(to headers: inout HTTPHeaders) {
        guard !isEmpty else { return }
        for name in remove { headers.remove(name: name) }
        for header in set { headers.replaceOrAdd(name: header.name, value: header.value) }
        for header in add { headers.add(name: header.name, value: header.value) }
    }
}
