extension SidecarConfig {
    /// The config that `outrigger proxy --listen ADDR --upstream A,B` stands for: one listener routing
    /// everything to one cluster (round robin unless told). Quick start and YAML run the same engine.
    public static func quickStart(
        listen: HostPort,
        upstreams: [HostPort],
        admin: HostPort?,
        concurrency: Int?,
        upstreamProtocol: ClusterConfig.UpstreamProtocol = .http1,
        loadBalancer: LoadBalancerConfig = LoadBalancerConfig()
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
            clusters: [ClusterConfig(name: "upstream", endpoints: upstreams, upstreamProtocol: upstreamProtocol, loadBalancer: loadBalancer)]
        )
    }
}
