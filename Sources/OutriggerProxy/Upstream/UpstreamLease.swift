import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// The downstream request waiting for an upstream connection or stream.
protocol UpstreamLeaseRequester: AnyObject {
    func upstreamLeased(_ upstream: UpstreamExchangeHandler)
    func upstreamLeaseFailed(_ reason: LocalReplyReason)
}

/// Lets a waiting request give up its place (client gone, timeout).
struct LeaseTicket {
    private let cancelAction: () -> Void

    init(cancelAction: @escaping () -> Void) {
        self.cancelAction = cancelAction
    }

    func cancel() { cancelAction() }
}
