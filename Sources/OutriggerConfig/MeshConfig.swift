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
    /// How every sidecar's listeners take part in traces (`tracing:` at the top of the mesh file); sent in each
    /// listener's HttpConnectionManager (`tracing.random_sampling`, as Envoy reads it; absent: forward).
    public var tracing: TracingConfig

    public init(services: [Service], tracing: TracingConfig = TracingConfig()) {
        self.services = services
        self.tracing = tracing
    }

    public func service(named name: String) -> Service? {
        services.first { $0.name == name }
    }

    /// Reads and validates a mesh file, or every `*.yaml`/`*.yml` file of a directory (one mesh: routes may
    /// name services of other files; a service defined twice is an error). Errors carry file:line:column and
    /// key path, as a sidecar file's do.
    public static func load(contentsOf path: String) throws(ConfigErrors) -> MeshConfig {
        try load(try read(path), path: path)
    }

    /// One mesh file's text, as read.
    public struct Source: Sendable, Hashable {
        public let file: String
        public let text: String

        public init(file: String, text: String) {
            self.file = file
            self.text = text
        }
    }

    /// The mesh file's text, or each mesh file's of a directory in name order: read once, so what is decoded
    /// and what is hashed for a version are the same bytes.
    public static func read(_ path: String) throws(ConfigErrors) -> [Source] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            return [Source(file: path, text: try SidecarConfigDecoder.read(path))]
        }
        let files = files(in: path)
        guard !files.isEmpty else {
            throw ConfigErrors([ConfigIssue(file: path, line: 1, column: 1, keyPath: "", message: "the directory has no .yaml or .yml file")])
        }
        var sources: [Source] = []
        var issues: [ConfigIssue] = []
        for file in files {
            do {
                sources.append(Source(file: file, text: try SidecarConfigDecoder.read(file)))
            } catch {
                issues += error.issues
            }
        }
        if !issues.isEmpty { throw ConfigErrors(issues) }
        return sources
    }

    /// Decodes and validates the mesh `read(path)` gave.
    public static func load(_ sources: [Source], path: String) throws(ConfigErrors) -> MeshConfig {
        if sources.count == 1 && sources[0].file == path { return try decode(yaml: sources[0].text, file: path) }
        var roots: [(file: String, root: Node)] = []
        var issues: [ConfigIssue] = []
        for source in sources {
            do {
                guard let root = try SidecarConfigDecoder.compose(source.text, file: source.file) else {
                    issues.append(ConfigIssue(file: source.file, line: 1, column: 1, keyPath: "", message: "the file is empty; expected a mapping with services"))
                    continue
                }
                roots.append((source.file, root))
            } catch {
                issues += error.issues
            }
        }
        // Where each service is defined, so routes may cross files and a second definition is caught.
        var definedIn: [String: String] = [:]
        for (file, root) in roots {
            for item in root.mapping?["services"]?.sequence ?? [] {
                guard let name = item.mapping?["name"]?.scalar?.string else { continue }
                if let first = definedIn[name], first != file {
                    let mark = item.mapping?["name"]?.mark
                    issues.append(ConfigIssue(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, keyPath: "services",
                                              message: "service '\(name)' is already defined in \(first)"))
                } else {
                    definedIn[name] = file
                }
            }
        }
        var services: [Service] = []
        var tracing: (file: String, config: TracingConfig)?
        for (file, root) in roots {
            let decoder = SidecarConfigDecoder(reader: YAMLReader(file: file), filesOnSidecars: true)
            let mesh = decoder.decodeMesh(root, elsewhere: Set(definedIn.filter { $0.value != file }.keys))
            issues += decoder.reader.issues
            services += mesh?.services ?? []
            // One file of the mesh says how it traces.
            if let key = root.mapping?.first(where: { $0.key.scalar?.string == "tracing" })?.key, let mesh {
                if let first = tracing {
                    issues.append(ConfigIssue(file: file, line: key.mark?.line ?? 1, column: key.mark?.column ?? 1, keyPath: "tracing",
                                              message: "the mesh's tracing is already set in \(first.file)"))
                } else {
                    tracing = (file, mesh.tracing)
                }
            }
        }
        if !issues.isEmpty { throw ConfigErrors(issues) }
        return MeshConfig(services: services, tracing: tracing?.config ?? TracingConfig())
    }

    /// The mesh files of a directory (`*.yaml`, `*.yml`), in name order; none for a file.
    public static func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
            .map { URL(fileURLWithPath: directory).appendingPathComponent($0).path }
    }

    public static func decode(yaml text: String, file: String) throws(ConfigErrors) -> MeshConfig {
        guard let root = try SidecarConfigDecoder.compose(text, file: file) else {
            throw ConfigErrors([ConfigIssue(file: file, line: 1, column: 1, keyPath: "", message: "the file is empty; expected a mapping with services")])
        }
        let decoder = SidecarConfigDecoder(reader: YAMLReader(file: file), filesOnSidecars: true)
        let mesh = decoder.decodeMesh(root)
        if let mesh, decoder.reader.issues.isEmpty { return mesh }
        throw ConfigErrors(decoder.reader.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
    }
}
