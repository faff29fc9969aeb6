import NIOCore

/// The state of one side of an HTTP/2 connection (RFC 9113 §5, §6.5, §6.9), a server's (downstream) or a client's
/// (upstream): its streams' states and both windows each way, the settings in force, the header block being
/// received, the streams recently reset, the last stream each side opened, and the GOAWAYs either way. Each inbound
/// frame goes through one method, which says what the frame means or throws the violation (scoped to the connection
/// or one stream); each outbound frame is told to it as it goes out. No I/O: `HTTP2Codec` decodes, encodes and
/// carries out.
///
/// A server's streams are opened by the client's requests; a client's by its own requests going out, and each then
/// awaits its response's head (informational heads first, any number of them). Neither side takes pushed streams.
///
/// Simplifications, each on the lenient side: this side's receive windows start at what it advertises, not at
/// 65,535 until its SETTINGS is acknowledged (a peer that waits for the ack is never refused); priority is read
/// only for a stream depending on itself.
public struct HTTP2Streams {
    public enum Role: Sendable { case server, client }

    public struct Limits: Sendable {
        /// SETTINGS_MAX_CONCURRENT_STREAMS a server advertises: a stream beyond it is refused (REFUSED_STREAM).
        public var maxConcurrentStreams: Int
        /// SETTINGS_INITIAL_WINDOW_SIZE advertised: each stream's receive window.
        public var initialWindow: Int
        /// The largest compressed header block taken (SETTINGS_MAX_HEADER_LIST_SIZE advertised, bounding memory).
        public var maxHeaderBlock: Int
        /// How many reset streams are remembered, whose late frames are ignored rather than taken for errors.
        public var recentlyResetMemory: Int

        public init(maxConcurrentStreams: Int = 1024, initialWindow: Int = 1 << 20, maxHeaderBlock: Int = 64 * 1024, recentlyResetMemory: Int = 1024) {
            self.maxConcurrentStreams = maxConcurrentStreams
            self.initialWindow = initialWindow
            self.maxHeaderBlock = maxHeaderBlock
            self.recentlyResetMemory = recentlyResetMemory
        }
    }

    private enum Half { case open, peerEnded, localEnded }

    private struct Stream {
        var half: Half
        var sendWindow: Int
        var receiveWindow: Int
        /// Body bytes the peer still owes by its content-length.
        var contentLeft: Int? = nil
        /// A client's stream whose response's final head has not come: DATA would be malformed.
        var awaitingResponse = false
        /// A client's stream for a HEAD request: its response has no content, whatever its content-length says.
        var headRequest = false
    }

    /// A header block being received in CONTINUATION frames.
    private struct PendingBlock {
        var stream: UInt32
        var fragments: ByteBuffer
        var endStream: Bool
        var kind: Kind
        /// The block is read only to keep HPACK's table in step: its stream is refused or gone.
        var discarding: HTTP2Code?
        var continuations = 0
    }

    /// What a header block is, by its stream's state when its HEADERS came.
    private enum Kind { case request, response, trailers }

    public let role: Role
    public let limits: Limits
    private var streams = StreamIDMap<Stream>()
    private var recentlyReset = RecentStreamIDs()
    private var pending: PendingBlock?
    private var sawSettings = false
    /// The highest stream id the peer opened, for a GOAWAY (RFC 9113 §6.8) and to tell idle streams from closed.
    public private(set) var lastPeerStream: UInt32 = 0
    /// The highest stream id this side opened (a client's requests).
    private var lastLocalStream: UInt32 = 0
    /// The last stream a GOAWAY sent let through: streams after it are ignored.
    private var goAwayLastStream: UInt32?
    /// The peer sent GOAWAY: this side opens no more streams.
    public private(set) var peerWentAway = false
    /// SETTINGS_MAX_CONCURRENT_STREAMS the peer allows a client: a request past it waits for a stream to close. 100
    /// until the peer says (RFC 9113 §6.5.2 allows any; NIO's handler and most servers start there).
    public private(set) var peerMaxConcurrentStreams = 100
    private var peerInitialWindow = 65_535
    /// SETTINGS_MAX_FRAME_SIZE the peer allows: no frame sent may be larger.
    public private(set) var peerMaxFrameSize = HTTP2FrameKind.defaultMaxFrameSize
    private var connectionSendWindow = 65_535
    public private(set) var connectionReceiveWindow = 65_535

    public init(_ role: Role = .server, limits: Limits = Limits()) {
        self.role = role
        self.limits = limits
    }

    /// The settings this side sends first. A client turns push off (RFC 9113 §8.4) and opens the streams itself.
    public var initialSettings: [HTTP2FrameDecoder.Setting] {
        let streamLimit: HTTP2FrameDecoder.Setting = switch role {
        case .server: .init(id: HTTP2SettingID.maxConcurrentStreams, value: UInt32(limits.maxConcurrentStreams))
        case .client: .init(id: HTTP2SettingID.enablePush, value: 0)
        }
        return [streamLimit,
                .init(id: HTTP2SettingID.maxHeaderListSize, value: UInt32(limits.maxHeaderBlock)),
                .init(id: HTTP2SettingID.initialWindowSize, value: UInt32(limits.initialWindow))]
    }

    /// A stream id neither side has opened yet (RFC 9113 §5.1): the peer's past its last, or this side's past its
    /// last. A server's peer opens odd ids, a client's even ones (pushes, which neither side takes).
    private func isIdle(_ id: UInt32) -> Bool {
        isLocal(id) ? id > lastLocalStream : id > lastPeerStream
    }

    /// Whether this side opens streams with ids like `id`: a client its odd ones, a server even ones (it pushes none).
    private func isLocal(_ id: UInt32) -> Bool {
        (id % 2 == 1) == (role == .client)
    }

    public var openStreams: Int { streams.count }

    // MARK: Inbound

    /// What a HEADERS frame or a header block's last CONTINUATION amounts to.
    public enum HeaderBlock: Equatable {
        /// More of the block follows in CONTINUATION frames.
        case incomplete
        /// A new request (server): decode it, check it, then `requestAccepted` or `resetSent`.
        case request(stream: UInt32, block: ByteBuffer, endStream: Bool)
        /// A response head, informational or final (client): decode it, check it, then `responseAccepted` or `resetSent`.
        case response(stream: UInt32, block: ByteBuffer, endStream: Bool)
        /// An open stream's trailers (they end the peer's side).
        case trailers(stream: UInt32, block: ByteBuffer)
        /// Decoded only to keep HPACK's table in step. `reset`: the stream to refuse, and how (`resetSent` follows).
        case discard(block: ByteBuffer, reset: StreamReset?)
    }

    public struct StreamReset: Equatable, Sendable {
        public var stream: UInt32
        public var code: HTTP2Code

        public init(stream: UInt32, code: HTTP2Code) {
            self.stream = stream
            self.code = code
        }
    }

    /// Every frame first: a header block may not be split by another frame, and the peer's first frame is
    /// its SETTINGS (RFC 9113 §3.4, §6.10).
    public mutating func arriving(_ frame: HTTP2FrameDecoder.Frame) throws(HTTP2Violation) {
        if let pending {
            guard case .continuation(let stream, _, _) = frame, stream == pending.stream else {
                throw .connection(.protocolError, "a frame inside stream \(pending.stream)'s header block")
            }
        } else if case .continuation(let stream, _, _) = frame {
            throw .connection(.protocolError, "CONTINUATION on stream \(stream) without a header block")
        }
        if !sawSettings {
            guard case .settings = frame else { throw .connection(.protocolError, "the peer's first frame is not SETTINGS") }
            sawSettings = true
        }
    }

    public mutating func headers(stream id: UInt32, fragment: ByteBuffer, endStream: Bool, endHeaders: Bool, dependsOn: UInt32?) throws(HTTP2Violation) -> HeaderBlock {
        var block = PendingBlock(stream: id, fragments: fragment, endStream: endStream, kind: .request)
        if let existing = streams[id] {
            switch existing.half {
            case .open, .localEnded:
                if existing.awaitingResponse {
                    block.kind = .response
                } else {
                    block.kind = .trailers
                    // RFC 9113 §8.1: a header block after the final head ends the stream, or the message is malformed.
                    if !endStream { block.discarding = .protocolError }
                }
            case .peerEnded:
                block.discarding = .streamClosed
            }
        } else if isIdle(id) {
            guard role == .server, id % 2 == 1 else {
                throw .connection(.protocolError, role == .server ? "the client opened the even stream \(id)" : "HEADERS on stream \(id), which this side did not open")
            }
            lastPeerStream = id
            if dependsOn == id {
                block.discarding = .protocolError
            } else if let goAwayLastStream, id > goAwayLastStream {
                block.discarding = .noError  // ignored: after our GOAWAY (RFC 9113 §6.8)
            } else if streams.count >= limits.maxConcurrentStreams {
                block.discarding = .refusedStream
            }
        } else if recentlyReset.contains(id) {
            block.discarding = .noError
        } else {
            throw .connection(.streamClosed, "HEADERS on the closed stream \(id)")
        }
        guard block.fragments.readableBytes <= limits.maxHeaderBlock else {
            throw .connection(.enhanceYourCalm, "a header block over \(limits.maxHeaderBlock) bytes")
        }
        if !endHeaders {
            pending = block
            return .incomplete
        }
        return finished(block)
    }

    public mutating func continuation(fragment: ByteBuffer, endHeaders: Bool) throws(HTTP2Violation) -> HeaderBlock {
        guard var block = pending else { throw .connection(.protocolError, "CONTINUATION without a header block") }
        var fragment = fragment
        block.fragments.writeBuffer(&fragment)
        block.continuations += 1
        guard block.fragments.readableBytes <= limits.maxHeaderBlock, block.continuations <= 128 else {
            throw .connection(.enhanceYourCalm, "a header block over \(limits.maxHeaderBlock) bytes or 128 frames")
        }
        if !endHeaders {
            pending = block
            return .incomplete
        }
        pending = nil
        return finished(block)
    }

    private func finished(_ block: PendingBlock) -> HeaderBlock {
        if block.kind != .request, block.discarding == nil, streams[block.stream] == nil {
            // This side reset the stream while the block came in CONTINUATION frames.
            return .discard(block: block.fragments, reset: nil)
        }
        if let code = block.discarding {
            return .discard(block: block.fragments, reset: code == .noError ? nil : StreamReset(stream: block.stream, code: code))
        }
        switch block.kind {
        case .request: return .request(stream: block.stream, block: block.fragments, endStream: block.endStream)
        case .response: return .response(stream: block.stream, block: block.fragments, endStream: block.endStream)
        case .trailers: return .trailers(stream: block.stream, block: block.fragments)
        }
    }

    /// A request's head was decoded and is well formed (server): its stream is open.
    public mutating func requestAccepted(stream id: UInt32, endStream: Bool, contentLength: Int?) {
        streams[id] = Stream(half: endStream ? .peerEnded : .open, sendWindow: peerInitialWindow, receiveWindow: limits.initialWindow,
                             contentLeft: contentLength)
    }

    /// A response head was decoded and is well formed (client). An informational one (1xx) leaves the stream awaiting
    /// the final one and may not end it; the final one's content-length holds the DATA after it, and a response with no
    /// content (to HEAD, 204, 304: RFC 9110 §6.4.1, RFC 9113 §8.1.1) may have none, whatever its content-length says
    /// (bytes there would reach an HTTP/1.1 client as the start of its next response). - Returns: whether the stream
    /// is now closed.
    public mutating func responseAccepted(stream id: UInt32, status: Int, endStream: Bool, contentLength: Int?) throws(HTTP2Violation) -> Bool {
        guard var stream = streams[id] else { return false }
        if status < 200 {
            if endStream { throw .stream(id, .protocolError, "an informational response (\(status)) ends the stream") }
            return false
        }
        stream.awaitingResponse = false
        stream.contentLeft = stream.headRequest || status == 204 || status == 304 ? 0 : contentLength
        guard endStream else {
            streams[id] = stream
            return false
        }
        if let left = stream.contentLeft, left > 0 { throw .stream(id, .protocolError, "content-length \(left) on a response that ends with its head") }
        return ended(id, &stream, .peerEnded)
    }

    /// Trailers were received on an open stream: the peer's side of it ended.
    /// - Returns: whether the stream is now closed (this side had ended it already).
    public mutating func trailersReceived(stream id: UInt32) throws(HTTP2Violation) -> Bool {
        guard var stream = streams[id] else { return false }
        if let left = stream.contentLeft, left != 0 {
            throw .stream(id, .protocolError, "the body ended \(left) bytes short of its content-length")
        }
        return ended(id, &stream, .peerEnded)
    }

    /// One side ended the stream (`.peerEnded` or `.localEnded`). - Returns: whether both have now, and it is closed.
    private mutating func ended(_ id: UInt32, _ stream: inout Stream, _ side: Half) -> Bool {
        if stream.half != .open, stream.half != side {
            streams[id] = nil
            return true
        }
        stream.half = side
        streams[id] = stream
        return false
    }

    public enum DataVerdict: Equatable {
        /// Hand it to the stream's request; `closesStream`: both sides have now ended.
        case deliver(closesStream: Bool)
        /// A late frame of a stream reset: dropped (its bytes still count against the connection's window).
        case ignore
    }

    public mutating func data(stream id: UInt32, payloadBytes: Int, flowControlled: Int, endStream: Bool) throws(HTTP2Violation) -> DataVerdict {
        connectionReceiveWindow -= flowControlled
        if connectionReceiveWindow < 0 { throw .connection(.flowControlError, "DATA past the connection's window") }
        guard var stream = streams[id] else {
            if isIdle(id) { throw .connection(.protocolError, "DATA on the idle stream \(id)") }
            if recentlyReset.contains(id) { return .ignore }
            throw .stream(id, .streamClosed, "DATA on the closed stream \(id)")
        }
        guard stream.half != .peerEnded else { throw .stream(id, .streamClosed, "DATA after the stream's END_STREAM") }
        guard !stream.awaitingResponse else { throw .stream(id, .protocolError, "DATA before the response's head") }
        stream.receiveWindow -= flowControlled
        if stream.receiveWindow < 0 { throw .stream(id, .flowControlError, "DATA past the stream's window") }
        if let left = stream.contentLeft {
            guard payloadBytes <= left else { throw .stream(id, .protocolError, "more body than its content-length") }
            stream.contentLeft = left - payloadBytes
            if endStream, left != payloadBytes { throw .stream(id, .protocolError, "the body ended short of its content-length") }
        }
        if endStream { return .deliver(closesStream: ended(id, &stream, .peerEnded)) }
        streams[id] = stream
        return .deliver(closesStream: false)
    }

    /// The stream's receive window now, for when to give credit back.
    public func receiveWindow(of id: UInt32) -> Int? { streams[id]?.receiveWindow }

    /// The peer reset the stream. It is not remembered among the resets whose late frames are ignored: those are
    /// this side's (the peer sends nothing after its own reset). - Returns: whether the stream was open.
    public mutating func rstStream(stream id: UInt32) throws(HTTP2Violation) -> Bool {
        if streams.removeValue(forKey: id) != nil { return true }
        if isIdle(id) { throw .connection(.protocolError, "RST_STREAM on the idle stream \(id)") }
        return false
    }

    public mutating func priority(stream id: UInt32, dependsOn: UInt32) throws(HTTP2Violation) {
        if id == dependsOn, streams[id] != nil { throw .stream(id, .protocolError, "stream \(id) depends on itself") }
    }

    /// What the peer's SETTINGS changed that the caller carries out.
    public struct SettingsChange: Equatable {
        /// SETTINGS_HEADER_TABLE_SIZE: the HPACK encoder's table may be at most this.
        public var headerTableSize: Int?
        /// SETTINGS_MAX_CONCURRENT_STREAMS: how many streams this side may have open (a client's requests).
        public var maxConcurrentStreams: Int?
        /// The send windows grew: data held for them may go.
        public var windowsGrew = false
    }

    public mutating func settings(_ settings: [HTTP2FrameDecoder.Setting]) throws(HTTP2Violation) -> SettingsChange {
        var change = SettingsChange()
        var initialWindow: Int?
        for setting in settings {
            let value = Int(setting.value)
            switch setting.id {
            case HTTP2SettingID.headerTableSize:
                change.headerTableSize = value
            case HTTP2SettingID.enablePush:
                // RFC 9113 §6.5.2 lets a server say only 0, but servers written to RFC 7540 say 1 (and NIO's handler took
                // it): taken and ignored, push stays off (a PUSH_PROMISE is still a connection error).
                guard value <= 1 else { throw .connection(.protocolError, "SETTINGS_ENABLE_PUSH \(value)") }
            case HTTP2SettingID.maxConcurrentStreams:
                change.maxConcurrentStreams = value
                peerMaxConcurrentStreams = value
            case HTTP2SettingID.initialWindowSize:
                guard value <= HTTP2FrameKind.maxWindow else { throw .connection(.flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE \(value)") }
                initialWindow = value  // applied once, the last one listed: a frame may repeat it thousands of times
            case HTTP2SettingID.maxFrameSize:
                guard value >= HTTP2FrameKind.defaultMaxFrameSize, value <= 16_777_215 else {
                    throw .connection(.protocolError, "SETTINGS_MAX_FRAME_SIZE \(value)")
                }
                peerMaxFrameSize = value
            default:
                break  // SETTINGS_MAX_HEADER_LIST_SIZE (advisory), unknown ones.
            }
        }
        if let initialWindow, initialWindow != peerInitialWindow {
            let delta = initialWindow - peerInitialWindow
            peerInitialWindow = initialWindow
            // RFC 9113 §6.9.2: every open stream's window moves by the difference (in place: one pass, no copy).
            try streams.updateEach { id, stream throws(HTTP2Violation) in
                stream.sendWindow += delta
                if stream.sendWindow > HTTP2FrameKind.maxWindow {
                    throw .connection(.flowControlError, "stream \(id)'s window past 2^31-1")
                }
            }
            change.windowsGrew = delta > 0
        }
        return change
    }

    /// - Returns: whether a send window grew (data held for it may go): the connection's (id 0) or the stream's.
    public mutating func windowUpdate(stream id: UInt32, increment: Int) throws(HTTP2Violation) -> Bool {
        if id == 0 {
            guard increment > 0 else { throw .connection(.protocolError, "a WINDOW_UPDATE of 0 for the connection") }
            connectionSendWindow += increment
            if connectionSendWindow > HTTP2FrameKind.maxWindow { throw .connection(.flowControlError, "the connection's window past 2^31-1") }
            return true
        }
        guard var stream = streams[id] else {
            if isIdle(id) { throw .connection(.protocolError, "WINDOW_UPDATE on the idle stream \(id)") }
            return false
        }
        guard increment > 0 else { throw .stream(id, .protocolError, "a WINDOW_UPDATE of 0") }
        stream.sendWindow += increment
        if stream.sendWindow > HTTP2FrameKind.maxWindow { throw .stream(id, .flowControlError, "the stream's window past 2^31-1") }
        streams[id] = stream
        return true
    }

    /// A client turned push off in its first SETTINGS, and a server takes none (RFC 9113 §8.4).
    public mutating func pushPromise() throws(HTTP2Violation) {
        throw .connection(.protocolError, role == .server ? "PUSH_PROMISE from a client" : "PUSH_PROMISE, though push is off")
    }

    /// The peer's GOAWAY: this side opens no more streams, and its streams after `lastStream` were not processed and
    /// are closed (a client's requests there may go again elsewhere; RFC 9113 §6.8). - Returns: those streams.
    public mutating func goAwayReceived(lastStream: UInt32) -> [UInt32] {
        peerWentAway = true
        let unprocessed = streams.allKeys.filter { id in id > lastStream && isLocal(id) }.sorted()
        for id in unprocessed { streams[id] = nil }
        return unprocessed
    }

    // MARK: Outbound

    public enum RequestStart: Equatable {
        /// A new stream, open now (its HEADERS go out next).
        case opened
        /// Not a new stream: the HEADERS belong to one open (trailers), or to none.
        case notNew
        /// As many streams are open as the peer allows: the request waits, in order, for one to close.
        case wait
        /// A GOAWAY either way came first: the request was not sent, and may go elsewhere.
        case refused
    }

    /// A client's request HEADERS are about to go out on `id`; a new id (odd, past the last) opens a stream.
    public mutating func requestStarting(stream id: UInt32, headRequest: Bool) -> RequestStart {
        guard role == .client, id % 2 == 1, id > lastLocalStream else { return .notNew }
        guard !peerWentAway, goAwayLastStream == nil else { return .refused }
        guard streams.count < peerMaxConcurrentStreams else { return .wait }
        lastLocalStream = id
        streams[id] = Stream(half: .open, sendWindow: peerInitialWindow, receiveWindow: limits.initialWindow, awaitingResponse: true, headRequest: headRequest)
        return .opened
    }

    /// Whether a request that waits (`.wait`) would now start: a stream may open, or it would be refused.
    public var waitingRequestMayStart: Bool {
        streams.count < peerMaxConcurrentStreams || peerWentAway || goAwayLastStream != nil
    }

    /// Whether the stream can still be written to (open this way).
    public func canSend(on id: UInt32) -> Bool {
        guard let stream = streams[id] else { return false }
        return stream.half != .localEnded
    }

    /// How many DATA bytes may go on the stream now: both windows and one frame's size bound it.
    public func sendable(on id: UInt32) -> Int {
        guard let stream = streams[id], stream.half != .localEnded else { return 0 }
        return max(0, min(stream.sendWindow, connectionSendWindow, peerMaxFrameSize))
    }

    /// A HEADERS frame goes out. - Returns: whether the stream is now closed.
    public mutating func headersSent(stream id: UInt32, endStream: Bool) -> Bool {
        guard endStream, var stream = streams[id] else { return false }
        return ended(id, &stream, .localEnded)
    }

    /// A DATA frame goes out (it fit `sendable`). - Returns: whether the stream is now closed.
    public mutating func dataSent(stream id: UInt32, bytes: Int, endStream: Bool) -> Bool {
        guard var stream = streams[id] else { return false }
        stream.sendWindow -= bytes
        connectionSendWindow -= bytes
        if endStream { return ended(id, &stream, .localEnded) }
        streams[id] = stream
        return false
    }

    /// This side reset the stream (its message was malformed or refused, or its exchange gave up).
    /// - Returns: whether the stream was open.
    @discardableResult
    public mutating func resetSent(stream id: UInt32) -> Bool {
        recentlyReset.insert(id, memory: limits.recentlyResetMemory)
        return streams.removeValue(forKey: id) != nil
    }

    /// A WINDOW_UPDATE goes out. - Returns: the window it raised, or nil when the stream is gone (it is not sent).
    public mutating func windowUpdateSent(stream id: UInt32, increment: Int) -> Int? {
        if id == 0 {
            connectionReceiveWindow += increment
            return connectionReceiveWindow
        }
        guard var stream = streams[id], stream.half != .peerEnded else { return nil }
        stream.receiveWindow += increment
        streams[id] = stream
        return stream.receiveWindow
    }

    /// A GOAWAY goes out: streams the peer opens after its last stream are ignored, and this side opens none. A later GOAWAY may not name a
    /// higher one (RFC 9113 §6.8: the peer may retry what the first one left out). - Returns: the last stream it names.
    public mutating func goAwaySent(lastStream: UInt32) -> UInt32 {
        let last = min(goAwayLastStream ?? lastStream, lastStream)
        goAwayLastStream = last
        return last
    }
}

/// The last streams reset, remembered in order up to a bound.
struct RecentStreamIDs {
    private var order: [UInt32] = []
    private var next = 0
    private var members: Set<UInt32> = []

    func contains(_ id: UInt32) -> Bool { members.contains(id) }

    mutating func insert(_ id: UInt32, memory: Int) {
        guard memory > 0, members.insert(id).inserted else { return }
        if order.count < memory {
            order.append(id)
        } else {
            members.remove(order[next])
            order[next] = id
            next = (next + 1) % memory
        }
    }
}
