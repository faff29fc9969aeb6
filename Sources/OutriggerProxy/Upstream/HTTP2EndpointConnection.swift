import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// One multiplexed HTTP/2 connection to an endpoint, on one event loop; each request is a stream.
final class HTTP2EndpointConnection {
    private let target: UpstreamTarget
    private let becameEmpty: (HTTP2EndpointConnection) -> Void

    private enum State {
        case disconnected
        case connecting([Int: any UpstreamLeaseRequester])
        case ready(Channel, HTTP2UpstreamConnection)
    }

    private var state: State = .disconnected
    private var activeStreams = 0
    /// The upstream's SETTINGS_MAX_CONCURRENT_STREAMS; until its SETTINGS arrive, 100 (RFC 9113's advised minimum;
    /// the protocol's own initial value is unlimited).
    private(set) var peerMaxConcurrentStreams = 100
    /// Its endpoint left: the connection closes once no stream is open.
    private var retired = false
    private var idleTimer: Scheduled<Void>?
    private var nextID = 0
    /// The upstream sent GOAWAY: streams past this id were not processed.
    private var goAwayLastStreamID: HTTP2StreamID?

    var key: String { target.key }
    private var eventLoop: any EventLoop { target.eventLoop }
    private var stats: ClusterStats { target.stats }
    private var limits: ClusterLimits { target.limits }

    init(target: UpstreamTarget, becameEmpty: @escaping (HTTP2EndpointConnection) -> Void) {
        self.target = target
        self.becameEmpty = becameEmpty
    }

    /// Streams open or promised (requests waiting for the connection to open); `Int.max` once it takes no more.
    var committedStreams: Int {
        if retired || goAwayLastStreamID != nil { return .max }
        switch state {
        case .disconnected: return .max
        case .connecting(let waiting): return waiting.count
        case .ready: return activeStreams
        }
    }

    func lease(for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        nextID += 1
        let waiterID = nextID
        switch state {
        case .ready(let channel, let connection):
            guard channel.isActive else {
                // Closed, and the pool has not heard yet: no stream can open on it.
                requester.upstreamLeaseFailed(.upstreamReset)
                return nil
            }
            return openStream(on: connection, for: requester)
        case .connecting(var waiting):
            waiting[waiterID] = requester
            state = .connecting(waiting)
        case .disconnected:
            state = .connecting([waiterID: requester])
            connect()
        }
        return LeaseTicket { [weak self] in
            guard let self, case .connecting(var waiting) = self.state else { return }
            waiting[waiterID] = nil
            self.state = .connecting(waiting)
        }
    }

    private func connect() {
        guard stats.connectionSlots.increment(below: limits.maxConnections) else {
            // The cluster's connections are all taken: the requests waiting for this one overflow.
            guard case .connecting(let waiting) = state else { return }
            state = .disconnected
            for requester in waiting.values {
                stats.overflowMaxConnections.increment()
                requester.upstreamLeaseFailed(.overflow)
            }
            becameEmpty(self)
            return
        }
        let frames = NIOLoopBound(HTTP2UpstreamConnection(scheme: target.tls == nil ? "http" : "https"), eventLoop: eventLoop)
        frames.value.goAwayReceived = { [weak self] lastStreamID in self?.goAwayReceived(lastStreamID: lastStreamID) }
        frames.value.maxConcurrentStreamsChanged = { [weak self] limit in self?.peerMaxConcurrentStreams = limit }
        target.connect { channel in
            // A connection error (we sent GOAWAY) closes the connection, so the next request opens a new one.
            try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionErrorCloser())
            var configuration = NIOHTTP2Handler.ConnectionConfiguration.proxyConnection
            // No server push: a proxy has no use for it.
            configuration.initialSettings = nioDefaultSettings + [HTTP2Setting(parameter: .enablePush, value: 0)]
            try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .client, connectionConfiguration: configuration, streamConfiguration: .init()))
            try channel.pipeline.syncOperations.addHandler(frames.value)
        }.flatMap { channel in
            // The connect future completes before channelActive has gone down the pipeline, and NIO's HTTP/2
            // handler sends the connection preface then: streams are opened once it has.
            channel.eventLoop.submit { channel }
        }.assumeIsolated().whenComplete { result in
            guard case .connecting(let waiting) = self.state else { return }
            switch result {
            case .success(let channel):
                let connection = frames.value
                self.stats.connectionsTotal.increment()
                self.stats.connectionsActive.increment()
                self.state = .ready(channel, connection)
                channel.closeFuture.assumeIsolated().whenComplete { _ in
                    self.stats.connectionsActive.decrement()
                    self.stats.connectionSlots.decrement()
                    if case .ready(let current, _) = self.state, current === channel {
                        self.state = .disconnected
                        self.idleTimer?.cancel()
                        self.becameEmpty(self)
                    }
                }
                for requester in waiting.values { _ = self.openStream(on: connection, for: requester) }
                self.armIdleTimerIfIdle()
            case .failure:
                self.stats.connectFailures.increment()
                self.stats.connectionSlots.decrement()
                self.state = .disconnected
                for requester in waiting.values { requester.upstreamLeaseFailed(.connectFailure) }
                self.becameEmpty(self)
            }
        }
    }

    /// Leased at once: the stream is opened on the wire when the request's head is sent.
    private func openStream(on connection: HTTP2UpstreamConnection, for requester: any UpstreamLeaseRequester) -> LeaseTicket? {
        nextID += 1
        let handler = UpstreamExchangeHandler(id: nextID)
        handler.attach(connection.makeStream(for: handler))
        activeStreams += 1
        idleTimer?.cancel()
        idleTimer = nil
        // A stream whose request and response both ended is closed by the protocol. Any other ending — an aborted
        // exchange, an early response, a stream leased too late — resets it (a reset of a closed stream would count
        // against us at the server: NIO's, after 200, ends the connection with GOAWAY ENHANCE_YOUR_CALM).
        handler.exchangeFinished = { handler, _, completedOnTheWire in
            if !completedOnTheWire { handler.closeTransport() }
        }
        handler.closed = { [weak self] _ in
            guard let self else { return }
            self.activeStreams -= 1
            self.armIdleTimerIfIdle()
        }
        requester.upstreamLeased(handler)
        return nil
    }

    private func armIdleTimerIfIdle() {
        guard activeStreams == 0, case .ready(let channel, _) = state else { return }
        if retired {
            channel.close(promise: nil)
            return
        }
        idleTimer?.cancel()
        idleTimer = eventLoop.assumeIsolated().scheduleTask(in: target.idleTimeout) {
            channel.close(promise: nil)
        }
    }

    func closeIfIdle() {
        guard activeStreams == 0, case .ready(let channel, _) = state else { return }
        channel.close(promise: nil)
    }

    /// Its endpoint left: close once no stream is open.
    func retire() {
        retired = true
        closeIfIdle()
    }

    /// The upstream is going away: streams past its last id were refused (and are sent again elsewhere), the
    /// others finish here, and new requests open a new connection.
    private func goAwayReceived(lastStreamID: HTTP2StreamID) {
        goAwayLastStreamID = min(goAwayLastStreamID ?? lastStreamID, lastStreamID)
        guard !retired else { return }
        becameEmpty(self)
        retire()
    }
}
