#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import OutriggerCore

/// The clock of the send timeout, for a handler that sees its channel's writability change: armed when the
/// channel turns unwritable (more than the high water mark waiting, the kernel's buffer full), cancelled when
/// it is writable again; `fire` runs if it stayed unwritable for the whole timeout.
struct SendStallTimer {
    private var timer: Scheduled<Void>?

    mutating func writabilityChanged(to isWritable: Bool, timeout: TimeAmount, eventLoop: any EventLoop, fire: @escaping () -> Void) {
        if isWritable {
            cancel()
        } else if timer == nil {
            timer = eventLoop.assumeIsolated().scheduleTask(in: timeout, fire)
        }
    }

    /// The timer fired: it may be armed again.
    mutating func fired() {
        timer = nil
    }

    /// The timer fired: whether the side it watched still takes nothing — open, and not writable — which is then
    /// counted as a send-timeout close for the caller to cut (`resetAndClose` for a connection).
    mutating func firedStalled(isActive: Bool, isWritable: Bool, stats: ListenerStats?) -> Bool {
        fired()
        guard isActive, !isWritable else { return false }
        stats?.recordClose(.sendTimeout)
        return true
    }

    /// `firedStalled` for a connection.
    mutating func firedStalled(_ channel: any Channel, stats: ListenerStats?) -> Bool {
        firedStalled(isActive: channel.isActive, isWritable: channel.isWritable, stats: stats)
    }

    mutating func cancel() {
        timer?.cancel()
        timer = nil
    }

    /// Closes a connection whose client took nothing for the send timeout with a reset (SO_LINGER 0): the kernel
    /// drops what it still queues for a reader that may never come.
    static func resetAndClose(_ channel: any Channel) {
        guard let socket = channel as? SocketOptionProvider else {
            channel.close(promise: nil)
            return
        }
        socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in channel.close(promise: nil) }
    }
}
