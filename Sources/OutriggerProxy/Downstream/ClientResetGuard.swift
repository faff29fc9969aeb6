import Atomics
import NIOConcurrencyHelpers
import NIOCore
import OutriggerConfig
import OutriggerCore

/// The process's `ClientResetLedger`, shared by every event loop: HTTP/2 connections report the streams their
/// client opened and reset (every 50 resets, and at close), and listeners ask it before accepting. Its lock is
/// taken once per HTTP/2 connection and once per 50 resets; while no address is refused, accepting takes none.
final class ClientResetGuard: Sendable {
    /// A client as the ledger counts it, per listener: an IPv4 address, or an IPv6 /64 (one host usually
    /// holds a whole /64, so counting single IPv6 addresses would let it start over at will).
    struct Client: Hashable, Sendable {
        let listener: String
        let high: UInt64
        let low: UInt64

        init?(listener: String, address: SocketAddress?) {
            self.listener = listener
            switch address {
            case .v4(let v4):
                high = 0
                low = UInt64(UInt32(bigEndian: v4.address.sin_addr.s_addr))
            case .v6(let v6):
                // The 16 bytes as two big-endian words.
                let (first, second) = withUnsafeBytes(of: v6.address.sin6_addr) { bytes in
                    (UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self)), UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
                }
                if first == 0, second >> 32 == 0xFFFF {
                    // IPv4-mapped (a dual-stack listener): the IPv4 address, as if it came over IPv4.
                    high = 0
                    low = second & 0xFFFF_FFFF
                } else {
                    high = first
                    low = .max  // the /64: the interface id is not counted
                }
            default:
                return nil  // a Unix socket: nothing to tell clients apart by
            }
        }
    }

    private let ledger = NIOLockedValueBox(ClientResetLedger<Client>())
    /// When the last refusal given ends: before it, accepts ask the ledger; after it, none is refused and
    /// accepting takes no lock.
    private let refusalsEnd = ManagedAtomic<UInt64>(0)

    func admits(_ client: Client) -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        guard now < refusalsEnd.load(ordering: .relaxed) else { return true }
        return ledger.withLockedValue { $0.admits(client, now: now) }
    }

    /// Adds a connection's count; true when its address is now refused.
    func record(_ client: Client, streams: Int, resets: Int, limits: RapidResetConfig) -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        return ledger.withLockedValue { ledger in
            guard case .refused(let until) = ledger.record(client, streams: streams, resets: resets, now: now, limits: limits) else { return false }
            // Under the lock, so that a later refusal's end is never overwritten by an earlier one.
            if until > refusalsEnd.load(ordering: .relaxed) { refusalsEnd.store(until, ordering: .relaxed) }
            return true
        }
    }
}
