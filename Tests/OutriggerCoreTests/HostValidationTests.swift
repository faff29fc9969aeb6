import NIOHTTP1
import OutriggerCore
import Testing

@Suite("Host validation (RFC 9112 §3.2, RFC 9113 §8.3.1)")
struct HostValidationTests {
    static func hasValidHost(_ hosts: [String], version: HTTPVersion) -> Bool {
        let headers = HTTPHeaders([("accept", "*/*")] + hosts.map { ("Host", $0) })
        return RequestHeadFacts(HTTPRequestHead(version: version, method: .GET, uri: "/", headers: headers)).hasValidHost
    }

    @Test(arguments: [
        ("example.com", true), ("example.com:8080", true), ("127.0.0.1", true), ("[::1]:443", true), ("[2001:db8::1]", true),
        ("", true), ("xn--bcher-kva.example", true), ("a_b.internal", true),
        ("a b", false), ("example.com:", true), ("example.com:80a", false), ("example.com:123456", false),
        ("[::1", false), ("[]", false), ("exa/mple", false), ("a@b", false), ("[::1]x", false), ("é.example", false),
        ("[::1]:", true), ("[::1]:65535", true), ("[::1]:123456", false), ("[g::1]", false), ("[::1]]", false), ("a:1:2", false),
        ("a:", true), (":80", true), ("[", false),
    ])
    func hostValues(value: String, valid: Bool) {
        #expect(ProxyHeaders.isValidHost(value) == valid, "\(value)")
    }

    @Test func http11NeedsExactlyOneHostAndHTTP10MayHaveNone() {
        #expect(Self.hasValidHost(["a"], version: .http1_1))
        #expect(!Self.hasValidHost([], version: .http1_1), "no Host")
        #expect(!Self.hasValidHost(["a", "a"], version: .http1_1), "two Host lines, even equal")
        #expect(!Self.hasValidHost(["a b"], version: .http1_1))
        #expect(Self.hasValidHost([], version: .http1_0))
        #expect(!Self.hasValidHost(["a", "b"], version: .http1_0))
    }

    @Test func http2HostsMustAgree() {
        let http2 = HTTPVersion(major: 2, minor: 0)
        #expect(Self.hasValidHost([], version: http2), ":authority may be absent")
        #expect(Self.hasValidHost(["a", "a"], version: http2))
        #expect(!Self.hasValidHost(["a", "b"], version: http2))
    }
}

@Suite("Field values an HTTP/1.1 message may carry (RFC 9110 §5.5)")
struct FieldValueValidationTests {
    @Test(arguments: [
        ("text/plain; charset=utf-8", true), ("", true), ("a\tb", true), ("with spaces", true), ("ünïcödé", true), ("~!@#$%^&*()", true),
        ("a\u{01}b", false), ("\u{7F}", false), ("a\rb", false), ("a\nb", false), ("\u{0}", false), ("\u{1B}[31m", false),
    ])
    func fieldValues(_ value: String, _ valid: Bool) {
        #expect(ProxyHeaders.isValidFieldValue(value) == valid)
    }
}
