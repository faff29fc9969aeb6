import NIOHTTP1

/// Who may change a sidecar through its admin listener (drain and undrain endpoints). Never a web page: a
/// browser on the host could otherwise post a form to 127.0.0.1 (cross-site request forgery) or reach it under
/// a name of the attacker's (DNS rebinding). With a token, only requests that carry it; without one, only on
/// a loopback admin, since anyone who can connect could drain the mesh's endpoints.
public struct AdminMutationGuard: Sendable {
    public enum Refusal: Equatable, Sendable {
        /// `Origin` or `Sec-Fetch-Site` (other than `none`): a browser sent it on a page's behalf.
        case browser(String)
        /// No token, and `Host` is a name rather than an address or `localhost`.
        case foreignHost(String)
        /// The admin listens beyond loopback and no token is configured.
        case tokenRequired
        /// A token is configured and the request's `Authorization: Bearer` does not match it.
        case wrongToken

        public var status: HTTPResponseStatus { self == .wrongToken ? .unauthorized : .forbidden }

        public var explanation: String {
            switch self {
            case .browser(let header): return "a browser request (\(header)) may not change the sidecar"
            case .foreignHost(let host): return "Host '\(host)' is not an address of this admin; use its IP address"
            case .tokenRequired: return "the admin listens beyond loopback: changes need admin.tokenFile set and its token sent"
            case .wrongToken: return "expected 'Authorization: Bearer TOKEN' with the token of admin.tokenFile"
            }
        }
    }

    private let token: String?
    private let loopback: Bool

    /// - Parameters:
    ///   - token: the admin token, if one is configured.
    ///   - loopback: whether the admin listens on a loopback address only.
    public init(token: String?, loopback: Bool) {
        self.token = token
        self.loopback = loopback
    }

    public func check(_ headers: HTTPHeaders) -> Refusal? {
        if let origin = headers.first(name: "origin") { return .browser("Origin: \(origin)") }
        if let site = headers.first(name: "sec-fetch-site"), site != "none" { return .browser("Sec-Fetch-Site: \(site)") }
        if let token {
            let expected = Array("Bearer \(token)".utf8)
            let given = Array((headers.first(name: "authorization") ?? "").utf8)
            // Compared in time that does not depend on where they differ.
            var difference = expected.count ^ given.count
            for index in expected.indices { difference |= Int(expected[index] ^ (index < given.count ? given[index] : 0)) }
            return difference == 0 ? nil : .wrongToken
        }
        guard loopback else { return .tokenRequired }
        let host = headers.first(name: "host") ?? ""
        return Self.isAddressOrLocalhost(host) ? nil : .foreignHost(host)
    }

    /// `127.0.0.1:15000`, `[::1]:15000`, `localhost:15000` (ports optional).
    static func isAddressOrLocalhost(_ host: String) -> Bool {
        var name = Substring(host)
        if name.hasPrefix("[") { return name.contains("]") }
        if let colon = name.lastIndex(of: ":") { name = name[..<colon] }
        let octets = name.split(separator: ".", omittingEmptySubsequences: false)
        return name == "localhost" || (octets.count == 4 && octets.allSatisfy { UInt8($0) != nil })
    }
}
