import NIOHTTP1
import OutriggerCore
import Testing

@Suite("Admin mutation guard")
struct AdminMutationGuardTests {
    static func headers(_ pairs: [(String, String)]) -> HTTPHeaders { HTTPHeaders(pairs) }

    @Test func loopbackWithoutTokenTakesCommandLineClientsOnly() {
        let guardian = AdminMutationGuard(token: nil, loopback: true)
        for host in ["127.0.0.1:15000", "localhost:15000", "[::1]:15000", "localhost", "10.0.0.7"] {
            #expect(guardian.check(Self.headers([("host", host)])) == nil, "\(host)")
        }
        #expect(guardian.check(Self.headers([("host", "evil.example:15000")])) == .foreignHost("evil.example:15000"))
        #expect(guardian.check(Self.headers([("host", "127.0.0.1.evil.example")])) == .foreignHost("127.0.0.1.evil.example"))
        #expect(guardian.check(Self.headers([("host", "127.0.0.1"), ("origin", "null")])) == .browser("Origin: null"))
        #expect(guardian.check(Self.headers([("host", "127.0.0.1"), ("sec-fetch-site", "same-origin")])) == .browser("Sec-Fetch-Site: same-origin"))
        #expect(guardian.check(Self.headers([("host", "127.0.0.1"), ("sec-fetch-site", "none")])) == nil, "typed into the address bar")
    }

    @Test func beyondLoopbackTheTokenDecides() {
        #expect(AdminMutationGuard(token: nil, loopback: false).check(Self.headers([("host", "127.0.0.1")])) == .tokenRequired)
        let guardian = AdminMutationGuard(token: "0123456789abcdef", loopback: false)
        #expect(guardian.check(Self.headers([("host", "sidecar-1:15000"), ("authorization", "Bearer 0123456789abcdef")])) == nil)
        #expect(guardian.check(Self.headers([("authorization", "Bearer 0123456789abcdeF")])) == .wrongToken)
        #expect(guardian.check(Self.headers([("authorization", "Bearer 0123456789abcdef0")])) == .wrongToken)
        #expect(guardian.check(Self.headers([])) == .wrongToken)
        #expect(guardian.check(Self.headers([("origin", "http://x"), ("authorization", "Bearer 0123456789abcdef")])) == .browser("Origin: http://x"),
                "a token does not make a browser request acceptable")
        #expect(AdminMutationGuard.Refusal.wrongToken.status == .unauthorized && AdminMutationGuard.Refusal.tokenRequired.status == .forbidden)
    }
}
