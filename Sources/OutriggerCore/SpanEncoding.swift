/// Spans in the two export formats: OTLP/HTTP's protobuf body and Zipkin v2 JSON. Pure: bytes in, bytes out,
/// each written in one pass (nested protobuf lengths are patched in place, no buffer per message).
public enum SpanEncoding {
    /// An OTLP `ExportTraceServiceRequest` (opentelemetry-proto v1, `POST /v1/traces` with
    /// `content-type: application/x-protobuf`): one resource (`resource` its attributes, `service.name` first), one
    /// instrumentation scope, and `spans`. Written into `buffer` (emptied first: the exporter reuses one); the body is
    /// `buffer.bytes(from:)` the offset returned.
    ///
    /// The spans are written first, after room left for the envelope (`resource_spans`, `resource`, `scope_spans`,
    /// `scope`) whose lengths depend on theirs; the envelope then goes right before them, so no byte of the spans is
    /// ever moved.
    public static func otlp(_ spans: [SpanRecord], resource: [SpanAttribute], scopeName: String, scopeVersion: String,
                            into buffer: EncodingBuffer) -> Int {
        otlp(pieces: [spans[...]], resource: resource, scopeName: scopeName, scopeVersion: scopeVersion, into: buffer)
    }

    /// The same, for spans in pieces (a `SpanExportQueue.Batch`'s), encoded in their order.
    public static func otlp(pieces: [ArraySlice<SpanRecord>], resource: [SpanAttribute], scopeName: String, scopeVersion: String,
                            into buffer: EncodingBuffer) -> Int {
        let spanCount = pieces.reduce(0) { $0 + $1.count }
        let resourceMessage = ProtobufWriter(EncodingBuffer(capacity: 256))
        let resourceAttributes = OTLPAttributes(writer: resourceMessage, field: 1)  // Resource.attributes
        for attribute in resource { resourceAttributes.attribute(attribute) }
        let scopeMessage = ProtobufWriter(EncodingBuffer(capacity: 64))
        scopeMessage.string(1, scopeName)
        scopeMessage.string(2, scopeVersion)
        // Four keys and four lengths of at most 10 bytes each, and the two small messages.
        let room = 44 + resourceMessage.out.count + scopeMessage.out.count

        buffer.removeAll()
        let writer = ProtobufWriter(buffer)
        buffer.reserve(room + spanCount * 400)
        buffer.append(repeating: 0, count: room)
        // A span is 128 bytes to 16 KiB long, so its length takes two bytes; `message` moves it only otherwise.
        for piece in pieces {
            // Each span read in place, not copied out of its piece (a copy retains every string it holds).
            // (No closure around the span: one made the element's read a copy.)
            piece.withUnsafeBufferPointer { spans in
                for index in spans.indices {
                    let start = writer.startMessage(2, lengthBytes: 2)  // ScopeSpans.spans
                    writer.span(spans[index])
                    writer.endMessage(start)
                }
            }
        }
        let spansLength = buffer.count - room

        let envelope = ProtobufWriter(EncodingBuffer(capacity: room))
        let scopeSpansLength = ProtobufWriter.encodedLength(field: 1, length: scopeMessage.out.count) + spansLength
        let resourceSpansLength = ProtobufWriter.encodedLength(field: 1, length: resourceMessage.out.count)
            + ProtobufWriter.encodedLength(field: 2, length: scopeSpansLength)
        envelope.lengthDelimited(1, length: resourceSpansLength)  // ExportTraceServiceRequest.resource_spans
        envelope.lengthDelimited(1, length: resourceMessage.out.count)  // ResourceSpans.resource
        envelope.out.append(resourceMessage.out.bytes())
        envelope.lengthDelimited(2, length: scopeSpansLength)  // ResourceSpans.scope_spans
        envelope.lengthDelimited(1, length: scopeMessage.out.count)  // ScopeSpans.scope
        envelope.out.append(scopeMessage.out.bytes())
        let start = room - envelope.out.count
        buffer.set(envelope.out.bytes(), at: start)
        return start
    }

    /// The same, as bytes.
    public static func otlp(_ spans: [SpanRecord], resource: [SpanAttribute], scopeName: String, scopeVersion: String) -> [UInt8] {
        let buffer = EncodingBuffer()
        let start = otlp(spans, resource: resource, scopeName: scopeName, scopeVersion: scopeVersion, into: buffer)
        return Array(buffer.bytes(from: start))
    }

    /// A Zipkin v2 span list (`POST /api/v2/spans`, `content-type: application/json`); attributes become tags, and
    /// an error the `error` tag.
    public static func zipkin(_ spans: [SpanRecord], serviceName: String) -> [UInt8] {
        zipkin(pieces: [spans[...]], serviceName: serviceName)
    }

    /// The same, for spans in pieces.
    public static func zipkin(pieces: [ArraySlice<SpanRecord>], serviceName: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(pieces.reduce(0) { $0 + $1.count } * 768)
        out.append(UInt8(ascii: "["))
        for span in pieces.joined() {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
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
            var tags = ZipkinTags(out: out)
            out = []  // one owner at a time: no copy of the body as it grows
            span.writeAttributes(into: &tags)
            if let error = span.error { tags.string("error", error) }
            out = tags.out
            out.append(contentsOf: "}}".utf8)
        }
        out.append(UInt8(ascii: "]"))
        return out
    }
}

/// Zipkin's `tags`: every value a JSON string.
private struct ZipkinTags: SpanAttributeWriter {
    var out: [UInt8]
    var count = 0

    private mutating func key(_ key: StaticString) {
        if count > 0 { out.append(UInt8(ascii: ",")) }
        count += 1
        out.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { out.append(contentsOf: $0) }  // our keys need no escaping
        out.append(contentsOf: #"":"#.utf8)
    }

    mutating func string(_ key: StaticString, _ value: Substring) {
        self.key(key)
        AccessLogFormatter.appendJSONText(value, to: &out)
    }

    mutating func int(_ key: StaticString, _ value: Int64) {
        self.key(key)
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: String(value).utf8)
        out.append(UInt8(ascii: "\""))
    }
}

/// Attributes as OTLP writes them: `KeyValue { key = 1; AnyValue value = 2 }` in the message's `field`
/// (`Span.attributes` is 9, `Resource.attributes` 1), and `AnyValue` a `string_value` (1) or an `int_value` (3). Each
/// length is known before the bytes, so nothing is patched or moved. For a span, also its name (5) and its status
/// (15), which `SpanRecord.describe` hands over with the attributes.
private struct OTLPAttributes: SpanDescriptionWriter {
    let writer: ProtobufWriter
    let field: UInt64

    /// The key and value lengths, then the key (written by `key`); the value's bytes come next.
    @inline(__always)
    private func keyValue(keyLength: Int, valueLength: Int, key: () -> Void) {
        writer.lengthDelimited(field, length: ProtobufWriter.encodedLength(field: 1, length: keyLength)
                                              + ProtobufWriter.encodedLength(field: 2, length: valueLength))
        writer.lengthDelimited(1, length: keyLength)
        key()
        writer.lengthDelimited(2, length: valueLength)
    }

    /// The value's bytes, read in place, for their count and their copy.
    @inline(__always)
    private func string(keyLength: Int, key: () -> Void, _ bytes: UnsafeBufferPointer<UInt8>) {
        keyValue(keyLength: keyLength, valueLength: ProtobufWriter.encodedLength(field: 1, length: bytes.count), key: key)
        writer.lengthDelimited(1, length: bytes.count)
        writer.out.append(UnsafeRawBufferPointer(bytes))
    }

    @inline(__always)
    private func int(keyLength: Int, key: () -> Void, _ value: Int64) {
        let number = UInt64(bitPattern: value)
        keyValue(keyLength: keyLength, valueLength: 1 + ProtobufWriter.varintLength(number), key: key)
        writer.varintField(3, number)
    }

    func string(_ key: StaticString, _ value: Substring) {
        var value = value
        value.withUTF8 { string(keyLength: key.utf8CodeUnitCount, key: { writer.out.append(utf8: key) }, $0) }
    }

    func string(_ key: StaticString, _ value: String) {
        var value = value
        value.withUTF8 { string(keyLength: key.utf8CodeUnitCount, key: { writer.out.append(utf8: key) }, $0) }
    }

    func int(_ key: StaticString, _ value: Int64) {
        int(keyLength: key.utf8CodeUnitCount, key: { writer.out.append(utf8: key) }, value)
    }

    /// `Span.name`: one word, or two with a space between.
    func name(_ first: String, _ second: String?) {
        guard let second else { return writer.string(5, first) }
        writer.lengthDelimited(5, length: first.utf8.count + 1 + second.utf8.count)
        writer.out.append(utf8: first)
        writer.out.append(UInt8(ascii: " "))
        writer.out.append(utf8: second)
    }

    /// `Span.status`: the message, and STATUS_CODE_ERROR.
    func error(_ message: String) {
        writer.message(15) { status in  // Status { message = 2; code = 3 }
            status.string(2, message)
            status.varintField(3, 2)
        }
    }

    /// An attribute whose key is not static (the resource's).
    func attribute(_ attribute: SpanAttribute) {
        let keyLength = attribute.key.utf8.count
        switch attribute.value {
        case .string(var text): text.withUTF8 { string(keyLength: keyLength, key: { writer.out.append(utf8: attribute.key) }, $0) }
        case .int(let number): int(keyLength: keyLength, key: { writer.out.append(utf8: attribute.key) }, number)
        }
    }
}

/// Protocol Buffers' wire format, for the few message shapes OTLP needs, written into an `EncodingBuffer`.
struct ProtobufWriter {
    let out: EncodingBuffer

    init(_ out: EncodingBuffer) {
        self.out = out
    }

    @inline(__always)
    static func varintLength(_ value: UInt64) -> Int {
        value == 0 ? 1 : (64 - value.leadingZeroBitCount + 6) / 7
    }

    /// The bytes a length-delimited field takes: its key, its length, its content.
    @inline(__always)
    static func encodedLength(field: UInt64, length: Int) -> Int {
        varintLength(field << 3 | 2) + varintLength(UInt64(length)) + length
    }

    @inline(__always)
    func varint(_ value: UInt64) {
        if value < 0x80 {
            out.append(UInt8(value))  // keys, and most lengths and numbers
        } else {
            out.append(varint: value)
        }
    }

    @inline(__always)
    private func key(_ field: UInt64, wireType: UInt64) {
        varint(field << 3 | wireType)
    }

    @inline(__always)
    func varintField(_ field: UInt64, _ value: UInt64) {
        key(field, wireType: 0)
        varint(value)
    }

    func fixed64(_ field: UInt64, _ value: UInt64) {
        key(field, wireType: 1)
        out.append(bytesOf: value.littleEndian)
    }

    func fixed32(_ field: UInt64, _ value: UInt32) {
        key(field, wireType: 5)
        out.append(bytesOf: value.littleEndian)
    }

    func string(_ field: UInt64, _ value: String) {
        key(field, wireType: 2)
        varint(UInt64(value.utf8.count))
        out.append(utf8: value)
    }

    /// An id as bytes, most significant first (OTLP's span ids).
    func idBytes(_ field: UInt64, _ word: UInt64) {
        key(field, wireType: 2)
        out.append(8)
        out.append(bytesOf: word.bigEndian)
    }

    /// A 128-bit id as bytes, most significant first (OTLP's trace ids).
    func idBytes(_ field: UInt64, _ high: UInt64, _ low: UInt64) {
        key(field, wireType: 2)
        out.append(16)
        out.append(bytesOf: high.bigEndian)
        out.append(bytesOf: low.bigEndian)
    }

    /// A length-delimited field's key and length; its `length` bytes are written next.
    @inline(__always)
    func lengthDelimited(_ field: UInt64, length: Int) {
        key(field, wireType: 2)
        varint(UInt64(length))
    }

    /// A nested message, written in place after `lengthBytes` bytes left for its length: when the length needs
    /// another number of bytes, the body moves.
    func message(_ field: UInt64, lengthBytes: Int = 1, _ body: (ProtobufWriter) -> Void) {
        let start = startMessage(field, lengthBytes: lengthBytes)
        body(self)
        endMessage(start)
    }

    /// Where a nested message's length goes, and how many bytes were left for it.
    struct MessageStart {
        let lengthAt: Int
        let lengthBytes: Int
    }

    /// A nested message's key and the room for its length (`message` without a closure: what goes between is
    /// written by the caller, then `endMessage`).
    @inline(__always)
    func startMessage(_ field: UInt64, lengthBytes: Int) -> MessageStart {
        key(field, wireType: 2)
        let start = MessageStart(lengthAt: out.count, lengthBytes: lengthBytes)
        out.append(repeating: 0, count: lengthBytes)
        return start
    }

    /// The message's length written in the room left for it; when it needs another number of bytes, the body moves.
    func endMessage(_ start: MessageStart) {
        let bodyAt = start.lengthAt + start.lengthBytes
        let length = out.count - bodyAt
        let needed = Self.varintLength(UInt64(length))
        if needed != start.lengthBytes { out.move(from: bodyAt, to: start.lengthAt + needed, length: length) }
        var value = UInt64(length)
        for index in 0..<needed {
            out.set(UInt8(truncatingIfNeeded: value) | (index == needed - 1 ? 0 : 0x80), at: start.lengthAt + index)
            value >>= 7
        }
    }

    /// `Span` (opentelemetry-proto trace.v1): ids, name, kind, times, attributes, status and flags.
    func span(_ span: SpanRecord) {
        idBytes(1, span.traceID.high, span.traceID.low)
        idBytes(2, span.spanID)
        if let state = span.traceState, !state.isEmpty { string(3, state) }
        if span.parentSpanID != 0 { idBytes(4, span.parentSpanID) }
        varintField(6, span.kind == .server ? 2 : 3)  // SPAN_KIND_SERVER, SPAN_KIND_CLIENT
        fixed64(7, span.startUnixNanoseconds)
        fixed64(8, span.endUnixNanoseconds)
        // The name (5), the attributes (9) and the status (15) from one look at the details; a message's fields may
        // come in any order.
        var description = OTLPAttributes(writer: self, field: 9)  // Span.attributes
        span.describe(into: &description)
        // Sampled (W3C flag 01), and whether the parent is remote (known: bit 8; remote: bit 9): a server span's
        // parent is the caller's, a client span's is ours.
        let remoteParent: UInt32 = span.kind == .server && span.parentSpanID != 0 ? 0x200 : 0
        fixed32(16, 0x101 | remoteParent)
    }
}
