import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// One multiplexed HTTP/2 connection to an endpoint, on one event loop; each request is a stream. The pure
/// `HTTP2UpstreamConnectionStateMachine` decides; this shell opens, closes and times the connection and opens the
/// streams.
final class HTTP2EndpointConnection: UpstreamExchangeOwner {
    private let target: UpstreamTarget
    private let becameEmpty: (HTTP2EndpointConnection) -> Void
    private var machine = HTTP2UpstreamConnectionStateMachine()
    /// Requests waiting for the connection to open.
    private var waiting: [Int: any UpstreamLeaseRequester] = [:]
    /// Once it opened, until it closes.
    private var open: (channel: Channel, frames: HTTP2UpstreamConnection)?
    private var idleTimer: Scheduled<Void>?
    private var nextID = 0

    var key: String { target.key }
    private var eventLoop: any EventLoop { target.eventLoop }
    private var stats: ClusterStats { target.stats }

    init(target: UpstreamTarget, becameEmpty: @escaping (HTTP2EndpointConnection) -> Void) {
        self.target = target
        self.becameEmpty = becameEmpty
    }

    /// Streams open or promised (requests waiting for the connection to open); `Int.max` once it takes no more.
    var committedStreams: Int { machine.committedStreams }
    var peerMaxConcurrentStreams: Int { machine.peerMaxConcurrentStreams }

    func lease(for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        if let open, !open.channel.isActive {
            // Closed, and the pool has not heard yet: no stream can open on it.
            requester.upstreamLeaseFailed(.upstreamReset)
            return nil
        }
        nextID += 1
        let waiterID = nextID
        switch machine.leaseRequested(waiterID, reserveConnection: { target.connections.reserve() }) {
        case .openStream:
            if let open { openStream(on: open.frames, for: requester) }
            return nil
        case .overflow:
            // The cluster's connections are all taken.
            stats.overflowMaxConnections.increment()
            requester.upstreamLeaseFailed(.overflow)
            becameEmpty(self)
            return nil
        case .connect:
            waiting[waiterID] = requester
            connect()
        case .wait:
            waiting[waiterID] = requester
        }
        return LeaseTicket { [weak self] in
            guard let self, self.waiting.removeValue(forKey: waiterID) != nil else { return }
            self.machine.waiterCancelled(waiterID)
        }
    }

    /// Opens the connection (its cluster slot is taken).
    private func connect() {
        let frames = NIOLoopBound(HTTP2UpstreamConnection(scheme: target.tls == nil ? "http" : "https"), eventLoop: eventLoop)
        frames.value.goingAway = { [weak self] in self?.goingAway() }
        frames.value.streamLimitChanged = { [weak self] limit in self?.machine.maxConcurrentStreamsChanged(to: limit) }
        target.connect { channel in
            // A connection error (the codec sends GOAWAY) closes the connection, so the next request opens a new one.
            try channel.pipeline.syncOperations.addHandler(HTTP2Codec(.client, limits: .upstream, allocator: channel.allocator))
            try channel.pipeline.syncOperations.addHandler(frames.value)
        }.flatMap { channel in
            // The connect future completes before channelActive has gone down the pipeline, and the codec sends
            // the connection preface then: streams are opened once it has.
            channel.eventLoop.submit { channel }
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                self.connected(channel, frames: frames.value)
            case .failure:
                self.target.connections.connectFailed()
                let (failed, leavePool) = self.machine.connectFailed()
                for id in failed { self.waiting.removeValue(forKey: id)?.upstreamLeaseFailed(.connectFailure) }
                if leavePool { self.becameEmpty(self) }
            }
        }
    }

    private func connected(_ channel: Channel, frames: HTTP2UpstreamConnection) {
        target.connections.opened()
        open = (channel, frames)
        // Holds the connection (strongly) until its channel closes, after the pool may have let it go (a GOAWAY): its
        // streams' handlers hold it weakly as their owner, and a stream cut short must still be reset through it.
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            self.target.connections.closed()
            self.open = nil
            self.idleTimer?.cancel()
            self.idleTimer = nil
            if self.machine.closed() { self.becameEmpty(self) }
        }
        let (ready, idle) = machine.connected()
        for id in ready {
            if let requester = waiting.removeValue(forKey: id) { openStream(on: frames, for: requester) }
        }
        waiting.removeAll()
        apply(idle)
    }

    /// Leased at once: the stream is opened on the wire when the request's head is sent.
    private func openStream(on connection: HTTP2UpstreamConnection, for requester: any UpstreamLeaseRequester) {
        nextID += 1
        let handler = UpstreamExchangeHandler(id: nextID)
        handler.attach(connection.makeStream(for: handler))
        apply(machine.streamOpened())
        handler.owner = self
        requester.upstreamLeased(handler)
    }

    // MARK: UpstreamExchangeOwner

    /// A stream whose request and response both ended is closed by the protocol. Any other ending — an aborted
    /// exchange, an early response, a stream leased too late — resets it (a reset of a closed stream would count
    /// against us at the server: NIO's, after 200, ends the connection with GOAWAY ENHANCE_YOUR_CALM).
    func exchangeFinished(_ handler: UpstreamExchangeHandler, reusable: Bool, completedOnTheWire: Bool) {
        if !completedOnTheWire { handler.closeTransport() }
    }

    func exchangeClosed(_ handler: UpstreamExchangeHandler) {
        apply(machine.streamClosed())
    }

    /// A stream never carries a tunnel (`h2c` and HTTP/1.1 upgrades are not tunnelled over HTTP/2).
    func exchangeDetached(_ handler: UpstreamExchangeHandler) {}

    private func apply(_ action: HTTP2UpstreamConnectionStateMachine.IdleAction) {
        switch action {
        case .none:
            break
        case .cancelIdleTimer:
            idleTimer?.cancel()
            idleTimer = nil
        case .armIdleTimer:
            guard let channel = open?.channel else { return }
            idleTimer?.cancel()
            idleTimer = eventLoop.assumeIsolated().scheduleTask(in: target.idleTimeout) {
                channel.close(promise: nil)
            }
        case .close:
            open?.channel.close(promise: nil)
        }
    }

    func closeIfIdle() {
        if machine.isIdle { open?.channel.close(promise: nil) }
    }

    /// Its endpoint left: close once no stream is open.
    func retire() {
        apply(machine.retire())
    }

    /// The connection is going away (the upstream's GOAWAY, ours, or its stream ids running out): streams past the
    /// GOAWAY's last id were refused (and are sent again elsewhere), the others finish here, and new requests open a
    /// new connection.
    private func goingAway() {
        let (leavePool, idle) = machine.goAwayReceived()
        if leavePool { becameEmpty(self) }
        apply(idle)
    }
}

extension HTTP2Streams.Limits {
    /// What an upstream connection advertises: a 64 KiB window per stream (credit goes back as the downstream takes
    /// the bytes), response header blocks up to 64 KiB, and the last 1,024 streams reset remembered — a proxy resets
    /// many at once (a client that leaves takes all its streams' upstream streams with it), and frames the upstream
    /// sent before it saw a reset are ignored, not taken for a protocol error that ends the connection. The upstream
    /// opens no streams (push is off), so the stream limit is never used.
    static let upstream = Self(maxConcurrentStreams: 100, initialWindow: HTTP2UpstreamConnection.streamWindowTarget,
                               maxHeaderBlock: 64 * 1024, recentlyResetMemory: 1024)
}
