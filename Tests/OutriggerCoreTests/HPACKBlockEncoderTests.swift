import NIOCore
import NIOHPACK
import NIOHTTP1
import OutriggerCore
import Testing

@Suite("HPACK header blocks encoded with hash tables (RFC 7541), read back by NIO's decoder")
struct HPACKBlockEncoderTests {
    private func block(_ encoder: inout HPACKBlockEncoder, _ fields: [(String, String, HPACKBlockEncoder.Indexing)]) -> ByteBuffer {
        var buffer = ByteBuffer()
        encoder.startBlock(into: &buffer)
        for (name, value, indexing) in fields { encoder.encode(name: name, value: value, indexing: indexing, into: &buffer) }
        return buffer
    }

    private func decoded(_ decoder: inout HPACKDecoder, _ block: ByteBuffer) throws -> [String] {
        var block = block
        return try decoder.decodeHeaders(from: &block).map { "\($0.name): \($0.value)" }
    }

    @Test func aRepeatedRequestIsIndexedAndItsUniqueFieldsStayOutOfTheTable() throws {
        let request: [(String, String, HPACKBlockEncoder.Indexing)] = [
            (":method", "GET", .indexable), (":scheme", "http", .indexable), (":authority", "users", .indexable),
            (":path", "/hello", .indexable), ("user-agent", "curl/8", .indexable), ("x-request-id", "1f3a", .indexable),
            ("authorization", "secret", .neverIndexed),
        ]
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        let first = block(&encoder, request)
        let second = block(&encoder, request)
        let expected = request.map { "\($0.0): \($0.1)" }
        #expect(try decoded(&decoder, first) == expected)
        #expect(try decoded(&decoder, second) == expected)
        // The second: five one-byte indexes, then the request id as a literal (its name is in neither table) and the
        // secret as a never-indexed literal with the static table's name (index 23, two bytes with a 4-bit prefix).
        #expect(first.readableBytes > 40)
        #expect(second.readableBytes == 5 + (1 + 1 + 12 + 1 + 4) + (2 + 1 + 6), "\(second.readableBytes) bytes")
        #expect(second.getInteger(at: 0, as: UInt8.self) == 0x82, ":method GET is static index 2")
    }

    /// Credentials go never indexed whatever the caller asked (RFC 7541 §7.1.3), every time; a long cookie is indexed.
    @Test func credentialsStayOutOfTheTable() throws {
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        let longCookie = "session=" + String(repeating: "c", count: 24)
        let fields: [(String, String, HPACKBlockEncoder.Indexing)] = [
            ("authorization", "Bearer abc", .indexable), ("proxy-authorization", "Basic eA==", .indexable),
            ("cookie", "id=42", .indexable), ("cookie", longCookie, .indexable), ("x-other", "1", .indexable),
        ]
        for round in 0..<2 {
            var encoded = block(&encoder, fields)
            let decodedFields = try decoder.decodeHeaders(from: &encoded)
            #expect(decodedFields.map(\.indexable) == [.neverIndexed, .neverIndexed, .neverIndexed, .indexable, .indexable], "round \(round)")
            #expect(decodedFields.map(\.value) == fields.map(\.1))
        }
    }

    @Test func theTableStaysInStepThroughEvictionsAndSizeChanges() throws {
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        var seed: UInt64 = 0x5EED
        func next(_ bound: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(bound))
        }
        let names = ["x-a", "x-b", "content-type", "x-long", ":path", "date", "cookie", "Not-Lower"]
        for round in 0..<400 {
            if next(10) == 0 {
                // The peer's SETTINGS_HEADER_TABLE_SIZE: sometimes shrunk and grown again before the next block.
                let sizes = [0, 60, 256, 4096, 100_000]
                let smaller = sizes[next(sizes.count)]
                encoder.peerAllows(tableSize: smaller)
                if next(2) == 0 { encoder.peerAllows(tableSize: sizes[next(sizes.count)]) }
                decoder.maxDynamicTableLength = HPACKBlockEncoder.defaultTableSize
            }
            var fields: [(String, String, HPACKBlockEncoder.Indexing)] = []
            for _ in 0..<(1 + next(8)) {
                let name = names[next(names.count)]
                let value = name == "x-long" ? String(repeating: "v", count: 100 + next(5000)) : "value-\(next(12))"
                let indexing: [HPACKBlockEncoder.Indexing] = [.indexable, .indexable, .nonIndexable, .neverIndexed]
                fields.append((name, value, indexing[next(indexing.count)]))
            }
            let encoded = block(&encoder, fields)
            #expect(try decoded(&decoder, encoded) == fields.map { "\($0.0): \($0.1)" }, "round \(round)")
        }
    }

    @Test func manyDistinctFieldsChurnThroughTheTableAndARepeatedBlockIsAllIndexes() throws {
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        var random = FastRandom(seed: 0xC0FFEE)
        func next(_ bound: Int) -> Int { Int.random(in: 0..<bound, using: &random) }
        // 400 names, and values new in each round: every block enters the table whole and evicts older ones, and the
        // table's lookups and removals see long probe runs. (A field found in the table is not entered again, so a
        // block's own later entries could evict it before the repeat; new values rule that out.)
        for round in 0..<3000 {
            let fields = (0..<(1 + next(8))).map { index in ("n-\(next(400))", "v-\(round)-\(index)", HPACKBlockEncoder.Indexing.indexable) }
            let first = block(&encoder, fields)
            let again = block(&encoder, fields)
            let expected = fields.map { "\($0.0): \($0.1)" }
            #expect(try decoded(&decoder, first) == expected, "round \(round)")
            #expect(try decoded(&decoder, again) == expected, "round \(round), again")
            // Each field of the repeat is an index (one or two bytes); a literal would take five at least.
            #expect(again.readableBytes <= 2 * fields.count, "round \(round): \(again.readableBytes) bytes for \(fields.count) fields")
        }
    }

    @Test func largeIntegersTakeContinuationBytes() throws {
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        let long = String(repeating: "z", count: 70_000)
        let encoded = block(&encoder, [("x-big", long, .nonIndexable)])
        #expect(try decoded(&decoder, encoded) == ["x-big: \(long)"])
    }

    // MARK: HTTP/1-shaped heads, encoded straight into a block

    private func decoded(_ encode: (inout HPACKBlockEncoder, inout ByteBuffer) -> Void) throws -> [String] {
        var encoder = HPACKBlockEncoder()
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 1 << 20)
        var buffer = ByteBuffer()
        encoder.startBlock(into: &buffer)
        encode(&encoder, &buffer)
        return try decoded(&decoder, buffer)
    }

    @Test func aRequestHeadGoesPseudoFieldsFirstLowerCasedWithoutConnectionSpecificFields() throws {
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/orders?id=1", headers: [
            "User-Agent": "curl/8", "HOST": "orders:8080", "Connection": "keep-alive, X-Private", "Keep-Alive": "5",
            "TE": "Trailers", "te": "gzip", "Transfer-Encoding": "chunked", "Upgrade": "h2c", "Proxy-Connection": "x",
            "content-type": "application/grpc", "X-Private": "kept: only the hop-by-hop step drops it",
        ])
        #expect(try decoded { $0.encode(request: head, scheme: "https", into: &$1) } == [
            ":method: POST", ":scheme: https", ":authority: orders:8080", ":path: /orders?id=1", "user-agent: curl/8",
            "te: trailers", "content-type: application/grpc", "x-private: kept: only the hop-by-hop step drops it",
        ])
        let withoutHost = HTTPRequestHead(version: .http1_0, method: .HEAD, uri: "/", headers: ["Hostname": "h"])
        #expect(try decoded { $0.encode(request: withoutHost, scheme: "http", into: &$1) } == [
            ":method: HEAD", ":scheme: http", ":path: /", "hostname: h",
        ])
    }

    @Test func aResponseHeadAndTrailersGoWithoutConnectionSpecificFields() throws {
        let head = HTTPResponseHead(version: .http1_1, status: .notFound, headers: [
            "Content-Type": "text/plain", "Connection": "close", "Transfer-Encoding": "chunked", "Keep-Alive": "timeout=5",
            "x-outrigger-upstream-service-time-with-a-long-name": "3", "Set-Cookie": "a=1", "set-cookie": "b=2",
        ])
        #expect(try decoded { $0.encode(response: head, into: &$1) } == [
            ":status: 404", "content-type: text/plain", "x-outrigger-upstream-service-time-with-a-long-name: 3",
            "set-cookie: a=1", "set-cookie: b=2",
        ])
        let trailers: HTTPHeaders = ["Grpc-Status": "0", "grpc-message": "", "TE": "trailers", "Upgrade": "x"]
        #expect(try decoded { $0.encode(fields: trailers, into: &$1) } == ["grpc-status: 0", "grpc-message: "])
    }

    /// The proxy's own response fields encoded after the head's: the block the head with them as its last fields makes,
    /// indexed alike (a second response with the same service time is all indexes).
    @Test func aResponsesAppendedFieldsEncodeAsItsLastFields() throws {
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-type": "text/plain", "Connection": "close"])
        var withField = head
        withField.headers.add(name: "x-outrigger-upstream-service-time", value: "12")
        var appending = HPACKBlockEncoder(), asFields = HPACKBlockEncoder()
        for _ in 0..<2 {
            var appended = ByteBuffer(), plain = ByteBuffer()
            appending.encode(response: head, appending: AppendedResponseFields(upstreamServiceMilliseconds: 12), into: &appended)
            asFields.encode(response: withField, into: &plain)
            #expect(appended == plain)
        }
        #expect(try decoded { $0.encode(response: head, appending: AppendedResponseFields(upstreamServiceMilliseconds: 0), into: &$1) } == [
            ":status: 200", "content-type: text/plain", "x-outrigger-upstream-service-time: 0",
        ])
    }

    /// The seven statuses of the static table go as their index (one byte); the others as a literal.
    @Test(arguments: [200, 204, 206, 304, 400, 404, 500, 100, 201, 302, 418, 503, 599])
    func everyStatusDecodesAsItself(code: Int) throws {
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code), headers: ["x-a": "b"])
        #expect(try decoded { $0.encode(response: head, into: &$1) } == [":status: \(code)", "x-a: b"])
        var encoder = HPACKBlockEncoder()
        var bytes = ByteBuffer()
        encoder.encode(response: HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code)), into: &bytes)
        #expect((bytes.readableBytes == 1) == [200, 204, 206, 304, 400, 404, 500].contains(code))
    }

    @Test func namesAreLowerCasedWhereverTheirCapitalsAreAndOnlyThose() throws {
        // A capital at every position of names of 1 to 20 bytes (in the words read eight at a time and in the tail),
        // `A` and `Z` each; the bytes just outside the letters' range, left as they are; and a capital in an eight-byte
        // word with a non-ASCII byte (read byte by byte), the name's first word and its second.
        var names: [String] = []
        for length in 1...20 {
            for position in 0..<length {
                var name = [UInt8](repeating: UInt8(ascii: "x"), count: length)
                for capital in [UInt8(ascii: "A"), UInt8(ascii: "Z")] {
                    name[position] = capital
                    names.append(String(decoding: name, as: UTF8.self))
                }
            }
        }
        names += ["@[`{@[`{@[`{", "\u{FC}xxxxA-name", "x-\u{FC}ber-Name-\u{FC}-x", "all-lower-case-name"]
        let fields = HTTPHeaders(names.enumerated().map { ($1, "v\($0)") })
        let expected = names.enumerated().map { offset, name in
            "\(String(decoding: name.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)): v\(offset)"
        }
        #expect(try decoded { $0.encode(fields: fields, into: &$1) } == expected)
    }
}
