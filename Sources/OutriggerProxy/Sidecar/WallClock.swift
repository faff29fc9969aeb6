#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Atomics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// The wall clock, for the times access log lines and spans show (request timing uses the monotonic `NIODeadline`).
enum WallClock {
    /// Added to an uptime (`NIODeadline.uptimeNanoseconds`) gives Unix time in nanoseconds: read once, so a span's
    /// times come from the monotonic clock the request path reads anyway (a later step of the wall clock is not seen).
    static let uptimeToUnixNanoseconds: UInt64 = {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec) &- NIODeadline.now().uptimeNanoseconds
    }()

    static func milliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
