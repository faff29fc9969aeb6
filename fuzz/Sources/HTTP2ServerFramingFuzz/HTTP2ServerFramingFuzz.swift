import NIOCore
import OutriggerCore

// One input: the first byte says where the bytes are cut; the rest is what an HTTP/2 client sent after its preface
// and an empty SETTINGS. Checked, and a crash when broken:
// - the frame decoder never traps, and reads the same frames (or the same violation) whole and cut in two;
// - the connection's state never traps, and holds: no DATA may go past a frame's size, no more streams are open
//   than advertised, and a violation ends the run as the codec ends a connection (a stream error resets the stream
//   and reading goes on).

/// Every frame the decoder cuts from `chunks`, and the violation that stopped it, if one did.
func frames(_ chunks: [ArraySlice<UInt8>]) -> ([HTTP2FrameDecoder.Frame], HTTP2Violation?) {
    var decoder = HTTP2FrameDecoder()
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
/// the codec's).
func drive(_ frames: [HTTP2FrameDecoder.Frame]) {
    let limits = HTTP2ServerStreams.Limits(maxConcurrentStreams: 8, initialWindow: 1 << 16, maxHeaderBlock: 4096, recentlyResetMemory: 4)
    var state = HTTP2ServerStreams(limits: limits)
    func opened(_ block: HTTP2ServerStreams.HeaderBlock) throws(HTTP2Violation) {
        switch block {
        case let .request(id, _, endStream):
            state.requestAccepted(stream: id, endStream: endStream, contentLength: endStream ? nil : 16)
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
                // Credit back, and an answer on the stream: both sides' bookkeeping moves.
                _ = state.windowUpdateSent(stream: 0, increment: flowControlled)
                let room = state.sendable(on: id)
                precondition(room >= 0 && room <= state.peerMaxFrameSize, "DATA past a frame's size")
                _ = state.dataSent(stream: id, bytes: room / 2, endStream: room % 2 == 1)
            case let .headers(id, fragment, endStream, endHeaders, dependsOn):
                try opened(try state.headers(stream: id, fragment: fragment, endStream: endStream, endHeaders: endHeaders, dependsOn: dependsOn))
                _ = state.headersSent(stream: id, endStream: id % 4 == 1)
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
            case .settingsAck, .ping, .goAway, .unknown:
                break
            }
        } catch {
            guard let stream = error.stream else { return }
            state.resetSent(stream: stream)
        }
        precondition(state.openStreams <= limits.maxConcurrentStreams, "more streams open than advertised")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    guard let first = input.first else { return 0 }
    let sent = HTTP2FrameKind.clientPreface + [0, 0, 0, HTTP2FrameKind.settings, 0, 0, 0, 0, 0] + input.dropFirst()
    let cut = min(Int(first) * 4, sent.count)
    let whole = frames([sent[...]])
    let split = frames([sent[..<cut], sent[cut...]])
    precondition(whole.0 == split.0 && whole.1 == split.1, "the frames differ when the bytes are cut at \(cut)")
    drive(whole.0)
    return 0
}
