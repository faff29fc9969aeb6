import Foundation

/// What a finished child process printed and returned.
struct ProcessResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum ProcessError: Error, CustomStringConvertible {
    case notFound(String)

    var description: String {
        switch self {
        case .notFound(let tool): return "\(tool) is not installed; `make test` installs it (scripts/install-deps.sh)"
        }
    }
}

/// Finds a tool on PATH.
func which(_ tool: String) throws -> String {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(tool)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    throw ProcessError.notFound(tool)
}

/// The `outrigger` executable, built beside the test bundle.
func outriggerExecutable() throws -> String {
    var directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = directory.appendingPathComponent("outrigger").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        directory = directory.deletingLastPathComponent()
    }
    let fallback = FileManager.default.currentDirectoryPath + "/.build/debug/outrigger"
    if FileManager.default.isExecutableFile(atPath: fallback) { return fallback }
    throw ProcessError.notFound("outrigger (the built executable)")
}

/// Runs a tool to completion and collects its output. Output is read while it runs, so a large output
/// cannot fill a pipe and stall the child.
func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : try which(tool))
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let stdout = OutputCollector()
    let stderr = OutputCollector()
    process.standardOutput = stdout.pipe
    process.standardError = stderr.pipe
    process.standardInput = FileHandle.nullDevice
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do { try launch(process) } catch { continuation.resume(throwing: error) }
    }
    return ProcessResult(status: status, stdout: await stdout.finish(), stderr: await stderr.finish())
}

/// Runs curl with `-sS` and a safety cap on time; `-w` formats go to stdout after the body.
func curl(_ arguments: [String]) async throws -> ProcessResult {
    try await run("curl", ["-sS", "--max-time", "60"] + arguments)
}

/// Starts a process, one at a time: Foundation's `Process.run()` on Linux is not safe to call from several
/// threads at once (a test run crashed inside it, copying the environment, while tests spawned curl in
/// parallel).
private let launchLock = NSLock()

func launch(_ process: Process) throws {
    launchLock.lock()
    defer { launchLock.unlock() }
    try process.run()
}

/// Reads a descriptor until end of file, handing over each chunk, with read(2) retried when a signal
/// interrupts it: Foundation's `readDataToEndOfFile`/`availableData` trap on EINTR, which the signals
/// of the child processes these tests run and stop can cause.
func readChunks(_ descriptor: Int32, _ chunk: (Data) -> Void) {
    var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
        if count > 0 {
            chunk(Data(buffer[0..<count]))
        } else if count < 0 && errno == EINTR {
            continue
        } else {
            return
        }
    }
}

/// Drains a pipe on a background thread from the start.
final class OutputCollector: @unchecked Sendable {
    // `@unchecked`: `data` is written by the reading thread only, and read after it finished.
    let pipe = Pipe()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init() {
        let descriptor = pipe.fileHandleForReading.fileDescriptor
        Thread.detachNewThread { [self] in
            readChunks(descriptor) { self.data.append($0) }
            self.done.signal()
        }
    }

    func finish() async -> String {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                self.done.wait()
                continuation.resume(returning: String(decoding: self.data, as: UTF8.self))
            }
        }
    }
}

/// A long-running child (the real `outrigger` binary) that is killed when the test lets go of it.
final class ChildProcess: @unchecked Sendable {
    // `@unchecked`: the Process is started once, then only signalled and waited on.
    let process = Process()
    private let output = Pipe()
    private let lines = LineCollector()

    init(_ executable: String, _ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = environment
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        let lines = self.lines
        let descriptor = output.fileHandleForReading.fileDescriptor
        try launch(process)
        Thread.detachNewThread { readChunks(descriptor) { lines.append($0) } }
    }

    var pid: Int32 { process.processIdentifier }
    var text: String { lines.text }

    /// Waits until the output contains `needle` (the child announces its ports and state changes).
    @discardableResult
    func waitForOutput(containing needle: String, timeout: Duration = .seconds(60)) async throws -> String {
        try await lines.wait(timeout: timeout) { $0.contains(needle) }
    }

    /// Waits until `needle` appears `count` times in the output.
    @discardableResult
    func waitForOutput(containing needle: String, count: Int, timeout: Duration = .seconds(60)) async throws -> String {
        try await lines.wait(timeout: timeout) { $0.components(separatedBy: needle).count - 1 >= count }
    }

    func signal(_ number: Int32) {
        Foundation.kill(process.processIdentifier, number)
    }

    func kill() {
        if process.isRunning { signal(SIGKILL) }
    }

    func waitForExit() async -> Int32 {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                self.process.waitUntilExit()
                continuation.resume(returning: self.process.terminationStatus)
            }
        }
    }

    /// Resident memory in KiB, now and at its peak, from /proc.
    func memoryKiB() -> (resident: Int, peak: Int) {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

/// Collects a child's output and wakes waiters when a condition on it holds.
final class LineCollector: @unchecked Sendable {
    // `@unchecked`: every access goes through `lock`.
    private let lock = NSLock()
    private var buffer = ""
    private var waiters: [(id: UUID, condition: (String) -> Bool, continuation: CheckedContinuation<String, Error>)] = []

    var text: String { lock.withLock { buffer } }

    func append(_ data: Data) {
        let ready: [(CheckedContinuation<String, Error>, String)] = lock.withLock {
            buffer += String(decoding: data, as: UTF8.self)
            let text = buffer
            let matched = waiters.filter { $0.condition(text) }
            waiters.removeAll { waiter in matched.contains { $0.id == waiter.id } }
            return matched.map { ($0.continuation, text) }
        }
        for (continuation, text) in ready { continuation.resume(returning: text) }
    }

    struct Timeout: Error, CustomStringConvertible {
        let text: String
        var description: String { "timed out waiting for output; got:\n\(text)" }
    }

    func wait(timeout: Duration, until condition: @escaping (String) -> Bool) async throws -> String {
        let id = UUID()
        let timer = Task {
            try await Task.sleep(for: timeout)
            let expired = lock.withLock { () -> CheckedContinuation<String, Error>? in
                guard let index = waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return waiters.remove(at: index).continuation
            }
            expired?.resume(throwing: Timeout(text: text))
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let text: String? = lock.withLock {
                if condition(buffer) { return buffer }
                waiters.append((id, condition, continuation))
                return nil
            }
            if let text { continuation.resume(returning: text) }
        }
    }
}
