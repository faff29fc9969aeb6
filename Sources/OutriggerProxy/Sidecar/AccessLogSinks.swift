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

/// Every access log sink of the process, one per destination, so listeners logging to the same file share
/// one descriptor and one writer thread (two descriptors in O_APPEND would also work, but two threads would
/// interleave chunks). Owned by the sidecar and passed in; there is no global registry.
public final class AccessLogSinks: Sendable {
    private let sinks = NIOLockedValueBox<[String: AccessLogSink]>([:])
    private let maxPendingBytes: Int

    public init(maxPendingBytes: Int = AccessLogSink.defaultMaxPendingBytes) {
        self.maxPendingBytes = maxPendingBytes
    }

    /// The sink writing to `path`, opened on first use. Blocks in `open(2)` then: call it while loading config.
    public func sink(for path: String) throws(AccessLogOpenError) -> AccessLogSink {
        let result = sinks.withLockedValue { sinks -> Result<AccessLogSink, AccessLogOpenError> in
            if let sink = sinks[path] { return .success(sink) }
            do throws(AccessLogOpenError) {
                let sink = try AccessLogSink(path: path, maxPendingBytes: maxPendingBytes)
                sinks[path] = sink
                return .success(sink)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// Every open sink, for stats.
    public var all: [AccessLogSink] {
        sinks.withLockedValue { Array($0.values) }
    }

    /// Reopens every file (log rotation). Tries them all.
    /// - Throws: the first failure; the files that failed keep writing to their old descriptor.
    public func reopenAll() async throws {
        var firstError: (any Error)?
        for sink in all {
            do {
                try await sink.reopen()
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }

    /// Returns once every sink has written what was handed to it before the call. Lines still in event loops'
    /// `AccessLogBuffer`s are not included: flush those on their loops first.
    public func flushAndWait() async {
        for sink in all { await sink.flushAndWait() }
    }

    /// Writes what was handed over and closes every sink (shutdown).
    public func close() async {
        let all = sinks.withLockedValue { sinks -> [AccessLogSink] in
            defer { sinks.removeAll() }
            return Array(sinks.values)
        }
        for sink in all { await sink.close() }
    }
}
