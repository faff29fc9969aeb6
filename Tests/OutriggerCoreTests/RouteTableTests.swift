import NIOCore
import NIOHTTP1
import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Route matching")
struct RouteTableTests {
    static let stats = ProxyStats()

    static func clusters(_ names: [String]) -> [String: ClusterRuntime] {
        var result: [String: ClusterRuntime] = [:]
        for name in names {
            let config = ClusterConfig(name: name, endpoints: [HostPort(host: "127.0.0.1", port: 1)])
            let endpoint = Endpoint(configured: config.endpoints[0], address: try! SocketAddress(ipAddress: "127.0.0.1", port: 1), cluster: config)
            result[name] = ClusterRuntime(config: config, endpoints: [endpoint], stats: stats.cluster(name))
        }
        return result
    }

    static func table(_ virtualHosts: [VirtualHostConfig]) throws -> RouteTable {
        try RouteTable(virtualHosts, clusters: clusters(["a", "b", "c", "d"]))
    }

    static func route(_ table: RouteTable, host: String = "x", _ uri: String, method: HTTPMethod = .GET, headers: HTTPHeaders = [:]) -> String? {
        table.route(host: host, path: ProxyHeaders.path(of: uri), method: method, headers: headers)?.name
    }

    @Test("a path prefix compares as bytes, in the path's own part of the URI")
    func pathPrefixesCompareAsBytes() {
        let uri = "/api/v1/users?q=/api/v2"
        let path = uri[uri.startIndex..<uri.firstIndex(of: "?")!]
        for (prefix, starts) in [("", true), ("/", true), ("/api/v1", true), ("/api/v1/users", true), ("/api/v1/users?", false),
                                 ("/api/v2", false), ("/API", false), ("/api/v1/usersx", false)] {
            #expect(Route.bytes(of: path, startWith: prefix) == starts, "\(prefix)")
        }
        let accented = "/caf\u{E9}/menu"  // precomposed é: not e and a combining accent
        #expect(Route.bytes(of: accented[...], startWith: "/caf\u{E9}"))
        #expect(!Route.bytes(of: accented[...], startWith: "/cafe\u{301}"))
        #expect(Route.bytes(of: accented.dropFirst(5), startWith: "/menu"))
    }

    @Test func virtualHostsByExactThenLongestSuffixThenAny() throws {
        let table = try Self.table([
            VirtualHostConfig(name: "any", domains: ["*"], routes: [RouteConfig(name: "any", destination: .cluster("a"))]),
            VirtualHostConfig(name: "wide", domains: ["*.example.com"], routes: [RouteConfig(name: "wide", destination: .cluster("a"))]),
            VirtualHostConfig(name: "narrow", domains: ["*.api.example.com"], routes: [RouteConfig(name: "narrow", destination: .cluster("a"))]),
            VirtualHostConfig(name: "exact", domains: ["api.example.com"], routes: [RouteConfig(name: "exact", destination: .cluster("a"))]),
        ])
        #expect(Self.route(table, host: "api.example.com", "/") == "exact")
        #expect(Self.route(table, host: "API.Example.com:8080", "/") == "exact", "case and port are ignored")
        #expect(Self.route(table, host: "v1.api.example.com", "/") == "narrow")
        #expect(Self.route(table, host: "www.example.com", "/") == "wide")
        #expect(Self.route(table, host: "example.com", "/") == "any", "*.example.com needs a subdomain")
        #expect(Self.route(table, host: "other.org", "/") == "any")
        #expect(Self.route(table, host: "", "/") == "any")
    }

    @Test func noMatchingVirtualHostMeansNoRoute() throws {
        let table = try Self.table([VirtualHostConfig(name: "only", domains: ["a.com"], routes: [RouteConfig(destination: .cluster("a"))])])
        #expect(Self.route(table, host: "b.com", "/") == nil)
    }

    @Test func routesMatchInOrderByPathMethodAndHeaders() throws {
        let table = try Self.table([VirtualHostConfig(name: "v", domains: ["*"], routes: [
            RouteConfig(name: "exact", match: RouteMatchConfig(path: .exact("/health")), destination: .cluster("a")),
            RouteConfig(name: "regex", match: RouteMatchConfig(path: .regex("/items/[0-9]+")), destination: .cluster("a")),
            RouteConfig(name: "post-only", match: RouteMatchConfig(path: .prefix("/api"), methods: ["POST"]), destination: .cluster("b")),
            RouteConfig(name: "blue", match: RouteMatchConfig(path: .prefix("/api"), headers: [HeaderMatchConfig(name: "X-Tenant", condition: .exact("blue"))]), destination: .cluster("c")),
            RouteConfig(name: "debug", match: RouteMatchConfig(path: .prefix("/api"), headers: [HeaderMatchConfig(name: "x-debug", condition: .present(true))]), destination: .cluster("c")),
            RouteConfig(name: "v2", match: RouteMatchConfig(path: .prefix("/api"), headers: [HeaderMatchConfig(name: "x-version", condition: .prefix("2."))]), destination: .cluster("c")),
            RouteConfig(name: "api", match: RouteMatchConfig(path: .prefix("/api")), destination: .cluster("d")),
        ])])
        #expect(Self.route(table, "/health") == "exact")
        #expect(Self.route(table, "/health?full=1") == "exact", "the query is not part of the path")
        #expect(Self.route(table, "/healthz") == nil)
        #expect(Self.route(table, "/items/42") == "regex")
        #expect(Self.route(table, "/items/42/x") == nil, "a regex matches the whole path")
        #expect(Self.route(table, "/api/x", method: .POST) == "post-only")
        #expect(Self.route(table, "/api/x", headers: ["x-tenant": "blue"]) == "blue")
        #expect(Self.route(table, "/api/x", headers: ["x-tenant": "red"]) == "api")
        #expect(Self.route(table, "/api/x", headers: ["X-Debug": ""]) == "debug")
        #expect(Self.route(table, "/api/x", headers: ["x-version": "2.1"]) == "v2")
        #expect(Self.route(table, "/api/x", headers: ["x-version": "1.9"]) == "api")
        #expect(Self.route(table, "/other") == nil)
    }

    @Test func pathsAndHeaderValuesCompareAsBytes() throws {
        let precomposed = "/caf\u{E9}", decomposed = "/cafe\u{301}"  // equal as Swift Strings, not as bytes
        let table = try Self.table([VirtualHostConfig(name: "v", domains: ["*"], routes: [
            RouteConfig(name: "exact", match: RouteMatchConfig(path: .exact(precomposed)), destination: .cluster("a")),
            RouteConfig(name: "prefix", match: RouteMatchConfig(path: .prefix(precomposed + "/")), destination: .cluster("a")),
            RouteConfig(name: "header", match: RouteMatchConfig(path: .prefix("/h"), headers: [HeaderMatchConfig(name: "x-name", condition: .exact("caf\u{E9}"))]), destination: .cluster("a")),
        ])])
        #expect(Self.route(table, precomposed) == "exact")
        #expect(Self.route(table, decomposed) == nil)
        #expect(Self.route(table, precomposed + "/menu") == "prefix")
        #expect(Self.route(table, decomposed + "/menu") == nil)
        #expect(Self.route(table, "/h", headers: ["x-name": "caf\u{E9}"]) == "header")
        #expect(Self.route(table, "/h", headers: ["x-name": "cafe\u{301}"]) == nil)
    }

    @Test func weightedClustersSplitInProportion() throws {
        let table = try Self.table([VirtualHostConfig(name: "v", domains: ["*"], routes: [
            RouteConfig(destination: .weightedClusters([WeightedCluster(cluster: "a", weight: 90), WeightedCluster(cluster: "b", weight: 10)]))
        ])])
        let route = try #require(table.route(host: "x", path: "/", method: .GET, headers: [:]))
        var counts: [String: Int] = [:]
        for value in 0..<1000 { counts[route.destination.pick(random: UInt64(value)).name, default: 0] += 1 }
        #expect(counts == ["a": 900, "b": 100], "over one cycle of the weights the split is exact")
    }

    @Test func unknownClusterFailsCompilation() {
        #expect(throws: RuntimeConfigError.self) {
            try Self.table([VirtualHostConfig(name: "v", domains: ["*"], routes: [RouteConfig(destination: .cluster("missing"))])])
        }
    }

    @Test(arguments: [
        ("/api", "/internal", "/api/v1/x?q=1", "/internal/v1/x?q=1"),
        ("/api/", "/", "/api/v1", "/v1"),
        ("/api", "/", "/api/v1", "/v1"),
        ("/api", "/", "/api", "/"),
        ("/", "/prefix/", "/x", "/prefix/x"),
    ])
    func prefixRewrite(prefix: String, rewrite: String, uri: String, expected: String) throws {
        let table = try Self.table([VirtualHostConfig(name: "v", domains: ["*"], routes: [
            RouteConfig(match: RouteMatchConfig(path: .prefix(prefix)), destination: .cluster("a"), prefixRewrite: rewrite)
        ])])
        let route = try #require(table.route(host: "x", path: ProxyHeaders.path(of: uri), method: .GET, headers: [:]))
        #expect(route.rewrittenURI(uri) == expected)
    }
}

@Suite("Proxy headers")
struct ProxyHeadersTests {
    static func route(_ config: RouteConfig = RouteConfig(destination: .cluster("a"))) throws -> Route {
        let table = try RouteTable([VirtualHostConfig(name: "v", domains: ["*"], routes: [config])], clusters: RouteTableTests.clusters(["a"]))
        return try #require(table.route(host: "x", path: "/", method: .GET, headers: [:]))
    }

    @Test func hopByHopHeadersAreRemoved() {
        var headers: HTTPHeaders = [
            "Connection": "keep-alive, X-Private", "Keep-Alive": "timeout=5", "X-Private": "secret", "Proxy-Connection": "x",
            "Proxy-Authorization": "Basic x", "Transfer-Encoding": "chunked", "Upgrade": "h2c", "HTTP2-Settings": "AAA",
            "TE": "trailers, deflate", "X-Keep": "yes",
        ]
        ProxyHeaders.removeHopByHop(&headers)
        #expect(headers.map(\.name).sorted() == ["X-Keep", "te"])
        #expect(headers["te"] == ["trailers"], "te: trailers survives for gRPC")
    }

    /// What `removeHopByHop` leaves, in order, for headers as they come from clients and servers.
    static let hopByHopCases: [(headers: [(String, String)], left: [(String, String)])] = [
        // nginx's response: only `Connection` goes.
        ([("Server", "nginx"), ("Date", "Thu, 03 Dec 2026 05:20:24 GMT"), ("Content-Length", "5"), ("Connection", "keep-alive")],
         [("Server", "nginx"), ("Date", "Thu, 03 Dec 2026 05:20:24 GMT"), ("Content-Length", "5")]),
        // Nothing hop-by-hop: untouched.
        ([("host", "a"), ("x-te", "1"), ("connections", "2")], [("host", "a"), ("x-te", "1"), ("connections", "2")]),
        // `close` names a field like any other option.
        ([("Connection", "close"), ("Close", "x"), ("x", "1")], [("x", "1")]),
        // Options in any case, with whitespace and empty elements, over two `Connection` fields.
        ([("Connection", " Keep-Alive ,\tX-Private , ,"), ("x-private", "s"), ("connection", "x-other"), ("X-Other", "o"), ("y", "2")],
         [("y", "2")]),
        // `te: trailers` survives in any case, even when `Connection` names `te`.
        ([("Connection", "te"), ("TE", "Trailers"), ("a", "1")], [("a", "1"), ("te", "trailers")]),
        ([("te", "deflate"), ("te", "gzip, trailers")], [("te", "trailers")]),
        ([("Transfer-Encoding", "chunked"), ("Upgrade", "websocket"), ("Proxy-Authenticate", "Basic"), ("b", "1")], [("b", "1")]),
        // A second `Connection` names a field when the first named only hop-by-hop ones; a trailing tab.
        ([("Connection", "keep-alive"), ("Connection", "x-a\t"), ("x-a", "1"), ("b", "2")], [("b", "2")]),
        // `close` among other options, in any case.
        ([("Connection", "Upgrade, CLOSE"), ("upgrade", "h2c"), ("close", "c"), ("c", "3")], [("c", "3")]),
    ]

    @Test(arguments: hopByHopCases.indices)
    func hopByHopRemovalKeepsTheRestInOrder(_ index: Int) {
        let (fields, left) = Self.hopByHopCases[index]
        var headers = HTTPHeaders(fields)
        ProxyHeaders.removeHopByHop(&headers)
        #expect(headers.map { "\($0.name): \($0.value)" } == left.map { "\($0.0): \($0.1)" })
    }

    @Test func teWithoutTrailersIsDropped() {
        var headers: HTTPHeaders = ["te": "gzip", "x": "1"]
        ProxyHeaders.removeHopByHop(&headers)
        #expect(headers.map(\.name) == ["x"])
    }

    /// As the handler calls it: with the facts of the head as it came. The fields the proxy sends after the head's
    /// are added to it, as the upstream receives them.
    @discardableResult
    static func prepare(_ head: inout HTTPRequestHead, route: Route, clientAddress: String?, scheme: String, addVia: Bool,
                        random: inout FastRandom) -> UpstreamRequestID {
        var own = AppendedOwnFields()
        let id = ProxyHeaders.prepareUpstreamRequest(&head, facts: RequestHeadFacts(head), route: route, clientAddress: clientAddress, scheme: scheme,
                                                     addVia: addVia, appending: &own, random: &random)
        own.add(to: &head.headers)
        return id
    }

    /// As the handler calls it; the fields the proxy sends after the head's are added to it, as the client receives them.
    static func prepareResponse(_ head: inout HTTPResponseHead, facts: ResponseHeadFacts = .unknown, route: Route, upstreamServiceMilliseconds: Int64,
                                addVia: Bool) {
        var own = AppendedResponseFields()
        ProxyHeaders.prepareDownstreamResponse(&head, facts: facts, route: route, upstreamServiceMilliseconds: upstreamServiceMilliseconds,
                                               addVia: addVia, appending: &own)
        own.add(to: &head.headers)
    }

    @Test func upstreamRequestGetsForwardingHeadersAndKeepsRequestID() throws {
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [
            "host": "svc", "x-forwarded-for": "10.0.0.1", "x-request-id": "keep-me", "connection": "close",
        ])
        let id = Self.prepare(&head, route: try Self.route(), clientAddress: "127.0.0.1", scheme: "http", addVia: true, random: &random)
        #expect(id == .inHead("keep-me"))
        #expect(head.headers["x-forwarded-for"] == ["10.0.0.1, 127.0.0.1"])
        #expect(head.headers["x-forwarded-proto"] == ["http"])
        #expect(head.headers["via"] == ["1.1 outrigger"])
        #expect(!head.headers.contains(name: "connection"))
    }

    @Test("fields the client's connection names go, and the proxy's own take their place")
    func fieldsNamedByConnectionAreReplaced() throws {
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: [
            "host": "svc", "connection": "X-Forwarded-Proto, x-request-id", "x-forwarded-proto": "https", "x-request-id": "theirs",
        ])
        let id = Self.prepare(&head, route: try Self.route(), clientAddress: nil, scheme: "http", addVia: false, random: &random)
        #expect(head.headers["x-forwarded-proto"] == ["http"])
        guard case .appended(let generated) = id else { Issue.record("a new id, sent after the head's fields: \(id)"); return }
        #expect(head.headers["x-request-id"] == [generated.text], "theirs is gone")
        // A content-length the connection names goes too: a chunked body keeps its framing.
        head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: [
            "host": "svc", "connection": "content-length", "content-length": "5", "transfer-encoding": "chunked",
        ])
        Self.prepare(&head, route: try Self.route(), clientAddress: nil, scheme: "http", addVia: false, random: &random)
        #expect(head.headers["transfer-encoding"] == ["chunked"] && !head.headers.contains(name: "content-length"))
    }

    @Test("a route without request header rules: the proxy's own fields go after the head's; with rules, into the head")
    func ownFieldsAfterTheHeadOrInIt() throws {
        var random = FastRandom(seed: 3)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc", "x-request-id": "r"])
        var own = AppendedOwnFields(expectedTimeout: "1500")
        let kept = ProxyHeaders.prepareUpstreamRequest(&head, facts: RequestHeadFacts(head), route: try Self.route(), clientAddress: "10.1.1.1",
                                                       scheme: "http", addVia: false, appending: &own, random: &random)
        #expect(kept == .inHead("r"))
        #expect(head.headers.map { "\($0.name): \($0.value)" } == ["host: svc", "x-request-id: r"], "nothing added to the head")
        #expect(own == AppendedOwnFields(forwardedFor: "10.1.1.1", forwardedProto: "http", expectedTimeout: "1500"))

        let ruled = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), requestHeaders: HeaderMutations(add: [HeaderValue(name: "x-team", value: "a")])
        ))
        head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc"])
        own = AppendedOwnFields()
        let generated = ProxyHeaders.prepareUpstreamRequest(&head, facts: RequestHeadFacts(head), route: ruled, clientAddress: "10.1.1.1",
                                                            scheme: "http", addVia: false, appending: &own, random: &random)
        #expect(own.isEmpty, "the route's rules could read or change them")
        #expect(head.headers.map { "\($0.name): \($0.value)" } == [
            "host: svc", "x-forwarded-for: 10.1.1.1", "x-forwarded-proto: http", "x-request-id: \(generated.text)", "x-team: a",
        ])
        #expect(generated.text.count == 36)
    }

    @Test func missingRequestIDIsGeneratedAsUUID() throws {
        var random = FastRandom(seed: 7)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc"])
        let id = Self.prepare(&head, route: try Self.route(), clientAddress: nil, scheme: "https", addVia: false, random: &random)
        guard case .appended(let generated) = id else { Issue.record("sent after the head's fields: \(id)"); return }
        #expect(head.headers["x-request-id"] == [generated.text])
        #expect(generated.text.count == 36)
        #expect(Array(generated.text)[14] == "4", "version 4 UUID")
        // A route whose header rules touch the id gets it as a field of the head, for them to change.
        let touching = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), requestHeaders: HeaderMutations(add: [HeaderValue(name: "x-request-id", value: "also")])
        ))
        head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc"])
        let inHead = Self.prepare(&head, route: touching, clientAddress: nil, scheme: "https", addVia: false, random: &random)
        #expect(head.headers["x-request-id"].count == 2 && head.headers["x-request-id"].last == "also")
        #expect(inHead == .inHead(head.headers["x-request-id"][0]) && inHead.text.count == 36)
        #expect(head.headers["x-forwarded-proto"] == ["https"])
        #expect(!head.headers.contains(name: "via"))
    }

    @Test func theRequestIDReturnedIsTheOneTheRouteLeavesOnTheRequest() throws {
        let setting = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"),
            requestHeaders: HeaderMutations(set: [HeaderValue(name: "X-Request-Id", value: "from-the-route")])
        ))
        let removing = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), requestHeaders: HeaderMutations(remove: ["x-request-id"])
        ))
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc", "x-request-id": "came-in"])
        #expect(Self.prepare(&head, route: setting, clientAddress: nil, scheme: "http", addVia: false, random: &random)
                == .inHead("from-the-route"))
        #expect(head.headers["x-request-id"] == ["from-the-route"])
        head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc", "x-request-id": "came-in"])
        #expect(Self.prepare(&head, route: removing, clientAddress: nil, scheme: "http", addVia: false, random: &random) == .inHead(""))
        let other = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), requestHeaders: HeaderMutations(set: [HeaderValue(name: "x-other", value: "1")])
        ))
        head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "svc", "x-request-id": "came-in"])
        #expect(Self.prepare(&head, route: other, clientAddress: nil, scheme: "http", addVia: false, random: &random) == .inHead("came-in"))
    }

    @Test("the fields the proxy adds come after the client's, in one order; an empty request id is replaced, not repeated")
    func addedFieldsInOrder() throws {
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_0, method: .POST, uri: "/", headers: [
            "Host": "svc", "x-request-id": "", "Transfer-Encoding": "chunked", "accept": "*/*", "Connection": "keep-alive",
        ])
        let id = Self.prepare(&head, route: try Self.route(), clientAddress: "10.1.2.3", scheme: "http", addVia: true,
                                                     random: &random)
        #expect(head.headers.map { "\($0.name): \($0.value)" } == [
            "Host: svc", "accept: */*", "transfer-encoding: chunked", "via: 1.0 outrigger",
            "x-forwarded-for: 10.1.2.3", "x-forwarded-proto: http", "x-request-id: \(id.text)",
        ], "the empty id gone; the proxy's own fields after the head's")
        #expect(id.text.count == 36)
    }

    @Test("a forwarded-for that came in is extended and keeps its place after the framing field, as before")
    func forwardedForExtendedInOrder() throws {
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: [
            "Host": "svc", "X-Forwarded-For": "10.0.0.1", "Transfer-Encoding": "chunked", "x-request-id": "r1",
        ])
        Self.prepare(&head, route: try Self.route(), clientAddress: "10.1.2.3", scheme: "http", addVia: false,
                                            random: &random)
        #expect(head.headers.map { "\($0.name): \($0.value)" } == [
            "Host: svc", "x-request-id: r1", "transfer-encoding: chunked", "x-forwarded-for: 10.0.0.1, 10.1.2.3", "x-forwarded-proto: http",
        ])
    }

    @Test("fields added as the proxy's own go after the block's, in order; none is nothing")
    func ownFieldsInOrder() {
        var headers: HTTPHeaders = ["connection": "close"]
        headers.addOwn([("x-a", "1"), ("x-b", "2")])
        headers.addOwn(name: "x-c", value: "3")
        headers.addOwn([])
        #expect(headers.map { "\($0.name): \($0.value)" } == ["connection: close", "x-a: 1", "x-b: 2", "x-c: 3"])
    }

    @Test func chunkedBodiesKeepTheirFraming() throws {
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/", headers: ["transfer-encoding": "chunked"])
        Self.prepare(&head, route: try Self.route(), clientAddress: nil, scheme: "http", addVia: false, random: &random)
        #expect(head.headers["transfer-encoding"] == ["chunked"])
    }

    @Test func routeRewritesAndMutationsApply() throws {
        let route = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), prefixRewrite: "/v2/", hostRewrite: "internal",
            requestHeaders: HeaderMutations(add: [HeaderValue(name: "x-add", value: "2")], set: [HeaderValue(name: "x-set", value: "new")], remove: ["x-gone"]),
            responseHeaders: HeaderMutations(set: [HeaderValue(name: "x-served-by", value: "outrigger")], remove: ["server"])
        ))
        var random = FastRandom(seed: 1)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/users", headers: ["host": "public", "x-add": "1", "x-set": "old", "x-gone": "x"])
        Self.prepare(&head, route: route, clientAddress: nil, scheme: "http", addVia: false, random: &random)
        #expect(head.uri == "/v2/users")
        #expect(head.headers["host"] == ["internal"])
        #expect(head.headers["x-add"] == ["1", "2"])
        #expect(head.headers["x-set"] == ["new"])
        #expect(!head.headers.contains(name: "x-gone"))

        var response = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["server": "nginx", "connection": "keep-alive"])
        ProxyHeadersTests.prepareResponse(&response, route: route, upstreamServiceMilliseconds: 12, addVia: false)
        #expect(response.headers["x-served-by"] == ["outrigger"])
        #expect(response.headers["x-outrigger-upstream-service-time"] == ["12"])
        #expect(!response.headers.contains(name: "server"))
        #expect(!response.headers.contains(name: "connection"))
    }

    @Test func anUpstreamsOwnServiceTimeIsReplacedByOursWhateverItsCase() throws {
        let route = try Self.route()
        for name in ["x-outrigger-upstream-service-time", "X-Outrigger-Upstream-Service-Time"] {
            var response = HTTPResponseHead(version: .http1_1, status: .ok, headers: [name: "99999", "x-kept": "1", "te": "trailers"])
            ProxyHeadersTests.prepareResponse(&response, route: route, upstreamServiceMilliseconds: 0, addVia: false)
            #expect(response.headers["x-outrigger-upstream-service-time"] == ["0"])
            #expect(response.headers.map(\.name) == ["x-kept", "te", "x-outrigger-upstream-service-time"])
        }
        var alone = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["X-OUTRIGGER-UPSTREAM-SERVICE-TIME": "1"])
        ProxyHeadersTests.prepareResponse(&alone, route: route, upstreamServiceMilliseconds: 1234567, addVia: false)
        #expect(alone.headers.map { "\($0.name): \($0.value)" } == ["x-outrigger-upstream-service-time: 1234567"])
    }

    @Test("the service time goes after a response head's fields; with response header rules, into the head for them")
    func serviceTimeAfterTheHeadOrInIt() throws {
        let adding = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), responseHeaders: HeaderMutations(add: [HeaderValue(name: "x-served-by", value: "o")])
        ))
        let removing = try Self.route(RouteConfig(
            match: RouteMatchConfig(path: .prefix("/")), destination: .cluster("a"), responseHeaders: HeaderMutations(remove: ["x-outrigger-upstream-service-time"])
        ))
        var own = AppendedResponseFields()
        var head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["x-a": "1"])
        ProxyHeaders.prepareDownstreamResponse(&head, route: try Self.route(), upstreamServiceMilliseconds: 5, addVia: false, appending: &own)
        #expect(own.upstreamServiceMilliseconds == 5 && head.headers.map { "\($0.name): \($0.value)" } == ["x-a: 1"])
        own = AppendedResponseFields()
        ProxyHeaders.prepareDownstreamResponse(&head, route: adding, upstreamServiceMilliseconds: 6, addVia: false, appending: &own)
        #expect(own.isEmpty && head.headers.map { "\($0.name): \($0.value)" } == ["x-a: 1", "x-outrigger-upstream-service-time: 6", "x-served-by: o"])
        head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["x-a": "1"])
        ProxyHeaders.prepareDownstreamResponse(&head, route: removing, upstreamServiceMilliseconds: 7, addVia: false, appending: &own)
        #expect(own.isEmpty && head.headers.map { "\($0.name): \($0.value)" } == ["x-a: 1"], "the route's rule removed it")
    }

    @Test func hopByHopNamesAreFoundByTheirLengthInAnyCase() {
        for (index, name) in ProxyHeaders.hopByHopNames.enumerated() {
            #expect(ProxyHeaders.hopByHopIndex(name) == index)
            #expect(ProxyHeaders.hopByHopIndex(name.uppercased()) == index)
            // The same length, one byte off at each end.
            #expect(ProxyHeaders.hopByHopIndex("x" + name.dropFirst()) == nil)
            #expect(ProxyHeaders.hopByHopIndex(name.dropLast() + "x") == nil)
        }
        for name in ["", "t", "tex", "upgrades", "connections", "x-request-id", "content-length"] {
            #expect(ProxyHeaders.hopByHopIndex(name) == nil)
        }
    }

    @Test func decimalsAreWrittenAsStringDoes() {
        for value: Int64 in [0, 7, 9, 10, 99, 100, 999, 1000, 1_234_567, 999_999_999_999_999, 1_000_000_000_000_000, .max, -1, .min] {
            #expect(DecimalText.string(value) == String(value))
        }
    }

    @Test func requestIDsAreDistinct() {
        var random = FastRandom(seed: 3)
        let ids = Set((0..<1000).map { _ in GeneratedRequestID(random: &random).text })
        #expect(ids.count == 1000)
    }
}

@Suite("Reason phrases")
struct ReasonPhraseTests {
    @Test func unknownStatusCodesGetAReasonPhrase() throws {
        let route = try ProxyHeadersTests.route()
        for (code, phrase) in [(599, "Server Error"), (299, "Success"), (499, "Client Error"), (200, "OK"), (503, "Service Unavailable")] {
            var head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: code))
            ProxyHeadersTests.prepareResponse(&head, route: route, upstreamServiceMilliseconds: 1, addVia: false)
            #expect(head.status.code == UInt(code))
            #expect(head.status.reasonPhrase == phrase)
        }
    }
}

@Suite("Runtime snapshot")
struct RuntimeSnapshotTests {
    struct NoSuchHost: Error {}

    @Test func unresolvableEndpointsAreLeftOutAndReported() throws {
        let config = SidecarConfig(
            listeners: [ListenerConfig(name: "l", address: HostPort(host: "127.0.0.1", port: 0), virtualHosts: [])],
            clusters: [ClusterConfig(name: "c", endpoints: [
                HostPort(host: "gone.example", port: 80), HostPort(host: "svc.example", port: 80), HostPort(host: "10.0.0.9", port: 81),
            ])]
        )
        let snapshot = try RuntimeSnapshot(config: config, version: 1, stats: ProxyStats()) { endpoint in
            switch endpoint.host {
            case "gone.example": throw NoSuchHost()
            case "svc.example": return [try SocketAddress(ipAddress: "10.0.0.1", port: 80), try SocketAddress(ipAddress: "10.0.0.2", port: 80)]
            default: return [try SocketAddress(ipAddress: endpoint.host, port: endpoint.port)]
            }
        }
        let endpoints = try #require(snapshot.clusters["c"]).endpoints
        #expect(endpoints.map { $0.address.ipAddress } == ["10.0.0.1", "10.0.0.2", "10.0.0.9"], "every A record is an endpoint")
        #expect(snapshot.unresolved.map(\.endpoint) == [HostPort(host: "gone.example", port: 80)])
    }
}

@Suite("Hop-by-hop names")
struct HopByHopNameTests {
    @Test(arguments: [
        ("Connection", true), ("connection", true), ("TE", true), ("te", true), ("Keep-Alive", true), ("HTTP2-Settings", true),
        ("Proxy-Authorization", true), ("transfer-encoding", true), ("Upgrade", true),
        ("Proxy-Connection", true), ("Proxy-Authenticate", true),
        ("ted", false), ("t", false), ("host", false), ("content-length", false), ("x-connection", false), ("", false),
        ("connectiom", false), ("tf", false), ("upgradx", false), ("keep-alivE ", false),
    ])
    func recognisedWithoutAllocating(name: String, expected: Bool) {
        #expect(ProxyHeaders.isConnectionSpecific(name) == expected)
    }
}
