import NIOCore
import OutriggerCore
import Testing

/// Frames as bytes, for the decoder.
private func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
    var out = ByteBuffer()
    HTTP2FrameEncoder.writeHeader(payload.count, type: type, flags: flags, stream: stream, into: &out)
    out.writeBytes(payload)
    return Array(out.readableBytesView)
}

private let emptySettings = frame(HTTP2FrameKind.settings, stream: 0)

private func decoded(_ chunks: [[UInt8]], preface: Bool = true) throws -> [HTTP2FrameDecoder.Frame] {
    var decoder = HTTP2FrameDecoder(expectingPreface: preface)
    var frames: [HTTP2FrameDecoder.Frame] = []
    for chunk in chunks {
        decoder.append(ByteBuffer(bytes: chunk))
        while let frame = try decoder.next() { frames.append(frame) }
    }
    return frames
}

private func violation(_ body: () throws -> Void) -> HTTP2Violation? {
    do {
        try body()
        return nil
    } catch let error as HTTP2Violation {
        return error
    } catch {
        return nil
    }
}

@Suite("HTTP/2 frames cut from a server's bytes (RFC 9113 §4, §6)")
struct HTTP2FrameDecoderTests {
    @Test func thePrefaceThenFramesSplitAnywhere() throws {
        let bytes = HTTP2FrameKind.clientPreface + emptySettings
            + frame(HTTP2FrameKind.headers, flags: HTTP2FrameKind.endHeaders | HTTP2FrameKind.endStream, stream: 1, [0x82, 0x86])
            + frame(HTTP2FrameKind.ping, stream: 0, [0, 0, 0, 0, 0, 0, 0, 7])
        // Every split point gives the same frames.
        for cut in 1..<bytes.count {
            let frames = try decoded([Array(bytes[..<cut]), Array(bytes[cut...])])
            #expect(frames == [
                .settings([]),
                .headers(stream: 1, fragment: ByteBuffer(bytes: [0x82, 0x86]), endStream: true, endHeaders: true, dependsOn: nil),
                .ping(opaque: 7, ack: false),
            ], "cut at \(cut)")
        }
    }

    @Test func paddingAndPriorityAreTakenOff() throws {
        // DATA: pad length 2, "ab", 2 bytes of padding; the whole 5 bytes count against the windows.
        let data = frame(HTTP2FrameKind.data, flags: HTTP2FrameKind.padded | HTTP2FrameKind.endStream, stream: 3, [2, 0x61, 0x62, 0, 0])
        // HEADERS: pad length 1, a dependency on stream 3 with a weight, the block, 1 byte of padding.
        let headers = frame(HTTP2FrameKind.headers, flags: HTTP2FrameKind.padded | HTTP2FrameKind.priorityFlag, stream: 5,
                            [1, 0x80, 0, 0, 3, 16, 0x82, 0])
        let frames = try decoded([emptySettings + data + headers], preface: false)
        #expect(frames.dropFirst() == [
            .data(stream: 3, payload: ByteBuffer(bytes: [0x61, 0x62]), endStream: true, flowControlled: 5),
            .headers(stream: 5, fragment: ByteBuffer(bytes: [0x82]), endStream: false, endHeaders: false, dependsOn: 3),
        ])
    }

    @Test(arguments: [
        ("not the preface", Array("GET / HTTP/1.1\r\n\r\n".utf8) + Array(repeating: 0, count: 10), true, HTTP2Code.protocolError),
        ("DATA on stream 0", frame(HTTP2FrameKind.data, stream: 0, [1]), false, .protocolError),
        ("SETTINGS on a stream", frame(HTTP2FrameKind.settings, stream: 1), false, .protocolError),
        ("SETTINGS not a multiple of 6", frame(HTTP2FrameKind.settings, stream: 0, [0, 1, 0]), false, .frameSizeError),
        ("a SETTINGS ack with a payload", frame(HTTP2FrameKind.settings, flags: HTTP2FrameKind.ack, stream: 0, [0, 1, 0, 0, 0, 0]), false, .frameSizeError),
        ("PING of 7 bytes", frame(HTTP2FrameKind.ping, stream: 0, [0, 0, 0, 0, 0, 0, 0]), false, .frameSizeError),
        ("WINDOW_UPDATE of 3 bytes", frame(HTTP2FrameKind.windowUpdate, stream: 0, [0, 0, 1]), false, .frameSizeError),
        ("padding as long as the frame", frame(HTTP2FrameKind.data, flags: HTTP2FrameKind.padded, stream: 1, [3, 0, 0]), false, .protocolError),
        ("a frame over 16 KiB", frame(HTTP2FrameKind.data, stream: 1, Array(repeating: 0, count: 16_385)), false, .frameSizeError),
    ])
    func framesBrokenAloneAreConnectionErrors(_ name: String, bytes: [UInt8], preface: Bool, code: HTTP2Code) {
        let error = violation { _ = try decoded([bytes], preface: preface) }
        #expect(error?.code == code && error?.stream == nil, "\(name): \(String(describing: error))")
    }

    @Test func aLargeHeaderBlockGoesOutInContinuationFrames() throws {
        var out = ByteBuffer()
        let start = HTTP2FrameEncoder.startHeaders(into: &out)
        out.writeRepeatingByte(0x61, count: 40_000)
        HTTP2FrameEncoder.finishHeaders(startingAt: start, stream: 7, endStream: true, maxFrameSize: 16_384, in: &out)
        let frames = try decoded([Array(out.readableBytesView)], preface: false)
        #expect(frames.count == 3)
        #expect(frames.first == .headers(stream: 7, fragment: ByteBuffer(repeating: 0x61, count: 16_384), endStream: true, endHeaders: false, dependsOn: nil))
        #expect(frames.last == .continuation(stream: 7, fragment: ByteBuffer(repeating: 0x61, count: 40_000 - 2 * 16_384), endHeaders: true))
    }
}

@Suite("An HTTP/2 request's fields checked (RFC 9113 §8.2, §8.3)")
struct HTTP2FieldCheckTests {
    private static let base = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")]

    private func check(_ fields: [(String, String)], _ block: HTTP2FieldCheck.Block = .request, endStream: Bool = true) -> (String?, Int?) {
        var check = HTTP2FieldCheck(block)
        for (name, value) in fields { check.add(name: name, value: value) }
        return (check.finish(endStream: endStream), check.contentLength)
    }

    @Test func aPlainRequestIsWellFormed() {
        #expect(check(Self.base + [("accept", "*/*"), ("te", "trailers")]).0 == nil)
        #expect(check([(":method", "CONNECT"), (":authority", "a:443")]).0 == nil)
        #expect(check(Self.base + [("content-length", "10"), ("content-length", "10")], endStream: false) == (nil, 10))
        #expect(check(Self.base + [("content-length", "9223372036854775807")], endStream: false) == (nil, Int.max))
        #expect(check(Self.base + [("content-length", "0")]) == (nil, 0))
        #expect(check([("grpc-status", "0")], .trailers).0 == nil)
    }

    static let malformed: [(String, [(String, String)])] = [
        ("uppercase name", Self.base + [("X-Upper", "1")]),
        ("connection header", Self.base + [("connection", "keep-alive")]),
        ("te other than trailers", Self.base + [("te", "gzip")]),
        ("newline in value", Self.base + [("x-bad", "a\nb")]),
        ("nul in value", Self.base + [("x-bad", "a\u{0}b")]),
        ("transfer-encoding", Self.base + [("transfer-encoding", "chunked")]),
        ("upgrade", Self.base + [("upgrade", "h2c")]),
        ("keep-alive", Self.base + [("keep-alive", "timeout=5")]),
        ("proxy-connection", Self.base + [("proxy-connection", "close")]),
        ("no :path", [(":method", "GET"), (":scheme", "http")]),
        ("empty :path", [(":method", "GET"), (":scheme", "http"), (":path", "")]),
        ("no :method", [(":scheme", "http"), (":path", "/")]),
        ("two :method", Self.base + [(":method", "GET")]),
        ("pseudo after regular", [(":method", "GET"), ("x", "1"), (":scheme", "http"), (":path", "/")]),
        ("unknown pseudo", Self.base + [(":status", "200")]),
        ("CONNECT with a path", [(":method", "CONNECT"), (":authority", "a:443"), (":path", "/")]),
        ("a method that starts like CONNECT, without :scheme or :path", [(":method", "CONNECTS"), (":authority", "a:443")]),
        ("content-length not a number", Self.base + [("content-length", "1x")]),
        ("content-length with a sign", Self.base + [("content-length", "+0")]),
        ("an empty content-length", Self.base + [("content-length", "")]),
        ("content-length past Int.max", Self.base + [("content-length", "9223372036854775808")]),
        ("content-lengths differ", Self.base + [("content-length", "1"), ("content-length", "2")]),
        ("a body declared on a request that ended", Self.base + [("content-length", "3")]),
        ("a space in :path", [(":method", "GET"), (":scheme", "http"), (":path", "/a HTTP/1.1")]),
        ("a tab in :method", [(":method", "GET\t/x"), (":scheme", "http"), (":path", "/")]),
        ("DEL in :authority", [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a\u{7F}")]),
    ]

    @Test(arguments: Self.malformed)
    func malformedRequests(_ name: String, fields: [(String, String)]) {
        #expect(check(fields).0 != nil, "\(name)")
    }

    @Test func everyASCIIByteIsJudgedByItsRuleInNamesValuesAndPseudoFields() {
        let tokenPunctuation = Set("!#$%&'*+-.^_`|~".utf8)
        for byte in UInt8(0)...UInt8(127) {
            let character = String(UnicodeScalar(byte))
            let lowercaseToken = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || tokenPunctuation.contains(byte)
            #expect((check(Self.base + [("x" + character, "1")]).0 == nil) == lowercaseToken, "name byte \(byte)")
            let allowedInValue = byte != 0 && byte != 0x0A && byte != 0x0D
            #expect((check(Self.base + [("x", "a" + character + "b")]).0 == nil) == allowedInValue, "value byte \(byte)")
            let allowedInPseudo = byte > 0x20 && byte != 0x7F
            #expect((check([(":method", "GET"), (":scheme", "http"), (":path", "/" + character)]).0 == nil) == allowedInPseudo, "pseudo byte \(byte)")
        }
        #expect(check(Self.base + [("x-é", "1")]).0 != nil, "a name beyond ASCII")
        #expect(check(Self.base + [("x", "é\u{80}ÿ")]).0 == nil, "values and pseudo-fields may carry bytes beyond ASCII")
        #expect(check([(":method", "GET"), (":scheme", "http"), (":path", "/é")]).0 == nil)
        // Names as long as the ones with rules of their own, but not them.
        #expect(check(Self.base + [("tf", "gzip"), ("upgradf", "x"), ("connectiom", "x"), ("content-lengtx", "x1")]).0 == nil)
    }

    @Test func trailersCarryNoPseudoFields() {
        #expect(check([(":path", "/")], .trailers).0 != nil)
    }

    @Test func aResponseHasAThreeDigitStatusAndNoOtherPseudoField() {
        var informational = HTTP2FieldCheck(.response)
        informational.add(name: ":status", value: "103")
        informational.add(name: "link", value: "</a.css>")
        #expect(informational.finish(endStream: false) == nil && informational.status == 103)
        #expect(check([(":status", "200"), ("content-length", "5")], .response, endStream: false) == (nil, 5))
        // Whether a response that ends with its head may declare content is the stream's to say (it knows the request).
        #expect(check([(":status", "200"), ("content-length", "5")], .response, endStream: true).0 == nil)
        let malformed: [[(String, String)]] = [
            [], [("server", "x")], [(":status", "200"), (":status", "200")], [(":status", "20")], [(":status", "2000")],
            [(":status", "abc")], [(":status", "099")], [(":status", "101")], [(":status", "200"), (":path", "/")],
            [("server", "x"), (":status", "200")], [(":status", "200"), ("Server", "x")], [(":status", "200"), ("connection", "close")],
            [(":status", "200"), ("content-length", "x")],
        ]
        for fields in malformed { #expect(check(fields, .response, endStream: false).0 != nil, "\(fields)") }
    }
}

@Suite("A server's HTTP/2 connection state (RFC 9113 §5, §6.9)")
struct HTTP2StreamsTests {
    private func opened(_ limits: HTTP2Streams.Limits = .init(), streams ids: [UInt32] = [1], endStream: Bool = false) throws -> HTTP2Streams {
        var state = HTTP2Streams(limits: limits)
        try state.arriving(.settings([]))
        _ = try state.settings([])
        for id in ids {
            let block = try state.headers(stream: id, fragment: ByteBuffer(), endStream: endStream, endHeaders: true, dependsOn: nil)
            #expect(block == .request(stream: id, block: ByteBuffer(), endStream: endStream))
            state.requestAccepted(stream: id, endStream: endStream, contentLength: nil)
        }
        return state
    }

    @Test func theFirstFrameMustBeSettingsAndAHeaderBlockMayNotBeSplit() throws {
        var fresh = HTTP2Streams()
        #expect(violation { try fresh.arriving(.ping(opaque: 1, ack: false)) } == .connection(.protocolError, "the peer's first frame is not SETTINGS"))
        var state = try opened(streams: [])
        let firstPart = try state.headers(stream: 1, fragment: ByteBuffer(bytes: [1]), endStream: true, endHeaders: false, dependsOn: nil)
        #expect(firstPart == .incomplete)
        #expect(violation { try state.arriving(.ping(opaque: 1, ack: false)) }?.code == .protocolError)
        try state.arriving(.continuation(stream: 1, fragment: ByteBuffer(bytes: [2]), endHeaders: true))
        let wholeBlock = try state.continuation(fragment: ByteBuffer(bytes: [2]), endHeaders: true)
        #expect(wholeBlock == .request(stream: 1, block: ByteBuffer(bytes: [1, 2]), endStream: true))
    }

    @Test func streamIdsRiseAndOddOnly() throws {
        var state = try opened(streams: [5])
        #expect(violation { _ = try state.headers(stream: 3, fragment: ByteBuffer(), endStream: true, endHeaders: true, dependsOn: nil) }?.code == .streamClosed)
        // Even ids are a server's, which pushes nothing: idle, whatever their number.
        #expect(violation { _ = try state.headers(stream: 4, fragment: ByteBuffer(), endStream: true, endHeaders: true, dependsOn: nil) }?.code == .protocolError)
        #expect(violation { _ = try state.headers(stream: 6, fragment: ByteBuffer(), endStream: true, endHeaders: true, dependsOn: nil) }?.code == .protocolError)
        #expect(violation { _ = try state.data(stream: 7, payloadBytes: 1, flowControlled: 1, endStream: false) } == .connection(.protocolError, "DATA on the idle stream 7"))
        #expect(state.lastPeerStream == 5)
    }

    @Test func streamsPastTheLimitAreRefusedAndAfterAGoAwayIgnored() throws {
        var state = try opened(.init(maxConcurrentStreams: 2), streams: [1, 3])
        let thirdStream = try state.headers(stream: 5, fragment: ByteBuffer(), endStream: true, endHeaders: true, dependsOn: nil)
        #expect(thirdStream == .discard(block: ByteBuffer(), reset: .init(stream: 5, code: .refusedStream)))
        state.resetSent(stream: 5)
        let named = state.goAwaySent(lastStream: 5)
        let namedLater = state.goAwaySent(lastStream: 9)
        #expect(named == 5 && namedLater == 5, "a later GOAWAY names no higher stream")
        let clientReset = try state.rstStream(stream: 1)
        state.resetSent(stream: 3)
        let afterGoAway = try state.headers(stream: 7, fragment: ByteBuffer(), endStream: true, endHeaders: true, dependsOn: nil)
        #expect(clientReset && afterGoAway == .discard(block: ByteBuffer(), reset: nil))
        // A late frame of a stream this side reset is ignored, not an error; the client sends nothing after its own reset.
        let lateData = try state.data(stream: 3, payloadBytes: 1, flowControlled: 1, endStream: false)
        #expect(lateData == .ignore)
        #expect(violation { _ = try state.data(stream: 1, payloadBytes: 1, flowControlled: 1, endStream: false) }?.code == .streamClosed)
    }

    @Test func dataIsHeldToTheWindowsAndTheContentLength() throws {
        var state = HTTP2Streams(limits: .init(initialWindow: 100))
        try state.arriving(.settings([]))
        _ = try state.headers(stream: 1, fragment: ByteBuffer(), endStream: false, endHeaders: true, dependsOn: nil)
        state.requestAccepted(stream: 1, endStream: false, contentLength: 150)
        let withinWindow = try state.data(stream: 1, payloadBytes: 90, flowControlled: 90, endStream: false)
        #expect(withinWindow == .deliver(closesStream: false))
        #expect(state.receiveWindow(of: 1) == 10)
        #expect(violation { _ = try state.data(stream: 1, payloadBytes: 20, flowControlled: 20, endStream: false) }?.code == .flowControlError)
        var second = HTTP2Streams(limits: .init(initialWindow: 1000))
        try second.arriving(.settings([]))
        _ = try second.headers(stream: 1, fragment: ByteBuffer(), endStream: false, endHeaders: true, dependsOn: nil)
        second.requestAccepted(stream: 1, endStream: false, contentLength: 10)
        #expect(violation { _ = try second.data(stream: 1, payloadBytes: 3, flowControlled: 3, endStream: true) }?.stream == 1)
        // The connection's window (65,535 until this side raises it) is a connection error.
        var third = try opened(streams: [1])
        #expect(violation { _ = try third.data(stream: 1, payloadBytes: 70_000, flowControlled: 70_000, endStream: false) }?.code == .flowControlError)
        let raised = third.windowUpdateSent(stream: 0, increment: 10_000)
        #expect(raised != nil)
    }

    @Test func aStreamClosesWhenBothSidesEnded() throws {
        var state = try opened(streams: [1, 3])
        let requestEnded = try state.data(stream: 1, payloadBytes: 1, flowControlled: 1, endStream: true)
        #expect(requestEnded == .deliver(closesStream: false))
        #expect(violation { _ = try state.data(stream: 1, payloadBytes: 1, flowControlled: 1, endStream: false) }?.code == .streamClosed)
        let closedByResponse = state.headersSent(stream: 1, endStream: true)
        #expect(closedByResponse)
        #expect(!state.canSend(on: 1))
        // This side ends first: the client's END_STREAM closes it.
        let closedEarly = state.headersSent(stream: 3, endStream: true)
        #expect(!closedEarly)
        let closedByRequest = try state.data(stream: 3, payloadBytes: 0, flowControlled: 0, endStream: true)
        #expect(closedByRequest == .deliver(closesStream: true))
        #expect(state.openStreams == 0)
    }

    @Test func sendingIsBoundByBothWindowsAndTheFrameSize() throws {
        var state = try opened(streams: [1, 3])
        #expect(state.sendable(on: 1) == 16_384)
        _ = state.dataSent(stream: 1, bytes: 60_000, endStream: false)
        #expect(state.sendable(on: 1) == 5_535)
        _ = state.dataSent(stream: 3, bytes: 5_535, endStream: false)
        #expect(state.sendable(on: 1) == 0, "the connection's window is spent")
        let grew = try state.windowUpdate(stream: 0, increment: 100_000)
        #expect(grew)
        #expect(state.sendable(on: 1) == 5_535)
        // SETTINGS_INITIAL_WINDOW_SIZE moves every open stream's window by the difference.
        let change = try state.settings([.init(id: HTTP2SettingID.initialWindowSize, value: 165_535), .init(id: HTTP2SettingID.maxFrameSize, value: 1 << 20)])
        #expect(change.windowsGrew)
        #expect(state.sendable(on: 1) == 100_000, "the connection's window bounds it now")
        #expect(violation { _ = try state.windowUpdate(stream: 1, increment: Int(Int32.max)) }?.stream == 1)
        #expect(violation { _ = try state.windowUpdate(stream: 0, increment: 0) }?.code == .protocolError)
        #expect(violation { _ = try state.settings([.init(id: HTTP2SettingID.maxFrameSize, value: 100)]) }?.code == .protocolError)
        #expect(violation { _ = try state.settings([.init(id: HTTP2SettingID.initialWindowSize, value: 1 << 31)]) }?.code == .flowControlError)
    }

    @Test func trailersEndTheStreamOrAreMalformed() throws {
        var state = try opened(streams: [1, 3])
        let trailers = try state.headers(stream: 1, fragment: ByteBuffer(), endStream: true, endHeaders: true, dependsOn: nil)
        #expect(trailers == .trailers(stream: 1, block: ByteBuffer()))
        let closed = try state.trailersReceived(stream: 1)
        #expect(closed == false)
        let unended = try state.headers(stream: 3, fragment: ByteBuffer(), endStream: false, endHeaders: true, dependsOn: nil)
        #expect(unended
            == .discard(block: ByteBuffer(), reset: .init(stream: 3, code: .protocolError)))
    }

    @Test func resetsAreRememberedUpToTheirBound() throws {
        var state = try opened(.init(recentlyResetMemory: 2), streams: [1, 3, 5])
        state.resetSent(stream: 1)
        state.resetSent(stream: 3)
        state.resetSent(stream: 5)
        // 1 is forgotten: a DATA frame for it is a stream error again; 3 and 5 are ignored.
        #expect(violation { _ = try state.data(stream: 1, payloadBytes: 1, flowControlled: 1, endStream: false) }?.code == .streamClosed)
        let lateData = try state.data(stream: 3, payloadBytes: 1, flowControlled: 1, endStream: false)
        #expect(lateData == .ignore)
        let wasOpen = try state.rstStream(stream: 5)
        #expect(wasOpen == false)
    }
}

@Suite("HTTP/2 flood guard")
struct HTTP2FloodGuardTests {
    @Test func theBudgetIsPerPeriod() {
        var guardian = HTTP2FloodGuard(budget: 3, periodNanoseconds: 1000)
        let spent = [0, 10, 999, 999].map { guardian.counted(now: $0) }
        #expect(spent == [false, false, false, true], "the fourth within the period is one too many")
        // A new period starts the count again.
        var later = HTTP2FloodGuard(budget: 3, periodNanoseconds: 1000)
        let counts = [0, 1, 2, 1000, 1500, 1600].map { later.counted(now: $0) }
        #expect(counts == [false, false, false, false, false, false])
    }
}

@Suite("A client's HTTP/2 connection state (RFC 9113 §5, §8.1)")
struct HTTP2ClientStreamsTests {
    /// A client's connection with the server's SETTINGS read, and requests sent on `ids` (whole, ended with their head).
    private func sent(_ ids: [UInt32] = [1], headRequest: Bool = false) throws -> HTTP2Streams {
        var state = HTTP2Streams(.client)
        try state.arriving(.settings([]))
        _ = try state.settings([])
        for id in ids {
            #expect(state.requestStarting(stream: id, headRequest: headRequest) == .opened)
            _ = state.headersSent(stream: id, endStream: true)
        }
        return state
    }

    private func block(_ state: inout HTTP2Streams, _ id: UInt32, endStream: Bool) throws -> HTTP2Streams.HeaderBlock {
        try state.headers(stream: id, fragment: ByteBuffer(), endStream: endStream, endHeaders: true, dependsOn: nil)
    }

    @Test func itOpensOddStreamsInOrderAndTheServerOpensNone() throws {
        let settings = HTTP2Streams(.client).initialSettings
        #expect(settings.contains(.init(id: HTTP2SettingID.enablePush, value: 0)))
        #expect(!settings.contains { $0.id == HTTP2SettingID.maxConcurrentStreams })
        var state = try sent([1, 5])
        #expect(state.requestStarting(stream: 5, headRequest: false) == .notNew, "trailers' HEADERS open nothing")
        #expect(state.requestStarting(stream: 3, headRequest: false) == .notNew)
        #expect(state.requestStarting(stream: 8, headRequest: false) == .notNew)
        // The server opens nothing: a stream past this side's last, or an even one, is idle.
        #expect(violation { _ = try block(&state, 7, endStream: false) }?.code == .protocolError)
        #expect(violation { _ = try block(&state, 2, endStream: false) }?.code == .protocolError)
        #expect(violation { _ = try state.data(stream: 9, payloadBytes: 1, flowControlled: 1, endStream: false) }?.code == .protocolError)
        #expect(violation { _ = try state.rstStream(stream: 7) }?.code == .protocolError)
        #expect(state.lastPeerStream == 0 && state.openStreams == 2)
    }

    @Test func aResponseIsInformationalHeadsThenTheFinalOneThenItsBodyAndTrailers() throws {
        var state = try sent([1])
        #expect(try block(&state, 1, endStream: false) == .response(stream: 1, block: ByteBuffer(), endStream: false))
        let afterInformational = try state.responseAccepted(stream: 1, status: 103, endStream: false, contentLength: nil)
        #expect(!afterInformational)
        #expect(violation { _ = try state.data(stream: 1, payloadBytes: 1, flowControlled: 1, endStream: false) } == .stream(1, .protocolError, "DATA before the response's head"))
        #expect(try block(&state, 1, endStream: false) == .response(stream: 1, block: ByteBuffer(), endStream: false))
        let afterFinal = try state.responseAccepted(stream: 1, status: 200, endStream: false, contentLength: 5)
        #expect(!afterFinal)
        let body = try state.data(stream: 1, payloadBytes: 5, flowControlled: 5, endStream: false)
        #expect(body == .deliver(closesStream: false))
        // After the final head, a header block is trailers, and must end the stream.
        #expect(try block(&state, 1, endStream: false) == .discard(block: ByteBuffer(), reset: .init(stream: 1, code: .protocolError)))
        var again = try sent([1])
        _ = try block(&again, 1, endStream: false)
        _ = try again.responseAccepted(stream: 1, status: 200, endStream: false, contentLength: nil)
        #expect(try block(&again, 1, endStream: true) == .trailers(stream: 1, block: ByteBuffer()))
        let closed = try again.trailersReceived(stream: 1)
        #expect(closed && again.openStreams == 0)
    }

    @Test func aResponseIsHeldToItsContentLengthUnlessItHasNoContent() throws {
        var state = try sent([1, 3, 5, 7])
        #expect(violation { _ = try state.responseAccepted(stream: 1, status: 100, endStream: true, contentLength: nil) }?.stream == 1)
        #expect(violation { _ = try state.responseAccepted(stream: 3, status: 200, endStream: true, contentLength: 10) }?.stream == 3)
        // 204 and 304 have no content, whatever content-length says.
        let noContent = try state.responseAccepted(stream: 5, status: 304, endStream: true, contentLength: 10)
        #expect(noContent)
        _ = try state.responseAccepted(stream: 7, status: 200, endStream: false, contentLength: 2)
        #expect(violation { _ = try state.data(stream: 7, payloadBytes: 3, flowControlled: 3, endStream: false) }?.stream == 7)
        var head = try sent([1, 3], headRequest: true)
        let headAnswered = try head.responseAccepted(stream: 1, status: 200, endStream: true, contentLength: 1000)
        #expect(headAnswered, "a HEAD request's response has no content")
        // Nor may it have any: bytes there would reach an HTTP/1.1 client as the start of its next response.
        _ = try head.responseAccepted(stream: 3, status: 200, endStream: false, contentLength: 5)
        #expect(violation { _ = try head.data(stream: 3, payloadBytes: 5, flowControlled: 5, endStream: true) }?.stream == 3)
        var notModified = try sent([1])
        _ = try notModified.responseAccepted(stream: 1, status: 304, endStream: false, contentLength: 5)
        let empty = try notModified.data(stream: 1, payloadBytes: 0, flowControlled: 0, endStream: true)
        #expect(empty == .deliver(closesStream: true))
    }

    @Test func requestsPastThePeersStreamLimitWaitInOrder() throws {
        var state = try sent([])
        _ = try state.settings([.init(id: HTTP2SettingID.maxConcurrentStreams, value: 2)])
        #expect(state.requestStarting(stream: 1, headRequest: false) == .opened)
        #expect(state.requestStarting(stream: 3, headRequest: false) == .opened)
        #expect(state.requestStarting(stream: 5, headRequest: false) == .wait)
        #expect(!state.waitingRequestMayStart)
        _ = try state.rstStream(stream: 1)
        #expect(state.waitingRequestMayStart)
        #expect(state.requestStarting(stream: 5, headRequest: false) == .opened)
        // After a GOAWAY either way, a request waiting starts only to be refused.
        #expect(state.requestStarting(stream: 7, headRequest: false) == .wait)
        _ = state.goAwaySent(lastStream: 0)
        #expect(state.waitingRequestMayStart && state.requestStarting(stream: 7, headRequest: false) == .refused)
        #expect(HTTP2Streams(.client).peerMaxConcurrentStreams == 100, "NIO's assumption until the peer says")
    }

    @Test func streamIdsRunOutWithWarning() {
        var ids = HTTP2ClientStreamIDs(first: HTTP2ClientStreamIDs.last - 6, reserve: 2)
        var taken: [UInt32] = []
        var warnings: [UInt32] = []
        while let (id, runningOut) = ids.take() {
            taken.append(id)
            if runningOut { warnings.append(id) }
        }
        #expect(taken == [2_147_483_641, 2_147_483_643, 2_147_483_645, 2_147_483_647])
        #expect(warnings == [2_147_483_645], "told once, while the reserve is left")
        var fresh = HTTP2ClientStreamIDs()
        #expect(fresh.take()! == (1, false) && fresh.take()! == (3, false))
    }

    @Test func aGoAwayClosesTheStreamsPastItsLastAndOpensNoMore() throws {
        var state = try sent([1, 3, 5, 7])
        #expect(state.goAwayReceived(lastStream: 3) == [5, 7])
        #expect(state.requestStarting(stream: 9, headRequest: false) == .refused)
        #expect(!state.canSend(on: 5) && state.openStreams == 2)
        // Those at or before its last stream finish.
        #expect(try block(&state, 3, endStream: true) == .response(stream: 3, block: ByteBuffer(), endStream: true))
        #expect(state.goAwayReceived(lastStream: 0) == [1, 3])
    }

    @Test func aServerMayNotPush() throws {
        var state = try sent([])
        // RFC 9113 lets a server say only 0, but RFC 7540's said 1: taken, and push stays off.
        _ = try state.settings([.init(id: HTTP2SettingID.enablePush, value: 1)])
        #expect(violation { _ = try state.settings([.init(id: HTTP2SettingID.enablePush, value: 2)]) }?.code == .protocolError)
        let limited = try state.settings([.init(id: HTTP2SettingID.enablePush, value: 0), .init(id: HTTP2SettingID.maxConcurrentStreams, value: 7)])
        #expect(limited.maxConcurrentStreams == 7)
        #expect(violation { try state.pushPromise() } == .connection(.protocolError, "PUSH_PROMISE, though push is off"))
    }

    @Test func itsResetsLateFramesAreIgnored() throws {
        var state = try sent([1, 3])
        state.resetSent(stream: 1)
        #expect(try block(&state, 1, endStream: false) == .discard(block: ByteBuffer(), reset: nil))
        let lateData = try state.data(stream: 1, payloadBytes: 4, flowControlled: 4, endStream: true)
        #expect(lateData == .ignore)
        // A stream that closed cleanly is not reset: HEADERS on it end the connection.
        _ = try block(&state, 3, endStream: true)
        _ = try state.responseAccepted(stream: 3, status: 200, endStream: true, contentLength: nil)
        #expect(violation { _ = try block(&state, 3, endStream: true) }?.code == .streamClosed)
    }
}
