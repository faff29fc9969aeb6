import NIOCore

/// HTTP/2's error codes (RFC 9113 §7), as they go on the wire.
public struct HTTP2Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let noError = Self(rawValue: 0x0)
    public static let protocolError = Self(rawValue: 0x1)
    public static let internalError = Self(rawValue: 0x2)
    public static let flowControlError = Self(rawValue: 0x3)
    public static let streamClosed = Self(rawValue: 0x5)
    public static let frameSizeError = Self(rawValue: 0x6)
    public static let refusedStream = Self(rawValue: 0x7)
    public static let cancel = Self(rawValue: 0x8)
    public static let compressionError = Self(rawValue: 0x9)
    public static let enhanceYourCalm = Self(rawValue: 0xB)

    public var description: String {
        switch self {
        case .noError: "NO_ERROR"
        case .protocolError: "PROTOCOL_ERROR"
        case .internalError: "INTERNAL_ERROR"
        case .flowControlError: "FLOW_CONTROL_ERROR"
        case .streamClosed: "STREAM_CLOSED"
        case .frameSizeError: "FRAME_SIZE_ERROR"
        case .refusedStream: "REFUSED_STREAM"
        case .cancel: "CANCEL"
        case .compressionError: "COMPRESSION_ERROR"
        case .enhanceYourCalm: "ENHANCE_YOUR_CALM"
        default: "0x\(String(rawValue, radix: 16))"
        }
    }
}

/// A peer broke the protocol: scoped as RFC 9113 §5.4 scopes it — the whole connection (answered with GOAWAY and a
/// close) or one stream (answered with RST_STREAM). `why` is for logs and tests.
public struct HTTP2Violation: Error, Equatable, Sendable, CustomStringConvertible {
    public var code: HTTP2Code
    /// The stream that is reset; nil for a connection error.
    public var stream: UInt32?
    public var why: String

    public static func connection(_ code: HTTP2Code, _ why: String) -> Self { Self(code: code, stream: nil, why: why) }
    public static func stream(_ id: UInt32, _ code: HTTP2Code, _ why: String) -> Self { Self(code: code, stream: id, why: why) }

    public var description: String {
        if let stream { return "stream \(stream) error \(code): \(why)" }
        return "connection error \(code): \(why)"
    }
}

/// Frame types and flags (RFC 9113 §6).
public enum HTTP2FrameKind {
    public static let data: UInt8 = 0x0
    public static let headers: UInt8 = 0x1
    public static let priority: UInt8 = 0x2
    public static let rstStream: UInt8 = 0x3
    public static let settings: UInt8 = 0x4
    public static let pushPromise: UInt8 = 0x5
    public static let ping: UInt8 = 0x6
    public static let goAway: UInt8 = 0x7
    public static let windowUpdate: UInt8 = 0x8
    public static let continuation: UInt8 = 0x9

    public static let endStream: UInt8 = 0x1
    public static let ack: UInt8 = 0x1
    public static let endHeaders: UInt8 = 0x4
    public static let padded: UInt8 = 0x8
    public static let priorityFlag: UInt8 = 0x20

    /// The client's connection preface (RFC 9113 §3.4), before its first SETTINGS frame.
    public static let clientPreface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    /// SETTINGS_MAX_FRAME_SIZE's initial value, and its lower bound.
    public static let defaultMaxFrameSize = 16_384
    /// A window may never exceed 2^31 - 1 (RFC 9113 §6.9.1).
    public static let maxWindow = Int(Int32.max)
}

/// SETTINGS parameters (RFC 9113 §6.5.2) this side acts on.
public enum HTTP2SettingID {
    public static let headerTableSize: UInt16 = 0x1
    public static let enablePush: UInt16 = 0x2
    public static let maxConcurrentStreams: UInt16 = 0x3
    public static let initialWindowSize: UInt16 = 0x4
    public static let maxFrameSize: UInt16 = 0x5
    public static let maxHeaderListSize: UInt16 = 0x6
}
