/// Spans in the two export formats: OTLP/HTTP's protobuf body and Zipkin v2 JSON. Pure: bytes in, bytes out,
/// written in one pass into one array (nested protobuf lengths are patched in place, no buffer per message).
public enum SpanEncoding {
    /// An OTLP `ExportTraceServiceRequest` (opentelemetry-proto v1, `POST /v1/traces` with
    /// `content-type: application/x-protobuf`): one resource (`resource` its attributes, `service.name` first), one
    /// instrumentation scope, and `spans`.
    public static func otlp(_ spans: some Collection<SpanRecord>, resource: [SpanAttribute], scopeName: String, scopeVersion: String) -> [UInt8] {
        var writer = ProtobufWriter()
        writer.bytes.reserveCapacity(256 + spans.count * 400)
        // Each span is written into one reused scratch writer, then appended after its length: a span is longer than
        // 127 bytes, so writing it in place would move it to widen its length.
        var scratch = ProtobufWriter()
        scratch.bytes.reserveCapacity(1024)
        writer.message(1) { resourceSpans in  // ExportTraceServiceRequest.resource_spans
            resourceSpans.message(1) { resourceMessage in  // ResourceSpans.resource
                for attribute in resource { resourceMessage.message(1) { $0.keyValue(attribute.key, attribute.value) } }  // Resource.attributes
            }
            resourceSpans.message(2) { scopeSpans in  // ResourceSpans.scope_spans
                scopeSpans.message(1) { scope in  // ScopeSpans.scope
                    scope.string(1, scopeName)
                    scope.string(2, scopeVersion)
                }
                for span in spans {
                    scratch.bytes.removeAll(keepingCapacity: true)
                    scratch.span(span)
                    scopeSpans.message(2, encoded: scratch.bytes)  // ScopeSpans.spans
                }
            }
        }
        return writer.bytes
    }

    /// A Zipkin v2 span list (`POST /api/v2/spans`, `content-type: application/json`); attributes become tags, and
    /// an error the `error` tag.
    public static func zipkin(_ spans: some Collection<SpanRecord>, serviceName: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(spans.count * 768)
        out.append(UInt8(ascii: "["))
        for (index, span) in spans.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: #"{"traceId":""#.utf8)
            out.append(contentsOf: span.traceID.hex.utf8)
            out.append(contentsOf: #"","id":""#.utf8)
            out.append(contentsOf: TraceHex.string(span.spanID).utf8)
            out.append(UInt8(ascii: "\""))
            if span.parentSpanID != 0 {
                out.append(contentsOf: #","parentId":""#.utf8)
                out.append(contentsOf: TraceHex.string(span.parentSpanID).utf8)
                out.append(UInt8(ascii: "\""))
            }
            out.append(contentsOf: #","kind":""#.utf8)
            out.append(contentsOf: (span.kind == .server ? "SERVER" : "CLIENT").utf8)
            out.append(contentsOf: #"","name":"#.utf8)
            AccessLogFormatter.appendJSONString(span.name.lowercased(), to: &out)
            out.append(contentsOf: #","timestamp":"#.utf8)
            out.append(contentsOf: String(span.startUnixNanoseconds / 1000).utf8)
            out.append(contentsOf: #","duration":"#.utf8)
            out.append(contentsOf: String(max(span.durationNanoseconds / 1000, 1)).utf8)
            out.append(contentsOf: #","localEndpoint":{"serviceName":"#.utf8)
            AccessLogFormatter.appendJSONString(serviceName, to: &out)
            out.append(contentsOf: #"},"tags":{"#.utf8)
            var tags = 0
            span.forEachAttribute { key, value in
                if tags > 0 { out.append(UInt8(ascii: ",")) }
                tags += 1
                AccessLogFormatter.appendJSONString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                AccessLogFormatter.appendJSONString(value.description, to: &out)
            }
            if let error = span.error {
                if tags > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: #""error":"#.utf8)
                AccessLogFormatter.appendJSONString(error, to: &out)
            }
            out.append(contentsOf: "}}".utf8)
        }
        out.append(UInt8(ascii: "]"))
        return out
    }
}

/// Protocol Buffers' wire format, for the few message shapes OTLP needs.
struct ProtobufWriter {
    var bytes: [UInt8] = []

    mutating func varint(_ value: UInt64) {
        if value < 0x80 {
            bytes.append(UInt8(value))
            return
        }
        // At most 10 bytes, gathered in two words and appended at once.
        var words: (UInt64, UInt64) = (0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &words) { scratch in
            while rest >= 0x80 {
                scratch[count] = UInt8(truncatingIfNeeded: rest) | 0x80
                count += 1
                rest >>= 7
            }
            scratch[count] = UInt8(rest)
            count += 1
        }
        withUnsafeBytes(of: &words) { bytes.append(contentsOf: $0.prefix(count)) }
    }

    private mutating func key(_ field: UInt64, wireType: UInt64) {
        varint(field << 3 | wireType)
    }

    mutating func varintField(_ field: UInt64, _ value: UInt64) {
        key(field, wireType: 0)
        varint(value)
    }

    mutating func fixed64(_ field: UInt64, _ value: UInt64) {
        key(field, wireType: 1)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func fixed32(_ field: UInt64, _ value: UInt32) {
        key(field, wireType: 5)
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func string(_ field: UInt64, _ value: String) {
        key(field, wireType: 2)
        var value = value
        value.withUTF8 { utf8 in
            varint(UInt64(utf8.count))
            bytes.append(contentsOf: utf8)
        }
    }

    /// An id as bytes, most significant first (OTLP's span ids).
    mutating func idBytes(_ field: UInt64, _ word: UInt64) {
        key(field, wireType: 2)
        bytes.append(8)
        withUnsafeBytes(of: word.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A 128-bit id as bytes, most significant first (OTLP's trace ids).
    mutating func idBytes(_ field: UInt64, _ high: UInt64, _ low: UInt64) {
        key(field, wireType: 2)
        bytes.append(16)
        withUnsafeBytes(of: high.bigEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: low.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A nested message already encoded.
    mutating func message(_ field: UInt64, encoded: [UInt8]) {
        key(field, wireType: 2)
        varint(UInt64(encoded.count))
        bytes.append(contentsOf: encoded)
    }

    /// A nested message: written in place after a one-byte length, which grows (the body moves) when it is 128 or more.
    mutating func message(_ field: UInt64, _ body: (inout ProtobufWriter) -> Void) {
        key(field, wireType: 2)
        let lengthAt = bytes.count
        bytes.append(0)
        body(&self)
        let length = bytes.count - lengthAt - 1
        if length < 0x80 {
            bytes[lengthAt] = UInt8(length)
            return
        }
        var prefix = ProtobufWriter()
        prefix.varint(UInt64(length))
        bytes.replaceSubrange(lengthAt..<(lengthAt + 1), with: prefix.bytes)
    }

    /// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1; int_value = 3 }`.
    mutating func keyValue(_ key: String, _ attributeValue: SpanAttribute.Value) {
        string(1, key)
        message(2) { value in
            switch attributeValue {
            case .string(let text): value.string(1, text)
            case .int(let number): value.varintField(3, UInt64(bitPattern: number))
            }
        }
    }

    /// `Span` (opentelemetry-proto trace.v1): ids, name, kind, times, attributes, status and flags.
    mutating func span(_ span: SpanRecord) {
        idBytes(1, span.traceID.high, span.traceID.low)
        idBytes(2, span.spanID)
        if let state = span.traceState, !state.isEmpty { string(3, state) }
        if span.parentSpanID != 0 { idBytes(4, span.parentSpanID) }
        string(5, span.name)
        varintField(6, span.kind == .server ? 2 : 3)  // SPAN_KIND_SERVER, SPAN_KIND_CLIENT
        fixed64(7, span.startUnixNanoseconds)
        fixed64(8, span.endUnixNanoseconds)
        span.forEachAttribute { key, value in message(9) { $0.keyValue(key, value) } }
        if let error = span.error {
            message(15) { status in  // Status { message = 2; code = 3 }
                status.string(2, error)
                status.varintField(3, 2)  // STATUS_CODE_ERROR
            }
        }
        // Sampled (W3C flag 01), and whether the parent is remote (known: bit 8; remote: bit 9): a server span's
        // parent is the caller's, a client span's is ours.
        let remoteParent: UInt32 = span.kind == .server && span.parentSpanID != 0 ? 0x200 : 0
        fixed32(16, 0x101 | remoteParent)
    }
}
