import Foundation
import OutriggerConfig
import OutriggerCore
import Testing

@Suite("Access log formatting")
struct AccessLogTests {
    /// 2026-11-26T23:59:01.123Z, a request served on its first attempt.
    static let served = AccessLogEntry(
        startEpochMilliseconds: 1_795_737_541_123, clientAddress: "127.0.0.1:50412", method: "GET", path: "/users?id=7",
        protocolName: "HTTP/1.1", status: 200, reason: "-", route: "users", cluster: "users-v2", endpoint: "10.0.0.5:8080",
        attempts: 1, durationMicroseconds: 1234, upstreamServiceMicroseconds: 1100, bytesReceived: 0, bytesSent: 12,
        requestID: "6f1c2d9e-0000-4000-8000-000000000001", userAgent: "curl/8.5.0"
    )

    /// The same request carrying every kind of hostile byte a client controls (and a config name that is no token).
    static let hostile = AccessLogEntry(
        startEpochMilliseconds: 0, clientAddress: "[::1]:1", method: "GET", path: "/a\"b\\c\nd\re\tf\u{01}g\u{7F}h",
        protocolName: "HTTP/2", status: 0, reason: "upstream_reset,retried", route: "my route", cluster: "-", endpoint: nil,
        attempts: 2, durationMicroseconds: 5, upstreamServiceMicroseconds: nil, bytesReceived: 3, bytesSent: 0,
        requestID: "id\"\n", userAgent: "Mözilla ☃ \"quoted\" \\ \u{1B}[31m\u{00}"
    )

    static func line(_ entry: AccessLogEntry, _ format: AccessLogConfig.Format) -> String {
        var buffer: [UInt8] = []
        AccessLogFormatter.append(entry, format: format, to: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    static func timestamp(_ epochMilliseconds: Int64) -> String {
        var buffer: [UInt8] = []
        AccessLogFormatter.appendTimestamp(epochMilliseconds: epochMilliseconds, to: &buffer)
        return String(decoding: buffer, as: UTF8.self)
    }

    @Test func textLineHasTheDocumentedShape() {
        #expect(Self.line(Self.served, .text) == """
        [2026-11-26T23:59:01.123Z] "GET /users?id=7 HTTP/1.1" 200 reason=- route=users cluster=users-v2 \
        endpoint=10.0.0.5:8080 attempts=1 duration_ms=1.234 upstream_ms=1.100 rx=0 tx=12 client=127.0.0.1:50412 \
        request_id="6f1c2d9e-0000-4000-8000-000000000001" user_agent="curl/8.5.0"

        """)
    }

    @Test func textWritesADashForEveryAbsentValue() {
        let entry = AccessLogEntry(startEpochMilliseconds: 0, method: "GET", path: "/", protocolName: "HTTP/2", status: 0,
                                   reason: "", durationMicroseconds: 0)
        #expect(Self.line(entry, .text) == """
        [1970-01-01T00:00:00.000Z] "GET / HTTP/2" 0 reason=- route=- cluster=- endpoint=- attempts=0 duration_ms=0.000 \
        upstream_ms=- rx=0 tx=0 client=- request_id=- user_agent=-

        """)
    }

    @Test func textEscapesHostileValuesAndStaysOneLine() {
        let line = Self.line(Self.hostile, .text)
        #expect(line == #"""
        [1970-01-01T00:00:00.000Z] "GET /a\"b\\c\nd\re\tf\x01g\x7fh HTTP/2" 0 reason=upstream_reset,retried route="my route" \#
        cluster="-" endpoint=- attempts=2 duration_ms=0.005 upstream_ms=- rx=3 tx=0 client=[::1]:1 request_id="id\"\n" \#
        user_agent="Mözilla ☃ \"quoted\" \\ \x1b[31m\x00"

        """#)
        let bytes = Array(line.utf8)
        #expect(bytes.last == UInt8(ascii: "\n"))
        #expect(bytes.dropLast().allSatisfy { $0 >= 0x20 && $0 != 0x7F }, "no control byte but the final newline")
    }

    @Test func jsonLineParsesAndEveryValueRoundTrips() throws {
        for entry in [Self.served, Self.hostile] {
            let line = Self.line(entry, .json)
            #expect(line.hasPrefix(#"{"start_time":"#))
            #expect(line.hasSuffix("}\n"))
            #expect(line.utf8.dropLast().allSatisfy { $0 >= 0x20 && $0 != 0x7F }, "one line, no raw control byte")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            #expect(object.count == 17)
            func string(_ key: String) -> String? { object[key] as? String }
            func isNull(_ key: String) -> Bool { object[key] is NSNull }
            func optional(_ key: String, _ value: String?) {
                if let value {
                    #expect(string(key) == value, "\(key)")
                } else {
                    #expect(isNull(key), "\(key) is null when absent")
                }
            }
            optional("client", entry.clientAddress)
            #expect(string("method") == entry.method)
            #expect(string("path") == entry.path)
            #expect(string("protocol") == entry.protocolName)
            #expect((object["status"] as? Int) == entry.status)
            #expect(string("reason") == entry.reason)
            optional("route", entry.route)
            optional("cluster", entry.cluster)
            optional("endpoint", entry.endpoint)
            #expect((object["attempts"] as? Int) == entry.attempts)
            let duration = try #require(object["duration_ms"] as? Double)
            #expect(abs(duration - Double(entry.durationMicroseconds) / 1000) < 1e-9)
            if let upstream = entry.upstreamServiceMicroseconds {
                let parsed = try #require(object["upstream_service_ms"] as? Double)
                #expect(abs(parsed - Double(upstream) / 1000) < 1e-9)
            } else {
                #expect(isNull("upstream_service_ms"))
            }
            #expect((object["bytes_received"] as? Int) == entry.bytesReceived)
            #expect((object["bytes_sent"] as? Int) == entry.bytesSent)
            optional("request_id", entry.requestID)
            optional("user_agent", entry.userAgent)
        }
        #expect(Self.line(Self.served, .json) == """
        {"start_time":"2026-11-26T23:59:01.123Z","client":"127.0.0.1:50412","method":"GET","path":"/users?id=7",\
        "protocol":"HTTP/1.1","status":200,"reason":"-","route":"users","cluster":"users-v2","endpoint":"10.0.0.5:8080",\
        "attempts":1,"duration_ms":1.234,"upstream_service_ms":1.100,"bytes_received":0,"bytes_sent":12,\
        "request_id":"6f1c2d9e-0000-4000-8000-000000000001","user_agent":"curl/8.5.0"}

        """)
    }

    @Test func jsonEscapesAsRFC8259SaysAndPassesUTF8Through() {
        let line = Self.line(Self.hostile, .json)
        #expect(line.contains(#""path":"/a\"b\\c\nd\re\tf\u0001g\u007fh""#))
        #expect(line.contains(#""user_agent":"Mözilla ☃ \"quoted\" \\ \u001b[31m\u0000""#))
        #expect(line.contains(#""endpoint":null"#))
        #expect(line.contains(#""upstream_service_ms":null"#))
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"),
        (1_709_210_096_789, "2024-02-29T12:34:56.789Z"),
        (1_795_737_541_123, "2026-11-26T23:59:01.123Z"),
        (951_868_800_000, "2000-03-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-2_203_977_600_000, "1900-02-28T00:00:00.000Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ])
    func timestampsOfKnownInstants(epochMilliseconds: Int64, expected: String) {
        #expect(Self.timestamp(epochMilliseconds) == expected)
    }

    /// Every few days from 1601 to 2400 against Foundation's Gregorian calendar (which is Julian before 1582).
    @Test func timestampsAgreeWithFoundationsCalendar() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = try #require(TimeZone(identifier: "UTC"))
        let first: Int64 = -134_774  // 1601-01-01
        let last: Int64 = 157_054  // 2400-01-01
        for day in stride(from: first, through: last, by: 37) {
            let seconds = day * 86_400 + Int64(day.magnitude * 7_919 % 86_400)  // a different time of day each time
            let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second],
                                                from: Date(timeIntervalSince1970: TimeInterval(seconds)))
            let expected = String(format: "%04d-%02d-%02dT%02d:%02d:%02d.042Z", parts.year!, parts.month!, parts.day!,
                                  parts.hour!, parts.minute!, parts.second!)
            #expect(Self.timestamp(seconds * 1000 + 42) == expected)
        }
    }

    @Test func durationsHaveThreeDecimals() {
        func text(_ micros: Int64) -> Substring {
            let line = Self.line(AccessLogEntry(startEpochMilliseconds: 0, method: "GET", path: "/", protocolName: "HTTP/1.1",
                                                status: 200, durationMicroseconds: micros), .text)
            return line.split(separator: " ").first { $0.hasPrefix("duration_ms=") }!.dropFirst("duration_ms=".count)
        }
        #expect(text(0) == "0.000")
        #expect(text(7) == "0.007")
        #expect(text(1_000) == "1.000")
        #expect(text(12_345_678) == "12345.678")
    }
}
