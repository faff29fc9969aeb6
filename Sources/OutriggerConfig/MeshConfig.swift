import Foundation
import Yams

/// The control plane's mesh (`mesh.yaml`): the services, each with its traffic policy (the keys of a
/// sidecar cluster) and the routes its callers take to it (the keys of a sidecar route). A service's
/// endpoints are its static instances; sidecars of the service add themselves while connected.
public struct MeshConfig: Sendable, Hashable {
    public struct Service: Sendable, Hashable {
        /// The service's traffic policy and static endpoints, as the cluster its callers get.
        public var cluster: ClusterConfig
        /// Host names callers use for it (default: the service name; a port in Host is ignored).
        public var domains: [String]
        /// How callers' requests are routed (default: everything to the service itself).
        public var routes: [RouteConfig]

        public var name: String { cluster.name }

        public init(cluster: ClusterConfig, domains: [String]? = nil, routes: [RouteConfig]? = nil) {
            self.cluster = cluster
            self.domains = domains ?? [cluster.name]
            self.routes = routes ?? [RouteConfig(destination: .cluster(cluster.name))]
        }
    }

    public var services: [Service]

    public init(services: [Service]) {
        self.services = services
    }

    public func service(named name: String) -> Service? {
        services.first { $0.name == name }
    }

    /// Reads and validates a mesh file; errors carry file:line:column and key path, as a sidecar file's do.
    public static func load(contentsOf path: String) throws(ConfigErrors) -> MeshConfig {
        try decode(yaml: try SidecarConfigDecoder.read(path), file: path)
    }

    public static func decode(yaml text: String, file: String) throws(ConfigErrors) -> MeshConfig {
        guard let root = try SidecarConfigDecoder.compose(text, file: file) else {
            throw ConfigErrors([ConfigIssue(file: file, line: 1, column: 1, keyPath: "", message: "the file is empty; expected a mapping with services")])
        }
        let decoder = SidecarConfigDecoder(reader: YAMLReader(file: file), fromControlPlane: true)
        let mesh = decoder.decodeMesh(root)
        if let mesh, decoder.reader.issues.isEmpty { return mesh }
        throw ConfigErrors(decoder.reader.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
    }
}
