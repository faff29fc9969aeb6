import NIOCore
import NIOHTTP1
import OutriggerConfig
@testable import OutriggerCore
import Testing

@Suite("Request routing: answered here, a fallback response, or an endpoint")
struct RequestRoutingTests {
    static func cluster(_ name: String, loadBalancer: LoadBalancerConfig = LoadBalancerConfig(), limits: ClusterLimits = ClusterLimits(),
                        breakers: BreakerConfig? = nil) -> ClusterRuntime {
        let host = HostPort(host: "127.0.0.1", port: 1)
        let config = ClusterConfig(name: name, endpoints: [host], loadBalancer: loadBalancer, limits: limits, breakers: breakers)
        let endpoint = Endpoint(configured: host, address: try! SocketAddress(ipAddress: "127.0.0.1", port: 1), cluster: config)
        return ClusterRuntime(config: config, endpoints: [endpoint], stats: ProxyStats().cluster(name))
    }

    static func listener(_ clusters: [ClusterRuntime], fallback: RouteFallback? = nil, maxBody: Int? = nil) throws -> ListenerRuntime {
        let config = ListenerConfig(
            name: "in", address: HostPort(host: "127.0.0.1", port: 0), maxRequestHeadersBytes: 200, maxRequestBodyBytes: maxBody,
            virtualHosts: [VirtualHostConfig(name: "users", domains: ["users"], routes: [
                RouteConfig(name: "api", match: RouteMatchConfig(path: .prefix("/api")), destination: .cluster(clusters[0].name), fallback: fallback),
            ])])
        let byName = Dictionary(uniqueKeysWithValues: clusters.map { ($0.name, $0) })
        return ListenerRuntime(config: config, routes: try RouteTable(config.virtualHosts, clusters: byName), stats: ProxyStats().listener("in"))
    }

    static func head(_ uri: String = "/api/x", host: String? = "users", headers: HTTPHeaders = [:]) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
        if let host { head.headers.add(name: "host", value: host) }
        return head
    }

    /// The hash keys the picks were given.
    final class HashKeys {
        var values: [UInt64?] = []
    }

    /// Routes `head` with picks that return the cluster's first endpoint unless told otherwise; random numbers 42, 43…
    static func route(_ head: HTTPRequestHead, on listener: ListenerRuntime, malformed: LocalReplyReason? = nil,
                      pick: (ClusterRuntime) -> Endpoint? = { $0.endpoints.first }, admit: (Endpoint, ClusterRuntime) -> Endpoint? = { e, _ in e },
                      hashKeys: HashKeys = HashKeys()) -> RequestRouting {
        var counter: UInt64 = 41
        return RequestRouting.route(head, facts: RequestHeadFacts(head), on: listener, malformedHTTP2: malformed, clientAddress: "10.0.0.1", now: 1_000,
                                    random: { counter += 1; return counter },
                                    pick: { cluster, key in hashKeys.values.append(key); return pick(cluster) }, admit: admit)
    }

    static func reason(_ routing: RequestRouting) -> LocalReplyReason? {
        switch routing {
        case .localReply(let reason), .routedLocalReply(let reason, _, _): reason
        default: nil
        }
    }

    static func routed(_ routing: RequestRouting) -> RoutedRequest? {
        if case .routed(let routed) = routing { return routed }
        return nil
    }

    @Test func refusalsComeFirstInTheirOrder() throws {
        let listener = try Self.listener([Self.cluster("a")], maxBody: 10)
        #expect(Self.reason(Self.route(Self.head(host: nil), on: listener)) == .invalidHost)
        #expect(Self.reason(Self.route(Self.head(host: nil), on: listener, malformed: .badRequest)) == .badRequest)
        #expect(Self.reason(Self.route(Self.head(headers: ["content-length": "11"]), on: listener, malformed: .badRequest)) == .bodyTooLarge)
        #expect(Self.reason(Self.route(Self.head(headers: ["x-big": String(repeating: "b", count: 300), "content-length": "11"]), on: listener))
                == .headersTooLarge)
        listener.stats.overloadLevelValue.set(Int(OverloadLevel.refusingRequests.rawValue))
        #expect(Self.reason(Self.route(Self.head(host: nil), on: listener)) == .overload)
    }

    @Test func aRequestNoRouteTakesIsAnsweredSo() throws {
        let listener = try Self.listener([Self.cluster("a")])
        #expect(Self.reason(Self.route(Self.head("/other"), on: listener)) == .noRoute)
        #expect(Self.reason(Self.route(Self.head(host: "orders"), on: listener)) == .noRoute)
    }

    @Test func aRoutedRequestGetsItsEndpointAndACookieWhenItsSessionHasNone() throws {
        let plain = Self.cluster("a")
        let listener = try Self.listener([plain])
        let routed = try #require(Self.routed(Self.route(Self.head(), on: listener)))
        #expect(routed.cluster === plain && routed.endpoint === plain.endpoints[0] && !routed.viaFallback && routed.setCookie == nil)

        let sticky = Self.cluster("a", loadBalancer: LoadBalancerConfig(policy: .ringHash, hashPolicy: .cookie("session", ttl: .seconds(60))))
        let stickyListener = try Self.listener([sticky])
        let keys = HashKeys()
        let fresh = try #require(Self.routed(Self.route(Self.head(), on: stickyListener, hashKeys: keys)))
        let value = String(43, radix: 16)  // the second number drawn (the first picked the cluster)
        #expect(fresh.setCookie == "session=\(value); Max-Age=60; Path=/; HttpOnly")
        #expect(keys.values == [StableHash.of(value)], "hashed as its later requests will be")
        let returning = try #require(Self.routed(Self.route(Self.head(headers: ["cookie": "session=\(value)"]), on: stickyListener, hashKeys: keys)))
        #expect(returning.setCookie == nil && keys.values.count == 2 && keys.values[1] == keys.values[0])
    }

    @Test func aFullClusterOverflows() throws {
        let full = Self.cluster("a", limits: ClusterLimits(maxRequests: 1))
        full.stats.requestsActive.increment()
        #expect(Self.reason(Self.route(Self.head(), on: try Self.listener([full]))) == .overflow)
        #expect(full.stats.overflowMaxRequests.current == 1)
    }

    @Test func aClusterWithoutEndpointsFallsBackOrSaysWhy() throws {
        let primary = Self.cluster("a"), backup = Self.cluster("b")
        let viaCluster = try Self.listener([primary, backup], fallback: .cluster("b"))
        let rescued = try #require(Self.routed(Self.route(Self.head(), on: viaCluster, pick: { $0 === primary ? nil : $0.endpoints.first })))
        #expect(rescued.cluster === backup && rescued.viaFallback)

        let viaResponse = try Self.listener([primary], fallback: .response(status: 503, headers: [], body: "later"))
        guard case .fallbackResponse(503, _, "later") = Self.route(Self.head(), on: viaResponse, pick: { _ in nil }) else {
            Issue.record("the route's fixed answer")
            return
        }
        #expect(Self.reason(Self.route(Self.head(), on: try Self.listener([primary]), pick: { _ in nil })) == .noHealthyUpstream)
    }

    @Test func theBreakersHaveTheLastWord() throws {
        let guarded = Self.cluster("a", breakers: BreakerConfig(consecutiveFailures: 1))
        let listener = try Self.listener([guarded])
        #expect(Self.reason(Self.route(Self.head(), on: listener, admit: { _, _ in nil })) == .breakerOpen)
        let other = Endpoint(configured: HostPort(host: "127.0.0.1", port: 2), address: try SocketAddress(ipAddress: "127.0.0.1", port: 2),
                             cluster: guarded.config)
        #expect(Self.routed(Self.route(Self.head(), on: listener, admit: { _, _ in other }))?.endpoint === other)
        #expect(Self.routed(Self.route(Self.head(), on: try Self.listener([Self.cluster("b")]), admit: { _, _ in nil })) != nil,
                "no breakers: not asked")
    }
}
