import NIOHTTP1
import OutriggerConfig

/// A listener's compiled routing: virtual hosts by Host/:authority, then routes in order.
/// Immutable; built once per config and shared by every event loop.
public struct RouteTable: Sendable {
    private let exactHosts: [String: Int]
    /// `*.example.com` stored as `.example.com`, longest first so the most specific wins.
    private let suffixHosts: [(suffix: String, virtualHost: Int)]
    private let anyHost: Int?
    private let virtualHosts: [[Route]]

    /// - Parameter stats: each route's latency histograms, by its name (kept across reloads by the caller).
    public init(_ virtualHosts: [VirtualHostConfig], clusters: [String: ClusterRuntime],
                stats: (String) -> RouteStats = { RouteStats(listener: "", name: $0) }) throws {
        var exact: [String: Int] = [:]
        var suffixes: [(String, Int)] = []
        var any: Int?
        for (index, virtualHost) in virtualHosts.enumerated() {
            for domain in virtualHost.domains {
                if domain == "*" {
                    if any == nil { any = index }
                } else if domain.hasPrefix("*.") {
                    suffixes.append((String(domain.dropFirst(1)), index))
                } else if exact[domain] == nil {
                    exact[domain] = index
                }
            }
        }
        self.exactHosts = exact
        self.suffixHosts = suffixes.sorted { $0.0.utf8.count > $1.0.utf8.count }
        self.anyHost = any
        self.virtualHosts = try virtualHosts.map { virtualHost in
            try virtualHost.routes.enumerated().map { index, route in
                try Route(route, virtualHost: virtualHost.name, index: index, clusters: clusters, stats: stats)
            }
        }
    }

    /// Every route, virtual host by virtual host, in order.
    public var allRoutes: [Route] { virtualHosts.flatMap { $0 } }

    /// The first route of the matching virtual host that matches, or nil (→ 404 `no_route`).
    /// - Parameters:
    ///   - host: the Host header or `:authority`, any case, with or without a port.
    ///   - path: the path without the query string.
    public func route(host: String, path: Substring, method: HTTPMethod, headers: HTTPHeaders) -> Route? {
        guard let virtualHost = virtualHostIndex(for: host) else { return nil }
        for route in virtualHosts[virtualHost] where route.matches(path: path, method: method, headers: headers) {
            return route
        }
        return nil
    }

    func virtualHostIndex(for rawHost: String) -> Int? {
        if exactHosts.isEmpty && suffixHosts.isEmpty { return anyHost }
        let host = Self.normalize(rawHost)
        if let index = exactHosts[host] { return index }
        for (suffix, index) in suffixHosts where host.hasSuffix(suffix) && host.utf8.count > suffix.utf8.count {
            return index
        }
        return anyHost
    }

    /// Lower-cased, without the port (`Example.com:8080` → `example.com`, `[::1]:80` → `[::1]`).
    static func normalize(_ host: String) -> String {
        var end = host.endIndex
        if let colon = host.lastIndex(of: ":"), !host[colon...].contains("]") {
            end = colon
        }
        let bare = host[..<end]
        if bare.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            return bare.lowercased()
        }
        return String(bare)
    }
}

/// One compiled route: its match, where it sends traffic, and what it rewrites.
public final class Route: Sendable {
    public let name: String
    public let virtualHost: String
    /// The path matched by prefix, compared as bytes in place — most routes, `/` among them: a field read without
    /// copying an enum (which retains a regex's boxes); otherwise by `pathMatch`.
    private let pathPrefix: String?
    let pathMatch: PathMatch?
    let methods: [HTTPMethod]
    let headerMatches: [HeaderMatchConfig]
    public let destination: ClusterChoice
    public let prefixRewrite: String?
    public let hostRewrite: String?
    public let timeout: Duration?
    public let requestHeaders: HeaderMutations
    /// `requestHeaders` change `x-request-id`: the id a request carries is read again after them.
    let requestHeadersChangeRequestID: Bool
    public let responseHeaders: HeaderMutations
    public let retries: RetryPolicy
    public let fallback: Fallback?
    public let stats: RouteStats

    /// A route's fallback with its cluster found.
    public enum Fallback: Sendable {
        case cluster(ClusterRuntime)
        case response(status: Int, headers: [HeaderValue], body: String)
    }

    /// A path matched other than by prefix.
    enum PathMatch: Sendable {
        case exact(String)
        case regex(RegexBox)
    }

    init(_ config: RouteConfig, virtualHost: String, index: Int, clusters: [String: ClusterRuntime], stats: (String) -> RouteStats) throws {
        self.name = config.name ?? "\(virtualHost)/\(index)"
        self.stats = stats(name)
        self.virtualHost = virtualHost
        switch config.match.path {
        case .prefix(let prefix): (pathPrefix, pathMatch) = (prefix, nil)
        case .exact(let path): (pathPrefix, pathMatch) = (nil, .exact(path))
        case .regex(let pattern): (pathPrefix, pathMatch) = (nil, .regex(try RegexBox(pattern)))
        }
        self.methods = config.match.methods.map { HTTPMethod(rawValue: $0) }
        self.headerMatches = config.match.headers
        self.destination = try ClusterChoice(config.destination, clusters: clusters)
        self.prefixRewrite = config.prefixRewrite
        self.hostRewrite = config.hostRewrite
        self.timeout = config.timeout
        self.requestHeaders = config.requestHeaders
        self.requestHeadersChangeRequestID = config.requestHeaders.changes(OutriggerHeader.requestID)
        self.responseHeaders = config.responseHeaders
        self.retries = config.retries
        switch config.fallback {
        case .cluster(let name)?:
            guard let cluster = clusters[name] else { throw RuntimeConfigError.unknownCluster(name) }
            self.fallback = .cluster(cluster)
        case .response(let status, let headers, let body)?:
            self.fallback = .response(status: status, headers: headers, body: body)
        case nil:
            self.fallback = nil
        }
    }

    /// Paths and header values compare as bytes, as HTTP defines them (and ~4× faster than `String`'s
    /// Unicode-aware comparison): a precomposed `é` and `e` + combining accent are different paths.
    func matches(path: Substring, method: HTTPMethod, headers: HTTPHeaders) -> Bool {
        if let pathPrefix {
            guard Self.bytes(of: path, startWith: pathPrefix) else { return false }
        } else {
            switch pathMatch {
            case .exact(let exact)?: guard path.utf8.elementsEqual(exact.utf8) else { return false }
            case .regex(let regex)?: guard regex.wholeMatch(path) else { return false }
            case nil: break
            }
        }
        if !methods.isEmpty && !methods.contains(method) { return false }
        for match in headerMatches {
            switch match.condition {
            case .present(let wanted):
                if headers.contains(name: match.name) != wanted { return false }
            case .exact(let value):
                guard headers[match.name].contains(where: { $0.utf8.elementsEqual(value.utf8) }) else { return false }
            case .prefix(let prefix):
                guard headers[match.name].contains(where: { $0.utf8.starts(with: prefix.utf8) }) else { return false }
            }
        }
        return true
    }

    /// Whether `path`'s UTF-8 begins with `prefix`'s, read in place.
    static func bytes(of path: Substring, startWith prefix: String) -> Bool {
        var starts = false
        prefix.withUTF8Bytes { prefix in
            var path = path
            path.withUTF8 { path in
                guard path.count >= prefix.count else { return }
                for index in 0..<prefix.count where path[index] != prefix[index] { return }
                starts = true
            }
        }
        return starts
    }

    /// The upstream path after the prefix rewrite: `/api/v1/x?q` with prefix `/api` → `/internal` gives `/internal/v1/x?q`.
    public func rewrittenURI(_ uri: String) -> String {
        guard let replacement = prefixRewrite else { return uri }
        let prefix: String
        switch (pathPrefix, pathMatch) {
        case (let value?, _), (nil, .exact(let value)?): prefix = value
        case (nil, .regex?), (nil, nil): return uri
        }
        guard uri.hasPrefix(prefix) else { return uri }
        var rest = uri.dropFirst(prefix.utf8.count)
        // Avoid `//` when the replacement ends with `/` and the rest starts with one.
        if replacement.hasSuffix("/") && rest.hasPrefix("/") { rest = rest.dropFirst() }
        return replacement + rest
    }
}

/// Swift's `Regex` is not `Sendable`; a compiled pattern is never mutated after construction, and
/// matching copies it per call, so sharing it read-only between event loops is safe.
struct RegexBox: @unchecked Sendable {
    private let regex: Regex<AnyRegexOutput>

    init(_ pattern: String) throws {
        self.regex = try Regex(pattern)
    }

    func wholeMatch(_ text: Substring) -> Bool {
        (try? regex.wholeMatch(in: text)) != nil
    }
}

/// The cluster a route sends to, or the weighted split between several.
public struct ClusterChoice: Sendable {
    private let clusters: [ClusterRuntime]
    /// Running totals of the weights; empty when there is one cluster.
    private let cumulativeWeights: [UInt64]

    init(_ destination: RouteDestination, clusters byName: [String: ClusterRuntime]) throws {
        switch destination {
        case .cluster(let name):
            guard let cluster = byName[name] else { throw RuntimeConfigError.unknownCluster(name) }
            self.clusters = [cluster]
            self.cumulativeWeights = []
        case .weightedClusters(let weighted):
            var total: UInt64 = 0
            var clusters: [ClusterRuntime] = []
            var cumulative: [UInt64] = []
            for entry in weighted {
                guard let cluster = byName[entry.cluster] else { throw RuntimeConfigError.unknownCluster(entry.cluster) }
                total += UInt64(entry.weight)
                clusters.append(cluster)
                cumulative.append(total)
            }
            self.clusters = clusters
            self.cumulativeWeights = cumulative
        }
    }

    /// Picks a cluster; `random` is any uniformly distributed value (injected so tests are deterministic).
    public func pick(random: UInt64) -> ClusterRuntime {
        guard let total = cumulativeWeights.last else { return clusters[0] }
        let point = random % total
        for (index, bound) in cumulativeWeights.enumerated() where point < bound {
            return clusters[index]
        }
        return clusters[clusters.count - 1]
    }
}

public enum RuntimeConfigError: Error, CustomStringConvertible {
    case unknownCluster(String)

    public var description: String {
        switch self {
        case .unknownCluster(let name): return "unknown cluster '\(name)'"
        }
    }
}
