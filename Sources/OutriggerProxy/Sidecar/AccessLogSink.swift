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

/// An access log destination that could not be opened; says which file and why, as `open(2)` did.
public struct AccessLogOpenError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var errnoCode: CInt

    public init(path: String, errnoCode: CInt) {
        self.path = path
        self.errnoCode = errnoCode
    }

    public var description: String {
        "cannot open access log '\(path)': \(String(cString: strerror(errnoCode)))"
    }
}

/// One access log destination (a file, stdout or stderr), shared by every listener and event loop that logs
/// to it. Event loops hand it chunks of whole lines; its own thread writes them, so a slow or full disk never
/// stalls a loop. What waits to be written is capped: past the cap new chunks are dropped and counted, so
/// the proxy's memory stays bounded whatever the disk does.
public final class AccessLogSink: Sendable {
    public static let defaultMaxPendingBytes = 8 << 20

    /// As configured: `stdout`, `stderr` or a file path.
    public let path: String
    /// Lines thrown away: over the pending cap, handed over after `close()`, or lost to a failed write.
    public var droppedLines: Int { droppedLineCount.load(ordering: .relaxed) }
    /// The bytes of `droppedLines`.
    public var droppedBytes: Int { droppedByteCount.load(ordering: .relaxed) }
    /// `write(2)` calls that failed (disk full, I/O error); their chunks count as dropped.
    public var writeErrors: Int { writeErrorCount.load(ordering: .relaxed) }

    private let maxPendingBytes: Int
    private let isStandardStream: Bool
    /// One thread: chunks are written in the order they were handed over, and the descriptor is only
    /// touched there (writes, reopen, close never race).
    private let writer: NIOThreadPool
    private let state: NIOLockedValueBox<State>
    private let droppedLineCount = ManagedAtomic<Int>(0)
    private let droppedByteCount = ManagedAtomic<Int>(0)
    private let writeErrorCount = ManagedAtomic<Int>(0)

    private struct Chunk {
        var bytes: [UInt8]
        var lines: Int
    }

    private struct State {
        var descriptor: CInt
        var queue: [Chunk] = []
        /// Handed over and not yet written (queued or being written): what the cap applies to.
        var pendingBytes = 0
        /// A drain is queued on the writer thread and will pick up whatever is queued now.
        var drainSubmitted = false
        var isClosed = false
    }

    private enum HandOff {
        case queued
        case queuedAndDrainNeeded
        case dropped
    }

    /// Opens `path` (`stdout` and `stderr` are file descriptors 1 and 2) and starts its writer thread.
    /// Blocks in `open(2)`: call it while loading config, never on an event loop.
    public init(path: String, maxPendingBytes: Int = AccessLogSink.defaultMaxPendingBytes) throws(AccessLogOpenError) {
        let descriptor: CInt
        switch path {
        case AccessLogConfig.standardOutput: descriptor = STDOUT_FILENO
        case AccessLogConfig.standardError: descriptor = STDERR_FILENO
        default: descriptor = try Self.openFile(path)
        }
        self.path = path
        self.maxPendingBytes = maxPendingBytes
        self.isStandardStream = descriptor == STDOUT_FILENO || descriptor == STDERR_FILENO
        self.state = NIOLockedValueBox(State(descriptor: descriptor))
        self.writer = NIOThreadPool(numberOfThreads: 1)
        writer.start()
    }

    deinit {
        // Only reached once nothing is queued (a queued drain holds the sink); close() may not have run.
        let descriptor = state.withLockedValue { $0.descriptor }
        if !isStandardStream && descriptor >= 0 { closeDescriptor(descriptor) }
        writer.shutdownGracefully { _ in }
    }

    /// Queues `bytes` (`lines` whole lines) for the writer thread. Never blocks beyond a short lock, so event
    /// loops may call it; over the pending cap, or after `close()`, the chunk is dropped and counted instead.
    public func write(_ bytes: [UInt8], lines: Int) {
        guard !bytes.isEmpty else { return }
        let handOff = state.withLockedValue { state -> HandOff in
            guard !state.isClosed, state.pendingBytes + bytes.count <= maxPendingBytes else { return .dropped }
            state.queue.append(Chunk(bytes: bytes, lines: lines))
            state.pendingBytes += bytes.count
            if state.drainSubmitted { return .queued }
            state.drainSubmitted = true
            return .queuedAndDrainNeeded
        }
        switch handOff {
        case .queued:
            break
        case .queuedAndDrainNeeded:
            // Cancelled only once close() has shut the thread down, after draining everything queued before it.
            writer.submit { [self] work in
                if case .active = work { drain() }
            }
        case .dropped:
            countDropped(lines: lines, bytes: bytes.count)
        }
    }

    /// Returns once every chunk handed over before the call has been written (`write(2)` returned; no fsync).
    public func flushAndWait() async {
        _ = try? await writer.runIfActive { [self] in drain() }
    }

    /// Closes the file and opens it again at the same path, for log rotation: lines handed over before the call
    /// go to the old file, later ones to the new. stdout and stderr are left as they are.
    /// - Throws: `AccessLogOpenError` when the path cannot be opened any more; the old file is kept then.
    public func reopen() async throws {
        guard !isStandardStream, !state.withLockedValue({ $0.isClosed }) else { return }
        try await writer.runIfActive { [self] in
            drain()
            let opened = try Self.openFile(path)
            let previous = state.withLockedValue { state -> CInt in
                guard !state.isClosed else { return opened }
                defer { state.descriptor = opened }
                return state.descriptor
            }
            closeDescriptor(previous)
        }
    }

    /// Writes what was handed over before the call, closes the file and stops the writer thread. Chunks handed
    /// over later are dropped and counted.
    public func close() async {
        let alreadyClosed = state.withLockedValue { state -> Bool in
            defer { state.isClosed = true }
            return state.isClosed
        }
        guard !alreadyClosed else { return }
        _ = try? await writer.runIfActive { [self] in
            drain()
            let descriptor = state.withLockedValue { state -> CInt in
                defer { state.descriptor = -1 }
                return state.descriptor
            }
            if !isStandardStream && descriptor >= 0 { closeDescriptor(descriptor) }
        }
        try? await writer.shutdownGracefully()
    }

    /// On the writer thread only: writes the queue, oldest chunk first, until it is empty.
    private func drain() {
        while true {
            let batch = state.withLockedValue { state -> (chunks: [Chunk], descriptor: CInt)? in
                guard !state.queue.isEmpty else {
                    state.drainSubmitted = false
                    return nil
                }
                var taken: [Chunk] = []
                swap(&taken, &state.queue)
                return (taken, state.descriptor)
            }
            guard let batch else { return }
            var written = 0
            for chunk in batch.chunks {
                if !Self.writeFully(chunk.bytes, to: batch.descriptor) {
                    writeErrorCount.wrappingIncrement(ordering: .relaxed)
                    countDropped(lines: chunk.lines, bytes: chunk.bytes.count)
                }
                written += chunk.bytes.count
            }
            state.withLockedValue { $0.pendingBytes -= written }
        }
    }

    private func countDropped(lines: Int, bytes: Int) {
        droppedLineCount.wrappingIncrement(by: lines, ordering: .relaxed)
        droppedByteCount.wrappingIncrement(by: bytes, ordering: .relaxed)
    }

    private static func openFile(_ path: String) throws(AccessLogOpenError) -> CInt {
        while true {
            let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            if descriptor >= 0 { return descriptor }
            let code = errno
            if code != EINTR { throw AccessLogOpenError(path: path, errnoCode: code) }
        }
    }

    /// Writes all of `bytes`, through partial writes, EINTR, and EAGAIN on a non-blocking stdout (a pipe
    /// shared with a parent that set O_NONBLOCK). False on any other error.
    private static func writeFully(_ bytes: [UInt8], to descriptor: CInt) -> Bool {
        guard descriptor >= 0 else { return false }
        return bytes.withUnsafeBytes { raw -> Bool in
            guard let base = raw.baseAddress else { return true }
            var offset = 0
            while offset < raw.count {
                let result = writeDescriptor(descriptor, base + offset, raw.count - offset)
                if result > 0 {
                    offset += result
                    continue
                }
                let code = errno
                if result < 0 && code == EINTR { continue }
                if result < 0 && (code == EAGAIN || code == EWOULDBLOCK) {
                    var waiting = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&waiting, 1, -1)
                    continue
                }
                return false
            }
            return true
        }
    }
}

/// libc's `close(2)`, under a name the sink's own `close()` does not shadow.
private func closeDescriptor(_ descriptor: CInt) {
    #if canImport(Glibc)
    _ = Glibc.close(descriptor)
    #else
    _ = Darwin.close(descriptor)
    #endif
}

/// libc's `write(2)`, under a name the sink's own `write(_:lines:)` does not shadow.
private func writeDescriptor(_ descriptor: CInt, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(descriptor, bytes, count)
    #else
    Darwin.write(descriptor, bytes, count)
    #endif
}
