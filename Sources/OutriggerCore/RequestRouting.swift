import NIOHTTP1
import OutriggerConfig

/// A request routed to an endpoint, and what was decided on the way.
public struct RoutedRequest {
    public let route: Route
    public let cluster: ClusterRuntime
    public let endpoint: Endpoint
    /// The route's fallback cluster took the request (its own cluster had no endpoint to offer).
    public let viaFallback: Bool
    /// A session cookie chosen for this client (a cookie hash policy with a ttl, and no cookie yet), sent back with the
    /// response.
    public let setCookie: String?
}

/// Where a request's head takes it, before anything goes upstream: answered here and why, answered with its route's
/// fixed fallback response, or routed to an endpoint of a cluster. The rules are here, with no I/O; the loop makes the
/// picks (`pick`: its balancer for the cluster, with the request's hash key, which also counts the request in the
/// loop's retry budget; `admit`: its breakers, the endpoint picked or another) and gives the random numbers. The one
/// other effect is the cluster's `overflowMaxRequests` counter.
public enum RequestRouting {
    case localReply(LocalReplyReason)
    /// Answered here after a route took it: its cluster is full, or has no endpoint (none healthy, breakers open).
    /// The route's and the cluster's stats count it.
    case routedLocalReply(LocalReplyReason, Route, ClusterRuntime)
    case fallbackResponse(status: Int, headers: [HeaderValue], body: String)
    case routed(RoutedRequest)

    /// - Parameters:
    ///   - malformedHTTP2: why an HTTP/2 stream's head is malformed for a proxy, if it is.
    ///   - now: uptime ns, for why a cluster has no endpoint (a breaker open until then, or none healthy).
    public static func route(_ head: HTTPRequestHead, facts: RequestHeadFacts, on listener: ListenerRuntime, malformedHTTP2: LocalReplyReason?, clientAddress: String?,
                             now: UInt64, random: () -> UInt64, pick: (ClusterRuntime, _ hashKey: UInt64?) -> Endpoint?,
                             admit: (Endpoint, ClusterRuntime) -> Endpoint?) -> RequestRouting {
        if let refusal = refusal(of: facts, on: listener, malformedHTTP2: malformedHTTP2) { return .localReply(refusal) }
        guard let route = listener.routes.route(host: facts.host ?? "", path: ProxyHeaders.path(of: head.uri), method: head.method, headers: head.headers)
        else { return .localReply(.noRoute) }
        var cluster = route.destination.pick(random: random())
        let hashPolicy = cluster.hashPolicy
        var hashKey = hashPolicy?.key(headers: head.headers, clientAddress: clientAddress)
        var setCookie: String?
        if hashKey == nil, case .cookie(let name, let ttl?) = hashPolicy {
            // No session cookie yet: choose one, hash it as its later requests will be, and hand it out.
            let value = String(random(), radix: 16)
            hashKey = StableHash.of(value)
            setCookie = "\(name)=\(value); Max-Age=\(ttl.components.seconds); Path=/; HttpOnly"
        }
        if cluster.stats.requestsActive.current >= cluster.limits.maxRequests {
            cluster.stats.overflowMaxRequests.increment()
            return .routedLocalReply(.overflow, route, cluster)
        }
        var picked = pick(cluster, hashKey)
        var viaFallback = false
        if picked == nil, let fallback = route.fallback {
            // Degradation: the cluster has no endpoint to offer; the route's fallback answers instead.
            switch fallback {
            case .cluster(let other):
                cluster = other
                picked = pick(other, nil)
                viaFallback = true
            case .response(let status, let headers, let body):
                return .fallbackResponse(status: status, headers: headers, body: body)
            }
        }
        guard var endpoint = picked else { return .routedLocalReply(cluster.noEndpointReason(now: now), route, cluster) }
        if cluster.breakers != nil {
            guard let admitted = admit(endpoint, cluster) else { return .routedLocalReply(.breakerOpen, route, cluster) }
            endpoint = admitted
        }
        return .routed(RoutedRequest(route: route, cluster: cluster, endpoint: endpoint, viaFallback: viaFallback, setCookie: setCookie))
    }

    /// Why a request is answered before it is routed: the listener refusing requests under overload, a head or
    /// announced body over the listener's limits, a malformed HTTP/2 head, a missing or invalid `Host`.
    public static func refusal(of facts: RequestHeadFacts, on listener: ListenerRuntime, malformedHTTP2: LocalReplyReason?) -> LocalReplyReason? {
        if listener.stats.overloadLevel >= .refusingRequests { return .overload }
        if facts.size > listener.config.maxRequestHeadersBytes { return .headersTooLarge }
        if let limit = listener.config.maxRequestBodyBytes, let length = facts.contentLength, length > limit { return .bodyTooLarge }
        if let malformedHTTP2 { return malformedHTTP2 }
        if !facts.hasValidHost { return .invalidHost }
        return nil
    }
}
