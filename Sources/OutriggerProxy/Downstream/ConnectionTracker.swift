import NIOConcurrencyHelpers
import NIOCore
import OutriggerCore

/// Admits downstream connections under the listener's and the process's connection limits, and knows every
/// open one, so shutdown can drain them and stats can count them.
final class ConnectionTracker: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])
    /// The process-wide limit when the config sets none: half the file-descriptor limit, since each
    /// downstream connection may hold an upstream one; the rest serves the admin, upstreams and logs.
    let defaultProcessLimit = max(ProcessLimits.fileDescriptorLimit / 2, 16)
    /// HTTP/2 client addresses refused for resetting too many streams.
    let resets = ClientResetGuard()

    /// Takes a just-accepted connection if its client is not refused and both limits allow, and tracks it;
    /// otherwise closes it at once (counted by why) and returns false. The counts are shared by every event
    /// loop and never overshoot.
    func admit(_ channel: Channel, client: ClientResetGuard.Client?, listenerStats: ListenerStats, processStats: ProxyStats,
               listenerLimit: Int?, processLimit: Int) -> Bool {
        if let client, !resets.admits(client) {
            listenerStats.recordClose(.rapidReset)
            channel.close(promise: nil)
            return false
        }
        guard processStats.downstreamConnectionsActive.increment(below: processLimit) else {
            listenerStats.recordClose(.processLimit)
            channel.close(promise: nil)
            return false
        }
        guard listenerStats.connectionsActive.increment(below: listenerLimit ?? .max) else {
            processStats.downstreamConnectionsActive.decrement()
            listenerStats.recordClose(.listenerLimit)
            channel.close(promise: nil)
            return false
        }
        listenerStats.connectionsTotal.increment()
        let id = ObjectIdentifier(channel)
        channels.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { [channels] _ in
            listenerStats.connectionsActive.decrement()
            processStats.downstreamConnectionsActive.decrement()
            channels.withLockedValue { $0[id] = nil }
        }
        return true
    }

    var count: Int { channels.withLockedValue { $0.count } }

    var all: [Channel] { channels.withLockedValue { Array($0.values) } }

    /// Asks every connection to finish what it is doing and close (HTTP/1.1 closes after the response in
    /// flight, HTTP/2 sends GOAWAY and closes when its streams are done; idle connections close at once), and
    /// returns once each has been asked. - Returns: how many were.
    func quiesceAll() async -> Int {
        let channels = all
        for channel in channels {
            try? await channel.eventLoop.submit {
                channel.pipeline.syncOperations.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }.get()
        }
        return channels.count
    }

    func closeAll() {
        for channel in all { channel.close(promise: nil) }
    }
}
