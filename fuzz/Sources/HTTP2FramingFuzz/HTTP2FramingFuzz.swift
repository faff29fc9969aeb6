import NIOCore
import OutriggerCore

// One input: the first byte's low bit says which side reads (0: a server, reading what a client sent after its
// preface and an empty SETTINGS; 1: a client with four requests out, reading what a server sent after an empty
// SETTINGS), its other bits where the bytes are cut; the rest is the peer's bytes. Checked, and a crash when broken:
// - the frame decoder never traps, and reads the same frames (or the same violation) whole and cut in two;
// - the connection's state never traps, and holds: no DATA may go past a frame's size, no more streams are open
//   than a server advertised or a client opened, and a violation ends the run as the codec ends a connection (a
//   stream error resets the stream and reading goes on).

/// Every frame the decoder cuts from `chunks`, and the violation that stopped it, if one did.
func frames(_ chunks: [ArraySlice<UInt8>], preface: Bool) -> ([HTTP2FrameDecoder.Frame], HTTP2Violation?) {
    var decoder = HTTP2FrameDecoder(expectingPreface: preface)
    var frames: [HTTP2FrameDecoder.Frame] = []
    do {
        for chunk in chunks {
            decoder.append(ByteBuffer(bytes: chunk))
            while let frame = try decoder.next() { frames.append(frame) }
        }
    } catch {
        return (frames, error)
    }
    return (frames, nil)
}

/// The frames through the connection's state as the codec puts them (header blocks taken as well formed: HPACK is
/// the codec's; a response's status and content-length made up from its stream id).
func drive(_ frames: [HTTP2FrameDecoder.Frame], as role: HTTP2Streams.Role) {
    let limits = HTTP2Streams.Limits(maxConcurrentStreams: 8, initialWindow: 1 << 16, maxHeaderBlock: 4096, recentlyResetMemory: 4)
    var state = HTTP2Streams(role, limits: limits)
    let requestsSent: [UInt32] = role == .client ? [1, 3, 5, 7] : []
    for id in requestsSent {
        precondition(state.requestStarting(stream: id, headRequest: id == 7) == .opened)
        _ = state.headersSent(stream: id, endStream: id != 3)
    }
    func opened(_ block: HTTP2Streams.HeaderBlock) throws(HTTP2Violation) {
        switch block {
        case let .request(id, _, endStream):
            state.requestAccepted(stream: id, endStream: endStream, contentLength: endStream ? nil : 16)
        case let .response(id, _, endStream):
            _ = try state.responseAccepted(stream: id, status: id == 1 ? 103 : 200, endStream: endStream, contentLength: id == 5 ? 16 : nil)
        case let .trailers(id, _):
            _ = try state.trailersReceived(stream: id)
        case let .discard(_, reset?):
            throw .stream(reset.stream, reset.code, "refused")
        case .incomplete, .discard:
            break
        }
    }
    for frame in frames {
        do {
            try state.arriving(frame)
            switch frame {
            case let .data(id, payload, endStream, flowControlled):
                _ = try state.data(stream: id, payloadBytes: payload.readableBytes, flowControlled: flowControlled, endStream: endStream)
                // Credit back, and more sent on the stream: both sides' bookkeeping moves.
                _ = state.windowUpdateSent(stream: 0, increment: flowControlled)
                let room = state.sendable(on: id)
                precondition(room >= 0 && room <= state.peerMaxFrameSize, "DATA past a frame's size")
                _ = state.dataSent(stream: id, bytes: room / 2, endStream: room % 2 == 1)
            case let .headers(id, fragment, endStream, endHeaders, dependsOn):
                try opened(try state.headers(stream: id, fragment: fragment, endStream: endStream, endHeaders: endHeaders, dependsOn: dependsOn))
                if role == .server { _ = state.headersSent(stream: id, endStream: id % 4 == 1) }
            case let .continuation(_, fragment, endHeaders):
                try opened(try state.continuation(fragment: fragment, endHeaders: endHeaders))
            case let .priority(id, dependsOn):
                try state.priority(stream: id, dependsOn: dependsOn)
            case let .rstStream(id, _):
                _ = try state.rstStream(stream: id)
            case .settings(let settings):
                _ = try state.settings(settings)
            case let .windowUpdate(id, increment):
                _ = try state.windowUpdate(stream: id, increment: increment)
            case .pushPromise:
                try state.pushPromise()
            case let .goAway(lastStream, _):
                for id in state.goAwayReceived(lastStream: lastStream) { precondition(id > lastStream && id % 2 == 1, "a stream kept by the GOAWAY closed") }
            case .settingsAck, .ping, .unknown:
                break
            }
        } catch {
            guard let stream = error.stream else { return }
            state.resetSent(stream: stream)
        }
        precondition(state.openStreams <= (role == .server ? limits.maxConcurrentStreams : requestsSent.count), "more streams open than allowed")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    guard let first = input.first else { return 0 }
    let role: HTTP2Streams.Role = first & 1 == 1 ? .client : .server
    let preface = role == .server ? HTTP2FrameKind.clientPreface : []
    let sent = preface + [0, 0, 0, HTTP2FrameKind.settings, 0, 0, 0, 0, 0] + input.dropFirst()
    let cut = min(Int(first >> 1) * 8, sent.count)
    let whole = frames([sent[...]], preface: role == .server)
    let split = frames([sent[..<cut], sent[cut...]], preface: role == .server)
    precondition(whole.0 == split.0 && whole.1 == split.1, "the frames differ when the bytes are cut at \(cut)")
    drive(whole.0, as: role)
    return 0
}
