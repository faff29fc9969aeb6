import NIOConcurrencyHelpers
import NIOCore
import OutriggerCore

/// Knows every open downstream connection, so shutdown can drain them and stats can count them.
final class ConnectionTracker: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: Channel]>([:])

    func track(_ channel: Channel, listenerStats: ListenerStats) {
        let id = ObjectIdentifier(channel)
        channels.withLockedValue { $0[id] = channel }
        listenerStats.connectionsTotal.increment()
        listenerStats.connectionsActive.increment()
        channel.closeFuture.whenComplete { [channels] _ in
            listenerStats.connectionsActive.decrement()
            channels.withLockedValue { $0[id] = nil }
        }
    }

    var count: Int { channels.withLockedValue { $0.count } }

    var all: [Channel] { channels.withLockedValue { Array($0.values) } }

    /// Asks every connection to finish what it is doing and close (HTTP/1.1 closes after the response in
    /// flight; idle connections close at once).
    func quiesceAll() {
        for channel in all {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    func closeAll() {
        for channel in all { channel.close(promise: nil) }
    }
}
