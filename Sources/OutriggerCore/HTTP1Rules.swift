import NIOHTTP1
import OutriggerConfig

/// The HTTP/1.x rules the proxy applies itself, pure over heads: framing a relayed response, when a connection
/// closes after a local reply, and the protocol's name in the access log.
public enum HTTP1Rules {
    /// Frames a relayed response for an HTTP/1.x client — decided here, not by NIO's encoder, which cannot know a
    /// response answers HEAD: a body without `content-length` is chunked for HTTP/1.1 clients and delimited by the
    /// connection's close for HTTP/1.0 ones; `connection: close` when the connection ends after it (`closing`: it
    /// must anyway), `keep-alive` to an HTTP/1.0 client whose connection stays. Returns whether it closes.
    /// `hasContentLength`: whether the head has a `content-length`, when that is known; nil: it is looked for.
    public static func frame(_ response: inout HTTPResponseHead, answersHEAD: Bool, clientVersion: HTTPVersion,
                             keepAlive: Bool, closing: Bool, hasContentLength: Bool? = nil) -> Bool {
        let code = response.status.code
        let hasBody = !answersHEAD && code >= 200 && code != 204 && code != 304
        var closes = closing || !keepAlive
        if hasBody && !(hasContentLength ?? response.headers.contains(name: "content-length")) {
            if clientVersion.minor >= 1 {
                response.headers.add(name: "transfer-encoding", value: "chunked")
            } else {
                closes = true
            }
        }
        if closes {
            response.headers.replaceOrAdd(name: "connection", value: "close")
        } else if clientVersion.minor == 0 {
            response.headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
        return closes
    }

    /// Whether an HTTP/1.1 connection closes after a local reply: the client did not ask to keep it, the request's body
    /// was not read to its end (what follows on the connection is not a request head), the request could not be parsed
    /// or named no valid host (the connection's framing is in doubt), or the sidecar is shutting down.
    public static func closesAfterLocalReply(_ reason: LocalReplyReason, keepAlive: Bool, requestComplete: Bool, quiescing: Bool) -> Bool {
        !keepAlive || !requestComplete || reason == .badRequest || reason == .invalidHost || quiescing
    }

    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2`, as the access log names them.
    public static func protocolName(_ version: HTTPVersion) -> String {
        switch (version.major, version.minor) {
        case (2, _): "HTTP/2"
        case (1, 0): "HTTP/1.0"
        default: "HTTP/1.1"
        }
    }
}

extension AttemptOutcome {
    /// What an answer's head says of its try, as the retry rules read it.
    public init(responseHead head: HTTPResponseHead, isGRPC: Bool) {
        self = .response(status: Int(head.status.code), grpcStatus: isGRPC ? head.headers.first(name: "grpc-status").flatMap(Int.init) : nil,
                         retryAfterSeconds: head.headers.first(name: "retry-after").flatMap(Int.init))
    }
}

extension AttemptResult {
    /// What an answer's status says of its endpoint's health.
    public init(status: Int) {
        self = status >= 500 ? .serverError(status: status) : .success
    }
}

extension HTTPHeaders {
    /// Adds fields whose names are the proxy's own constants (ASCII, lower-case), in order: what `add(name:value:)`
    /// does, without its check of every byte of each name — ~600 instructions a name by callgrind, 4.5 % of a traced
    /// request's instructions for its six adds. They go in as one block (`add(contentsOf:)`, which takes a block's
    /// fields as they are). Never for a name from a client or the config. Unlike `add(name:value:)`, it drops a
    /// keep-alive reading NIO's decoder left on the block (the block's fields are read again when asked); the
    /// proxy's own parsers leave none.
    public mutating func addOwn(_ fields: [(String, String)]) {
        guard !fields.isEmpty else { return }
        add(contentsOf: HTTPHeaders(fields))
    }

    /// One field whose name is the proxy's own (`addOwn(_:)`).
    public mutating func addOwn(name: String, value: String) {
        addOwn([(name, value)])
    }

    /// Removes and returns `grpc-status`, `grpc-message` and `grpc-status-details-bin`, if a status is present.
    public mutating func takeGRPCStatus() -> HTTPHeaders? {
        guard contains(name: "grpc-status") else { return nil }
        var status = HTTPHeaders()
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            for value in self[name] { status.add(name: name, value: value) }
            remove(name: name)
        }
        return status
    }
}
