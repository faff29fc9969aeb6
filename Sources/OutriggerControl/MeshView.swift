import OutriggerConfig
import OutriggerXDS
import SwiftProtobuf

/// What a sidecar says of itself when it connects (its xDS node): who it is, which service it fronts, and
/// where its listeners and local app are.
public struct SidecarIdentity: Sendable, Hashable {
    public var node: String
    public var service: String
    public var zone: String?
    /// The sidecar's listeners, by name ("outbound", "inbound"), at the addresses they are bound to.
    public var listeners: [String: HostPort]
    /// Where the inbound listener forwards to: the service's own process, beside the sidecar.
    public var app: HostPort?
    /// The sidecar's admin listener (a rollout's gate reads its `/stats/prometheus`).
    public var admin: HostPort?

    public init(node: String, service: String, zone: String? = nil, listeners: [String: HostPort], app: HostPort? = nil, admin: HostPort? = nil) {
        self.node = node
        self.service = service
        self.zone = zone
        self.listeners = listeners
        self.app = app
        self.admin = admin
    }

    /// What its view depends on: sidecars of one shape see the same view.
    var shape: SidecarIdentity {
        var shape = self
        shape.node = ""
        shape.admin = nil
        return shape
    }

    /// The address other sidecars reach this instance at: its inbound listener.
    public var inboundAddress: HostPort? { listeners[MeshView.inboundListener] }
}

/// One sidecar's view of the mesh (pure): its outbound listener routes to every service by host name, its
/// inbound listener to its local app; one cluster per service, whose endpoints are the static ones and the
/// registered sidecars of that service.
public enum MeshView {
    public static let outboundListener = "outbound"
    public static let inboundListener = "inbound"

    /// The cluster of a sidecar's own app, behind its inbound listener.
    public static func localCluster(_ service: String) -> String { "inbound|\(service)" }

    public static func config(mesh: MeshConfig, registered: [String: [HostPort]], for sidecar: SidecarIdentity) -> (listeners: [ListenerConfig], clusters: [ClusterConfig]) {
        var clusters = mesh.services.map { service in
            var cluster = service.cluster
            for address in registered[service.name] ?? [] where !cluster.endpoints.contains(address) {
                cluster.endpoints.append(address)
            }
            return cluster
        }
        var listeners: [ListenerConfig] = []
        if let address = sidecar.listeners[outboundListener] {
            let hosts = mesh.services.map { VirtualHostConfig(name: $0.name, domains: $0.domains, routes: $0.routes) }
            var outbound = ListenerConfig(name: outboundListener, address: address, direction: .outbound, virtualHosts: hosts)
            outbound.tracing = mesh.tracing
            listeners.append(outbound)
        }
        if let address = sidecar.listeners[inboundListener], let app = sidecar.app {
            let local = localCluster(sidecar.service)
            var cluster = mesh.service(named: sidecar.service)?.cluster ?? ClusterConfig(name: local, endpoints: [])
            cluster.name = local
            cluster.endpoints = [app]
            cluster.endpointMetadata = [:]
            cluster.healthCheck = nil
            cluster.outlierDetection = nil
            clusters.append(cluster)
            let routes = [RouteConfig(destination: .cluster(local))]
            var inbound = ListenerConfig(name: inboundListener, address: address, direction: .inbound,
                                         virtualHosts: [VirtualHostConfig(name: sidecar.service, domains: ["*"], routes: routes)])
            inbound.tracing = mesh.tracing
            listeners.append(inbound)
        }
        return (listeners, clusters)
    }

    /// Builds the view of a typical sidecar (outbound and inbound listeners, an app) and decodes it as a sidecar
    /// would: a mesh that every sidecar would refuse is refused before it is pushed.
    public static func check(_ mesh: MeshConfig) throws {
        let probe = SidecarIdentity(node: "check", service: mesh.services.first?.name ?? "check",
                                    listeners: [outboundListener: HostPort(host: "127.0.0.1", port: 15001), inboundListener: HostPort(host: "127.0.0.1", port: 15006)],
                                    app: HostPort(host: "127.0.0.1", port: 8080))
        var decoder = XDSDecoder()
        for (type, byName) in try resources(mesh: mesh, registered: [:], for: probe) { decoder[type] = byName.mapValues(\.body) }
        _ = try decoder.config(base: SidecarConfig(listeners: [], clusters: []))
    }

    /// The view as xDS resources, by type and name. A node with no listeners is a proxyless gRPC client
    /// (grpcio's `xds:///SERVICE`): it gets an API listener and a route configuration per service, each named
    /// after the service, instead of socket listeners.
    public static func resources(mesh: MeshConfig, registered: [String: [HostPort]], for sidecar: SidecarIdentity) throws -> [XDSType: [String: XDSResource]] {
        let view = config(mesh: mesh, registered: registered, for: sidecar)
        var byType: [XDSType: [String: XDSResource]] = [:]
        for type in XDSType.allCases { byType[type] = [:] }
        for resource in try XDSEncoder.resources(listeners: view.listeners, clusters: view.clusters) {
            byType[resource.type, default: [:]][resource.name] = resource
        }
        if sidecar.listeners.isEmpty {
            for service in mesh.services {
                let host = VirtualHostConfig(name: service.name, domains: service.domains, routes: service.routes)
                byType[.listener]![service.name] = XDSResource(type: .listener, name: service.name,
                                                               body: try XDSEncoder.pack(try XDSEncoder.apiListener(service.name)))
                byType[.route]![service.name] = XDSResource(type: .route, name: service.name,
                                                            body: try XDSEncoder.pack(try XDSEncoder.routeConfiguration(name: service.name, [host])))
            }
        }
        return byType
    }
}
