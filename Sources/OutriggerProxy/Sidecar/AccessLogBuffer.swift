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

/// One event loop's access log lines on their way to one sink. Batching means a loop takes the sink's lock
/// once per 32 KiB of lines rather than once per request; a timer hands over a partial batch so that a quiet
/// proxy's lines still reach the file within ~100 ms. Touched only on its event loop, so it takes no lock.
public final class AccessLogBuffer {
    public static let defaultHandOffBytes = 32 * 1024
    public static let defaultFlushDelay: TimeAmount = .milliseconds(100)

    public let sink: AccessLogSink
    public let eventLoop: any EventLoop
    private let handOffBytes: Int
    private let flushDelay: TimeAmount
    private var bytes: [UInt8] = []
    private var lines = 0
    private var flushScheduled = false

    public init(
        sink: AccessLogSink,
        eventLoop: any EventLoop,
        handOffBytes: Int = AccessLogBuffer.defaultHandOffBytes,
        flushDelay: TimeAmount = AccessLogBuffer.defaultFlushDelay
    ) {
        self.sink = sink
        self.eventLoop = eventLoop
        self.handOffBytes = handOffBytes
        self.flushDelay = flushDelay
    }

    /// Formats `entry` as one line; hands the batch over when it reaches `handOffBytes`, and otherwise makes
    /// sure a flush is scheduled `flushDelay` from now.
    public func append(_ entry: AccessLogEntry, format: AccessLogConfig.Format) {
        eventLoop.assertInEventLoop()
        if bytes.capacity == 0 {
            // Room for a full batch plus the line that crosses it, so a batch grows without reallocating.
            bytes.reserveCapacity(handOffBytes + 4096)
        }
        AccessLogFormatter.append(entry, format: format, to: &bytes)
        lines += 1
        if bytes.count >= handOffBytes {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().scheduleTask(in: flushDelay) {
                self.flushScheduled = false
                self.flush()
            }
        }
    }

    /// Hands every buffered line to the sink now (the timer, shutdown, or before `AccessLogSinks.flushAndWait`).
    public func flush() {
        eventLoop.assertInEventLoop()
        guard !bytes.isEmpty else { return }
        let chunk = bytes
        let chunkLines = lines
        bytes = []
        lines = 0
        sink.write(chunk, lines: chunkLines)
    }
}

@available(*, unavailable)
extension AccessLogBuffer: Sendable {}
