import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS
import OutriggerConfig
import OutriggerCore

/// Per-event-loop state, found by event loop. Built once at start; each value is touched only on its loop.
final class EventLoopLocals: Sendable {
    /// `@unchecked`: each state is created before its loop serves traffic and is used only on that loop
    /// afterwards (asserted in debug builds).
    private struct Owned: @unchecked Sendable {
        let state: LoopLocalState
        let eventLoop: any EventLoop
    }

    private let states: [ObjectIdentifier: Owned]

    init(group: any EventLoopGroup, accessLogs: AccessLogSinks, spans: SpanExporter, tlsContexts: UpstreamTLSContexts) {
        var states: [ObjectIdentifier: Owned] = [:]
        let loops = Array(group.makeIterator())
        for (index, loop) in loops.enumerated() {
            let state = LoopLocalState(eventLoop: loop, loopIndex: index, loopCount: loops.count, accessLogs: accessLogs, spans: spans, tlsContexts: tlsContexts)
            states[ObjectIdentifier(loop)] = Owned(state: state, eventLoop: loop)
        }
        self.states = states
    }

    func state(for loop: any EventLoop) -> LoopLocalState {
        loop.assertInEventLoop()
        return states[ObjectIdentifier(loop)]!.state
    }

    func forEach(_ body: @escaping @Sendable (LoopLocalState) -> Void) {
        for owned in states.values {
            owned.eventLoop.execute { body(owned.state) }
        }
    }

    /// Runs `body` on every loop with its state, and returns when all have.
    func forEachAndWait(_ body: @escaping @Sendable (LoopLocalState) -> Void) async {
        for owned in states.values {
            try? await owned.eventLoop.submit { body(owned.state) }.get()
        }
    }
}
