import OutriggerConfig

/// What the access log says of one request: filled in by the request path when the exchange ends.
public struct AccessLogEntry: Sendable, Hashable {
    /// Wall-clock milliseconds since 1970-01-01T00:00:00Z at which the request arrived.
    public var startEpochMilliseconds: Int64
    /// The downstream peer, `IP` or `IP:PORT`; nil when unknown (a Unix socket).
    public var clientAddress: String?
    public var method: String
    /// The request URI as the client sent it.
    public var path: String
    /// `HTTP/1.1`, `HTTP/2`…
    public var protocolName: String
    /// The status sent downstream; 0 when none was (the client left, or the response was cut).
    public var status: Int
    /// Comma-separated decision codes (why the proxy answered itself, retried, cut…); `-` when none.
    public var reason: String
    public var route: String?
    public var cluster: String?
    /// The endpoint that served the last attempt, `HOST:PORT`.
    public var endpoint: String?
    /// Upstream attempts made (0 when the request never left the proxy).
    public var attempts: Int
    /// From the request's arrival to the last byte sent downstream (or the exchange's end).
    public var durationMicroseconds: Int64
    /// From the last attempt's request to its response head; nil without an upstream response.
    public var upstreamServiceMicroseconds: Int64?
    /// Request body bytes received from the client.
    public var bytesReceived: Int
    /// Response body bytes sent to the client.
    public var bytesSent: Int
    public var requestID: String?
    public var userAgent: String?

    public init(
        startEpochMilliseconds: Int64,
        clientAddress: String? = nil,
        method: String,
        path: String,
        protocolName: String,
        status: Int,
        reason: String = "-",
        route: String? = nil,
        cluster: String? = nil,
        endpoint: String? = nil,
        attempts: Int = 0,
        durationMicroseconds: Int64,
        upstreamServiceMicroseconds: Int64? = nil,
        bytesReceived: Int = 0,
        bytesSent: Int = 0,
        requestID: String? = nil,
        userAgent: String? = nil
    ) {
        self.startEpochMilliseconds = startEpochMilliseconds
        self.clientAddress = clientAddress
        self.method = method
        self.path = path
        self.protocolName = protocolName
        self.status = status
        self.reason = reason
        self.route = route
        self.cluster = cluster
        self.endpoint = endpoint
        self.attempts = attempts
        self.durationMicroseconds = durationMicroseconds
        self.upstreamServiceMicroseconds = upstreamServiceMicroseconds
        self.bytesReceived = bytesReceived
        self.bytesSent = bytesSent
        self.requestID = requestID
        self.userAgent = userAgent
    }
}

/// Turns an `AccessLogEntry` into one line of bytes. Runs per request on the event loop, so it appends
/// straight into the caller's buffer: no Foundation, no intermediate strings.
///
/// Text, one line per request (absent values are `-`):
///
///     [2026-11-26T23:59:01.123Z] "GET /users?id=7 HTTP/1.1" 200 reason=- route=users cluster=users
///     endpoint=10.0.0.5:8080 attempts=1 duration_ms=1.234 upstream_ms=1.100 rx=0 tx=12 client=127.0.0.1:50412
///     request_id="6f1c…" user_agent="curl/8.5.0"
///
/// (shown wrapped; it is one line). What the client sends (the request, `request_id`, `user_agent`) is always
/// quoted; what the proxy or its config names (`reason`, `route`, `cluster`, `endpoint`, `client`) is bare when
/// it is a plain token and quoted otherwise, so `key=("…"|\S+)` splits every line. Inside quotes `"` and `\`
/// are backslash-escaped and control bytes written `\n`, `\r`, `\t` or `\xHH`; other UTF-8 passes through.
///
/// JSON (RFC 8259), one object per line, keys in a fixed order, `null` for absent values.
public enum AccessLogFormatter {
    public static func append(_ entry: AccessLogEntry, format: AccessLogConfig.Format, to buffer: inout [UInt8]) {
        switch format {
        case .text: appendText(entry, to: &buffer)
        case .json: appendJSON(entry, to: &buffer)
        }
    }

    // MARK: Text

    private static func appendText(_ entry: AccessLogEntry, to buffer: inout [UInt8]) {
        buffer.append(UInt8(ascii: "["))
        appendTimestamp(epochMilliseconds: entry.startEpochMilliseconds, to: &buffer)
        buffer.append(contentsOf: "] \"".utf8)
        appendTextEscaped(entry.method, to: &buffer)
        buffer.append(UInt8(ascii: " "))
        appendTextEscaped(entry.path, to: &buffer)
        buffer.append(UInt8(ascii: " "))
        appendTextEscaped(entry.protocolName, to: &buffer)
        buffer.append(contentsOf: "\" ".utf8)
        appendDecimal(Int64(entry.status), to: &buffer)
        buffer.append(contentsOf: " reason=".utf8)
        appendTextToken(entry.reason.isEmpty ? nil : entry.reason, dashMeansAbsent: true, to: &buffer)
        buffer.append(contentsOf: " route=".utf8)
        appendTextToken(entry.route, to: &buffer)
        buffer.append(contentsOf: " cluster=".utf8)
        appendTextToken(entry.cluster, to: &buffer)
        buffer.append(contentsOf: " endpoint=".utf8)
        appendTextToken(entry.endpoint, to: &buffer)
        buffer.append(contentsOf: " attempts=".utf8)
        appendDecimal(Int64(entry.attempts), to: &buffer)
        buffer.append(contentsOf: " duration_ms=".utf8)
        appendMilliseconds(microseconds: entry.durationMicroseconds, to: &buffer)
        buffer.append(contentsOf: " upstream_ms=".utf8)
        if let upstream = entry.upstreamServiceMicroseconds {
            appendMilliseconds(microseconds: upstream, to: &buffer)
        } else {
            buffer.append(UInt8(ascii: "-"))
        }
        buffer.append(contentsOf: " rx=".utf8)
        appendDecimal(Int64(entry.bytesReceived), to: &buffer)
        buffer.append(contentsOf: " tx=".utf8)
        appendDecimal(Int64(entry.bytesSent), to: &buffer)
        buffer.append(contentsOf: " client=".utf8)
        appendTextToken(entry.clientAddress, to: &buffer)
        buffer.append(contentsOf: " request_id=".utf8)
        appendTextQuoted(entry.requestID, to: &buffer)
        buffer.append(contentsOf: " user_agent=".utf8)
        appendTextQuoted(entry.userAgent, to: &buffer)
        buffer.append(UInt8(ascii: "\n"))
    }

    /// `-` when absent, the value bare when it is a plain token, quoted otherwise (so a route named `-` or
    /// `a b` cannot be mistaken for an absent value or split the line).
    private static func appendTextToken(_ value: String?, dashMeansAbsent: Bool = false, to buffer: inout [UInt8]) {
        guard let value else {
            buffer.append(UInt8(ascii: "-"))
            return
        }
        if (dashMeansAbsent && value == "-") || isPlainToken(value) {
            buffer.append(contentsOf: value.utf8)
        } else {
            appendTextQuoted(value, to: &buffer)
        }
    }

    private static func isPlainToken(_ value: String) -> Bool {
        guard !value.isEmpty, value != "-" else { return false }
        return value.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            case UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: ","), UInt8(ascii: "/"),
                 UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "@"), UInt8(ascii: "%"), UInt8(ascii: "+"):
                return true
            default:
                return false
            }
        }
    }

    /// `-` when absent, `"…"` (escaped) otherwise.
    private static func appendTextQuoted(_ value: String?, to buffer: inout [UInt8]) {
        guard let value else {
            buffer.append(UInt8(ascii: "-"))
            return
        }
        buffer.append(UInt8(ascii: "\""))
        appendTextEscaped(value, to: &buffer)
        buffer.append(UInt8(ascii: "\""))
    }

    private static func appendTextEscaped(_ value: String, to buffer: inout [UInt8]) {
        appendEscaped(value, controlPrefix: #"\x"#, to: &buffer)
    }

    /// The escapes both formats share: `"` and `\` backslashed, `\n` `\r` `\t`, other control bytes and DEL
    /// as `controlPrefix` and two hex digits (DEL need not be escaped in JSON; it is, so a log viewed in a
    /// terminal stays inert). Other UTF-8 passes through.
    private static func appendEscaped(_ value: some StringProtocol, controlPrefix: String, to buffer: inout [UInt8]) {
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                buffer.append(UInt8(ascii: "\\"))
                buffer.append(byte)
            case UInt8(ascii: "\n"): buffer.append(contentsOf: #"\n"#.utf8)
            case UInt8(ascii: "\r"): buffer.append(contentsOf: #"\r"#.utf8)
            case UInt8(ascii: "\t"): buffer.append(contentsOf: #"\t"#.utf8)
            case 0x00..<0x20, 0x7F:
                buffer.append(contentsOf: controlPrefix.utf8)
                appendHexByte(byte, to: &buffer)
            default:
                buffer.append(byte)
            }
        }
    }

    // MARK: JSON

    private static func appendJSON(_ entry: AccessLogEntry, to buffer: inout [UInt8]) {
        buffer.append(contentsOf: #"{"start_time":""#.utf8)
        appendTimestamp(epochMilliseconds: entry.startEpochMilliseconds, to: &buffer)
        buffer.append(contentsOf: #"","client":"#.utf8)
        appendJSONString(entry.clientAddress, to: &buffer)
        buffer.append(contentsOf: #","method":"#.utf8)
        appendJSONString(entry.method, to: &buffer)
        buffer.append(contentsOf: #","path":"#.utf8)
        appendJSONString(entry.path, to: &buffer)
        buffer.append(contentsOf: #","protocol":"#.utf8)
        appendJSONString(entry.protocolName, to: &buffer)
        buffer.append(contentsOf: #","status":"#.utf8)
        appendDecimal(Int64(entry.status), to: &buffer)
        buffer.append(contentsOf: #","reason":"#.utf8)
        appendJSONString(entry.reason, to: &buffer)
        buffer.append(contentsOf: #","route":"#.utf8)
        appendJSONString(entry.route, to: &buffer)
        buffer.append(contentsOf: #","cluster":"#.utf8)
        appendJSONString(entry.cluster, to: &buffer)
        buffer.append(contentsOf: #","endpoint":"#.utf8)
        appendJSONString(entry.endpoint, to: &buffer)
        buffer.append(contentsOf: #","attempts":"#.utf8)
        appendDecimal(Int64(entry.attempts), to: &buffer)
        buffer.append(contentsOf: #","duration_ms":"#.utf8)
        appendMilliseconds(microseconds: entry.durationMicroseconds, to: &buffer)
        buffer.append(contentsOf: #","upstream_service_ms":"#.utf8)
        if let upstream = entry.upstreamServiceMicroseconds {
            appendMilliseconds(microseconds: upstream, to: &buffer)
        } else {
            buffer.append(contentsOf: "null".utf8)
        }
        buffer.append(contentsOf: #","bytes_received":"#.utf8)
        appendDecimal(Int64(entry.bytesReceived), to: &buffer)
        buffer.append(contentsOf: #","bytes_sent":"#.utf8)
        appendDecimal(Int64(entry.bytesSent), to: &buffer)
        buffer.append(contentsOf: #","request_id":"#.utf8)
        appendJSONString(entry.requestID, to: &buffer)
        buffer.append(contentsOf: #","user_agent":"#.utf8)
        appendJSONString(entry.userAgent, to: &buffer)
        buffer.append(contentsOf: "}\n".utf8)
    }

    /// A JSON string (RFC 8259 §7), or `null`. Swift strings are valid UTF-8, so non-ASCII passes through as is.
    static func appendJSONString(_ value: String?, to buffer: inout [UInt8]) {
        guard let value else {
            buffer.append(contentsOf: "null".utf8)
            return
        }
        appendJSONText(value[...], to: &buffer)
    }

    /// `value` as a JSON string, quoted and escaped.
    static func appendJSONText(_ value: Substring, to buffer: inout [UInt8]) {
        buffer.append(UInt8(ascii: "\""))
        appendEscaped(value, controlPrefix: #"\u00"#, to: &buffer)
        buffer.append(UInt8(ascii: "\""))
    }

    // MARK: Numbers and time

    /// `2026-11-26T23:59:01.123Z` (RFC 3339, UTC, milliseconds), computed from the epoch with Howard Hinnant's
    /// civil-from-days algorithm: no calendar objects, no allocation.
    public static func appendTimestamp(epochMilliseconds: Int64, to buffer: inout [UInt8]) {
        let (seconds, milliseconds) = floorDivide(epochMilliseconds, 1000)
        let (days, secondOfDay) = floorDivide(seconds, 86_400)
        let (year, month, day) = civilDate(daysSinceEpoch: days)
        appendDecimal(year, width: 4, to: &buffer)
        buffer.append(UInt8(ascii: "-"))
        appendDecimal(month, width: 2, to: &buffer)
        buffer.append(UInt8(ascii: "-"))
        appendDecimal(day, width: 2, to: &buffer)
        buffer.append(UInt8(ascii: "T"))
        appendDecimal(secondOfDay / 3600, width: 2, to: &buffer)
        buffer.append(UInt8(ascii: ":"))
        appendDecimal(secondOfDay / 60 % 60, width: 2, to: &buffer)
        buffer.append(UInt8(ascii: ":"))
        appendDecimal(secondOfDay % 60, width: 2, to: &buffer)
        buffer.append(UInt8(ascii: "."))
        appendDecimal(milliseconds, width: 3, to: &buffer)
        buffer.append(UInt8(ascii: "Z"))
    }

    /// Year, month (1...12) and day (1...31) of the proleptic Gregorian calendar.
    /// See https://howardhinnant.github.io/date_algorithms.html#civil_from_days.
    static func civilDate(daysSinceEpoch days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let shifted = days + 719_468  // days since 0000-03-01, the start of a 400-year era
        let era = floorDivide(shifted, 146_097).quotient
        let dayOfEra = shifted - era * 146_097  // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365  // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)  // 0...365, from March 1
        let shiftedMonth = (5 * dayOfYear + 2) / 153  // 0...11, March = 0
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        var quotient = value / divisor
        var remainder = value % divisor
        if remainder < 0 {
            quotient -= 1
            remainder += divisor
        }
        return (quotient, remainder)
    }

    /// Microseconds as milliseconds with three decimals: `1234` → `1.234`.
    private static func appendMilliseconds(microseconds: Int64, to buffer: inout [UInt8]) {
        if microseconds < 0 { buffer.append(UInt8(ascii: "-")) }
        let magnitude = microseconds.magnitude
        appendDecimal(magnitude / 1000, to: &buffer)
        buffer.append(UInt8(ascii: "."))
        appendDecimal(magnitude % 1000, width: 3, to: &buffer)
    }

    private static func appendDecimal(_ value: Int64, width: Int = 1, to buffer: inout [UInt8]) {
        if value < 0 { buffer.append(UInt8(ascii: "-")) }
        appendDecimal(value.magnitude, width: width, to: &buffer)
    }

    /// Digits of `value`, zero-padded to `width`, written in place (no string in between).
    private static func appendDecimal(_ value: UInt64, width: Int = 1, to buffer: inout [UInt8]) {
        let count = max(DecimalText.digitCount(value), width)
        let start = buffer.count
        buffer.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: count))
        buffer.withUnsafeMutableBufferPointer { DecimalText.write(value, into: UnsafeMutableBufferPointer(rebasing: $0[start...])) }
    }

    private static func appendHexByte(_ byte: UInt8, to buffer: inout [UInt8]) {
        let digits: StaticString = "0123456789abcdef"
        digits.withUTF8Buffer { hex in
            buffer.append(hex[Int(byte >> 4)])
            buffer.append(hex[Int(byte & 0x0F)])
        }
    }
}
