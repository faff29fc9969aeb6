extension SidecarConfig {
    /// The config that `outrigger proxy --listen ADDR --upstream A,B` stands for: one listener routing
    /// everything to one cluster (round robin unless told). Quick start and YAML run the same engine.
    public static func quickStart(
        listen: HostPort,
        upstreams: [HostPort],
        admin: HostPort?,
        concurrency: Int?,
        upstreamProtocol: ClusterConfig.UpstreamProtocol = .http1,
        loadBalancer: LoadBalancerConfig = LoadBalancerConfig(),
        healthCheck: HealthCheckConfig? = nil
    ) -> SidecarConfig {
        SidecarConfig(
            admin: admin.map { AdminConfig(address: $0) },
            concurrency: concurrency,
            listeners: [
                ListenerConfig(
                    name: "quickstart",
                    address: listen,
                    direction: .outbound,
                    virtualHosts: [
                        VirtualHostConfig(name: "default", domains: ["*"], routes: [RouteConfig(destination: .cluster("upstream"))])
                    ]
                )
            ],
            clusters: [ClusterConfig(name: "upstream", endpoints: upstreams, upstreamProtocol: upstreamProtocol, loadBalancer: loadBalancer,
                                     healthCheck: healthCheck)]
        )
    }
}

/// The quick-start flags whose values are small languages of their own, parsed here so the CLI and its
/// tests share one definition.
public enum QuickStartFlag {
    /// `--hash-on header:NAME | cookie:NAME | client-address`.
    public static func hashPolicy(_ text: String) -> LoadBalancerConfig.HashPolicy? {
        if text == "client-address" { return .clientAddress }
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, HTTPToken.isToken(parts[1]) else { return nil }
        switch parts[0] {
        case "header": return .header(parts[1].lowercased())
        case "cookie": return .cookie(parts[1])
        default: return nil
        }
    }

    /// `--health-check http:/PATH | tcp | grpc[:SERVICE]`, with the YAML defaults for everything else.
    public static func healthCheck(_ text: String) -> HealthCheckConfig? {
        if text == "tcp" { return HealthCheckConfig(kind: .tcp) }
        if text == "grpc" { return HealthCheckConfig(kind: .grpc) }
        if text.hasPrefix("grpc:") { return HealthCheckConfig(kind: .grpc, service: String(text.dropFirst("grpc:".count))) }
        guard text.hasPrefix("http:/") else { return nil }
        let path = String(text.dropFirst("http:".count))
        guard !path.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else { return nil }
        return HealthCheckConfig(kind: .http, path: path)
    }
}
