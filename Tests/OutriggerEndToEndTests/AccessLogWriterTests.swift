import Foundation
import NIOCore
import NIOPosix
import OutriggerConfig
import OutriggerCore
import OutriggerProxy
import Testing

@Suite("Access log writer")
struct AccessLogWriterTests {
    /// A fresh directory for one test's files, removed afterwards.
    static func withTemporaryDirectory(_ body: (URL) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("outrigger-accesslog-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await body(directory)
    }

    /// The `index`-th entry of writer `writer`, recognisable in the file by its path.
    static func entry(writer: Int, index: Int) -> AccessLogEntry {
        AccessLogEntry(startEpochMilliseconds: 1_795_737_541_123, clientAddress: "127.0.0.1:50412", method: "GET",
                       path: "/w\(writer)/\(index)", protocolName: "HTTP/1.1", status: 200, route: "r", cluster: "c",
                       endpoint: "127.0.0.1:8080", attempts: 1, durationMicroseconds: 1234, upstreamServiceMicroseconds: 1100,
                       bytesSent: 12, requestID: "req-\(writer)-\(index)", userAgent: "test \"agent\"\n")
    }

    static func lines(of file: URL) throws -> [Substring] {
        let text = try String(contentsOf: file, encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { $0 }
    }

    @Test func linesFromTwoLoopsArriveWholeAndInOrderPerLoop() async throws {
        try await Self.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("access.log")
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let sinks = AccessLogSinks()
            let sink = try sinks.sink(for: path.path)
            #expect(try sinks.sink(for: path.path) === sink, "one sink per destination")
            let perWriter = 5_000
            let loops = [group.next(), group.next()]
            // Two writers per loop (text and JSON), each with its own buffer, like two listeners.
            let writers = loops.enumerated().flatMap { index, loop in
                [(2 * index, loop, AccessLogConfig.Format.text), (2 * index + 1, loop, AccessLogConfig.Format.json)]
            }
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for (writer, loop, format) in writers {
                    tasks.addTask {
                        try await loop.submit {
                            let buffer = AccessLogBuffer(sink: sink, eventLoop: loop)
                            for index in 0..<perWriter { buffer.append(Self.entry(writer: writer, index: index), format: format) }
                            buffer.flush()
                        }.get()
                    }
                }
                try await tasks.waitForAll()
            }
            await sinks.flushAndWait()

            let lines = try Self.lines(of: path)
            #expect(lines.count == writers.count * perWriter)
            var next = [Int](repeating: 0, count: writers.count)
            for line in lines {
                let expected: String
                let writer: Int
                if line.hasPrefix("{") {
                    let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
                    let path = try #require(object["path"] as? String)
                    writer = try #require(Int(path.split(separator: "/")[0].dropFirst()))
                    expected = Self.format(writer: writer, index: next[writer], .json)
                } else {
                    let path = line.split(separator: " ")[2]  // `[time] "GET /wW/I HTTP/1.1" …`
                    writer = try #require(Int(path.dropFirst(2).split(separator: "/")[0]))
                    expected = Self.format(writer: writer, index: next[writer], .text)
                }
                #expect(line == expected.dropLast(), "whole lines, each writer's in order")
                next[writer] += 1
            }
            #expect(next == [Int](repeating: perWriter, count: writers.count))
            #expect(sink.droppedLines == 0)
            await sinks.close()
            try await group.shutdownGracefully()
        }
    }

    static func format(writer: Int, index: Int, _ format: AccessLogConfig.Format) -> String {
        var bytes: [UInt8] = []
        AccessLogFormatter.append(entry(writer: writer, index: index), format: format, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func aQuietLoopsLinesAreWrittenByTheTimer() async throws {
        try await Self.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("quiet.log")
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let sinks = AccessLogSinks()
            let sink = try sinks.sink(for: path.path)
            let loop = group.next()
            // Kept alive by the loop's scheduled flush; nothing else flushes it.
            try await loop.submit {
                let buffer = AccessLogBuffer(sink: sink, eventLoop: loop)
                for index in 0..<3 { buffer.append(Self.entry(writer: 0, index: index), format: .text) }
            }.get()
            try await waitUntil(timeout: .seconds(10)) { (try? Self.lines(of: path).count) == 3 }
            #expect(try Self.lines(of: path).map(String.init) == (0..<3).map { String(Self.format(writer: 0, index: $0, .text).dropLast()) })
            await sinks.close()
            try await group.shutdownGracefully()
        }
    }

    @Test func overThePendingCapChunksAreDroppedAndCounted() async throws {
        try await Self.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("capped.log")
            let sink = try AccessLogSink(path: path.path, maxPendingBytes: 100)
            sink.write(Array(repeating: UInt8(ascii: "a"), count: 300) + [UInt8(ascii: "\n")], lines: 1)
            #expect(sink.droppedLines == 1, "a chunk bigger than the cap never fits")
            #expect(sink.droppedBytes == 301)
            // Many small chunks handed over faster than a thread can write them: some may fit, the rest are counted.
            let chunk = Array("0123456789abcdefghi\n".utf8)
            for _ in 0..<1_000 { sink.write(chunk, lines: 1) }
            await sink.flushAndWait()
            let written = try Self.lines(of: path)
            #expect(written.allSatisfy { $0 == "0123456789abcdefghi" })
            #expect(written.count + sink.droppedLines - 1 == 1_000, "every line is either written or counted")
            #expect(sink.droppedBytes == 301 + (1_000 - written.count) * chunk.count)

            await sink.close()
            sink.write(chunk, lines: 1)
            #expect(sink.droppedLines == 1 + (1_000 - written.count) + 1, "after close, chunks are dropped")
        }
    }

    @Test func anUnopenablePathThrowsNamingIt() async throws {
        try await Self.withTemporaryDirectory { directory in
            let sinks = AccessLogSinks()
            do throws(AccessLogOpenError) {
                _ = try sinks.sink(for: directory.path)
                Issue.record("a directory cannot be an access log")
            } catch {
                #expect(error.path == directory.path)
                #expect(error.description.contains("'\(directory.path)'"), "\(error)")
                #expect(error.description.contains(String(cString: strerror(EISDIR))), "\(error)")
            }
            let missing = directory.appendingPathComponent("no/such/dir.log").path
            #expect(throws: AccessLogOpenError(path: missing, errnoCode: ENOENT)) { try AccessLogSink(path: missing) }
            #expect(sinks.all.isEmpty)
        }
    }

    @Test func reopenFollowsARotatedFile() async throws {
        try await Self.withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("rotated.log")
            let rotated = directory.appendingPathComponent("rotated.log.1")
            let sinks = AccessLogSinks()
            let sink = try sinks.sink(for: path.path)
            sink.write(Array("before\n".utf8), lines: 1)
            await sink.flushAndWait()
            try FileManager.default.moveItem(at: path, to: rotated)
            sink.write(Array("still old\n".utf8), lines: 1)
            try await sinks.reopenAll()
            sink.write(Array("after\n".utf8), lines: 1)
            await sinks.close()
            #expect(try Self.lines(of: rotated) == ["before", "still old"])
            #expect(try Self.lines(of: path) == ["after"])
        }
    }
}
