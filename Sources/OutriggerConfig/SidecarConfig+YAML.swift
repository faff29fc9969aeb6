import Foundation
import Yams

/// A config file's settings, and where each cluster endpoint is written in it (to place warnings about names
/// that do not resolve, which are no errors).
public struct LoadedSidecarConfig: Sendable {
    public var config: SidecarConfig
    public var endpointSites: [EndpointSite]
}

extension SidecarConfig {
    /// Reads and validates a sidecar config file.
    /// - Throws: `ConfigErrors` listing every problem, each with file:line:column and key path.
    public static func load(contentsOf path: String) throws(ConfigErrors) -> SidecarConfig {
        try loadWithEndpointSites(contentsOf: path).config
    }

    /// Reads and validates a sidecar config file, keeping where its endpoints are written.
    public static func loadWithEndpointSites(contentsOf path: String) throws(ConfigErrors) -> LoadedSidecarConfig {
        try decodeWithEndpointSites(yaml: try SidecarConfigDecoder.read(path), file: path)
    }

    /// Decodes and validates YAML text; `file` names it in errors.
    public static func decode(yaml text: String, file: String) throws(ConfigErrors) -> SidecarConfig {
        try decodeWithEndpointSites(yaml: text, file: file).config
    }

    /// Decodes and validates a config document built in memory rather than read from a file (the xDS client
    /// translates pushed resources into one), with the same validation as a file. `source` names it in
    /// errors; its nodes have no positions, so errors are told apart by key path. A cluster may have no
    /// endpoints (a control plane sends a service before any instance of it is up), and there may be no
    /// listener yet (clusters arrive first).
    public static func decode(document root: Node, source: String) throws(ConfigErrors) -> SidecarConfig {
        let decoder = SidecarConfigDecoder(reader: YAMLReader(file: source), fromControlPlane: true)
        let config = decoder.decodeSidecar(root)
        if let config, decoder.reader.issues.isEmpty { return config }
        throw ConfigErrors(decoder.reader.issues)
    }

    static func decodeWithEndpointSites(yaml text: String, file: String) throws(ConfigErrors) -> LoadedSidecarConfig {
        guard let root = try SidecarConfigDecoder.compose(text, file: file) else {
            throw ConfigErrors([ConfigIssue(file: file, line: 1, column: 1, keyPath: "", message: "the file is empty; expected a mapping with listeners and clusters")])
        }
        let decoder = SidecarConfigDecoder(reader: YAMLReader(file: file))
        let config = decoder.decodeSidecar(root)
        if let config, decoder.reader.issues.isEmpty { return LoadedSidecarConfig(config: config, endpointSites: decoder.reader.endpointSites) }
        throw ConfigErrors(decoder.reader.issues.sorted { ($0.line, $0.column) < ($1.line, $1.column) })
    }
}

/// The one place where the YAML shape of `sidecar.yaml` is mapped onto `SidecarConfig`.
struct SidecarConfigDecoder {
    let reader: YAMLReader
    /// Cluster names referenced by routes, checked once every cluster is known.
    private let references = ReferenceList()
    /// True for documents from a control plane (and its mesh file): a cluster may be waiting for its first
    /// endpoint, and a sidecar may have clusters before any listener.
    private let fromControlPlane: Bool
    /// True for a mesh file: the files it names (a cluster's CA, certificate and key) are read on each
    /// sidecar's machine, not this one, so they must be absolute paths and are not looked for here.
    private let filesOnSidecars: Bool

    init(reader: YAMLReader, fromControlPlane: Bool = false, filesOnSidecars: Bool = false) {
        self.reader = reader
        self.fromControlPlane = fromControlPlane || filesOnSidecars
        self.filesOnSidecars = filesOnSidecars
    }

    /// A config file's text; one that cannot be read is an issue at its first line.
    static func read(_ path: String) throws(ConfigErrors) -> String {
        func refuse(_ message: String, line: Int = 1, column: Int = 1) -> ConfigErrors {
            ConfigErrors([ConfigIssue(file: path, line: line, column: column, keyPath: "", message: message)])
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw refuse("no such file") }
        guard !isDirectory.boolValue else { throw refuse("is a directory; expected a YAML file") }
        guard let data = FileManager.default.contents(atPath: path) else { throw refuse("cannot be read (permissions?)") }
        guard let text = String(data: data, encoding: .utf8) else {
            let (offset, line, column) = firstInvalidUTF8(Array(data))
            throw refuse(String(format: "not UTF-8 text: byte 0x%02X at line %d, column %d; config files are UTF-8", data[offset], line, column),
                         line: line, column: column)
        }
        return text
    }

    /// The byte offset, line and column of the first byte that is not part of valid UTF-8.
    static func firstInvalidUTF8(_ bytes: [UInt8]) -> (offset: Int, line: Int, column: Int) {
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        loop: while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar): offset += scalar.count
            case .error(let length): _ = length; break loop
            case .emptyInput: break loop
            }
        }
        offset = min(offset, max(bytes.count - 1, 0))
        let before = bytes[..<offset]
        let line = before.filter { $0 == UInt8(ascii: "\n") }.count + 1
        let lineStart = before.lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
        return (offset, line, offset - lineStart + 1)
    }

    /// The YAML node tree of `text` (nil for an empty document); syntax errors carry their position.
    static func compose(_ text: String, file: String) throws(ConfigErrors) -> Node? {
        do {
            return try Yams.compose(yaml: text)
        } catch let error as YamlError {
            if let duplicate = duplicateKeyIssue(error, text: text, file: file) { throw ConfigErrors([duplicate]) }
            throw ConfigErrors([issue(for: error, file: file)])
        } catch {
            throw ConfigErrors([ConfigIssue(file: file, line: 1, column: 1, keyPath: "", message: "invalid YAML: \(error)")])
        }
    }

    /// Yams reports a duplicate key at the start of its mapping; this finds the key's second line at the
    /// indentation of its first, which is where a person looks.
    static func duplicateKeyIssue(_ error: YamlError, text: String, file: String) -> ConfigIssue? {
        guard case .duplicatedKeysInMapping(let duplicates, _) = error, let key = duplicates.sorted().first else { return nil }
        var first: (line: Int, indent: Int)?
        for (index, line) in text.components(separatedBy: "\n").enumerated() {
            var body = Substring(line)
            let indent = body.prefix { $0 == " " || $0 == "-" }.count
            body = body.dropFirst(indent)
            guard body.hasPrefix(key + ":") || body.hasPrefix("\"\(key)\":") || body.hasPrefix("'\(key)':") else { continue }
            if let first, first.indent == indent {
                return ConfigIssue(file: file, line: index + 1, column: indent + 1, keyPath: "",
                                   message: "duplicate key '\(key)' (first at line \(first.line))")
            }
            if first == nil { first = (index + 1, indent) }
        }
        return nil
    }

    static func issue(for error: YamlError, file: String) -> ConfigIssue {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let prefix = context.map { "\($0.text); " } ?? ""
            return ConfigIssue(file: file, line: mark.line, column: mark.column, keyPath: "", message: "invalid YAML: \(prefix)\(problem)")
        default:
            return ConfigIssue(file: file, line: 1, column: 1, keyPath: "", message: "invalid YAML: \(error)")
        }
    }

    func decodeSidecar(_ root: Node) -> SidecarConfig? {
        guard let fields = reader.fields(root, "", allowed: ["admin", "concurrency", "drainTimeout", "zone", "maxConnections", "overload", "listeners", "clusters", "controlPlane",
                                                              "traceExport"]) else {
            return nil
        }
        var admin: AdminConfig? = AdminConfig()
        if let node = fields["admin"] {
            admin = decodeAdmin(node, fields.path("admin"))
        }
        let concurrency = fields["concurrency"].flatMap { reader.int($0, fields.path("concurrency"), range: 1...1024) }
        let drainTimeout = reader.duration(fields, "drainTimeout")
        let zone = fields["zone"].flatMap { reader.string($0, fields.path("zone")) }
        let maxConnections = fields["maxConnections"].flatMap { reader.int($0, fields.path("maxConnections"), range: 1...10_000_000) }
        var listeners: [ListenerConfig] = []
        if let node = reader.required(fields, "listeners"), let items = reader.sequence(node, "listeners") {
            if items.isEmpty && !fromControlPlane { reader.report(node, "listeners", "expected at least one listener") }
            listeners = items.enumerated().compactMap { decodeListener($1, "listeners[\($0)]") }
            reportDuplicates(items, listeners.map(\.name), path: "listeners", what: "listener name")
            // Port 0 asks the system for any free port, so it never collides.
            reportDuplicates(items, listeners.map { $0.address.port == 0 ? "\(UUID())" : $0.address.description }, path: "listeners", what: "listener address")
            reportWildcardOverlaps(items, listeners)
        }
        var clusters: [ClusterConfig] = []
        if let node = fields["clusters"], let items = reader.sequence(node, "clusters") {
            clusters = items.enumerated().compactMap { decodeCluster($1, "clusters[\($0)]") }
            reportDuplicates(items, clusters.map(\.name), path: "clusters", what: "cluster name")
        }
        let known = Set(clusters.map(\.name))
        for reference in references.items where !known.contains(reference.name) {
            var message = "unknown cluster '\(reference.name)'"
            if let suggestion = YAMLReader.closest(to: reference.name, among: known.sorted()) {
                message += "; did you mean '\(suggestion)'?"
            } else {
                message += known.isEmpty ? "; no clusters are defined" : "; defined clusters: \(known.sorted().joined(separator: ", "))"
            }
            reader.report(reference.node, reference.path, message)
        }
        var config = SidecarConfig(
            admin: admin,
            concurrency: concurrency,
            drainTimeout: drainTimeout ?? SidecarConfig.defaultDrainTimeout,
            zone: zone,
            maxConnections: maxConnections,
            listeners: listeners,
            clusters: clusters
        )
        config.controlPlane = fields["controlPlane"].flatMap { decodeControlPlane($0, "controlPlane") }
        if let node = fields["overload"], let overload = decodeOverload(node, "overload") { config.overload = overload }
        config.traceExport = fields["traceExport"].flatMap { decodeTraceExport($0, "traceExport") }
        return config
    }

    /// `{endpoint: http://HOST:PORT/PATH, format: otlp | zipkin, serviceName, batchSize, maxQueuedSpans, timeout, flushInterval}`.
    private func decodeTraceExport(_ node: Node, _ path: String) -> TraceExportConfig? {
        guard let fields = reader.fields(node, path, allowed: ["endpoint", "format", "serviceName", "batchSize", "maxQueuedSpans", "timeout",
                                                               "flushInterval"]) else {
            return nil
        }
        let format = fields["format"].flatMap { reader.oneOf($0, fields.path("format"), TraceExportConfig.Format.self) } ?? .otlp
        var endpoint: (address: HostPort, path: String)?
        if let node = reader.required(fields, "endpoint"), let text = reader.string(node, fields.path("endpoint")) {
            endpoint = TraceExportConfig.parseEndpoint(text, format: format)
            if endpoint == nil {
                reader.report(node, fields.path("endpoint"), "expected http://HOST:PORT/PATH such as http://127.0.0.1:4318/v1/traces, found '\(text)'")
            }
        }
        let serviceName = fields["serviceName"].flatMap { reader.string($0, fields.path("serviceName")) }
        let batchSize = reader.int(fields, "batchSize", range: 1...65_536)
        let maxQueued = reader.int(fields, "maxQueuedSpans", range: 1...10_000_000)
        let timeout = reader.duration(fields, "timeout")
        let flushInterval = reader.duration(fields, "flushInterval")
        guard let endpoint else { return nil }
        return TraceExportConfig(format: format, address: endpoint.address, path: endpoint.path, serviceName: serviceName,
                                 batchSize: batchSize ?? TraceExportConfig.defaultBatchSize,
                                 maxQueuedSpans: maxQueued ?? TraceExportConfig.defaultMaxQueuedSpans,
                                 timeout: timeout ?? TraceExportConfig.defaultTimeout,
                                 flushInterval: flushInterval ?? TraceExportConfig.defaultFlushInterval)
    }

    /// `{addresses: [HOST:PORT, …], node: ID, service: NAME, app: HOST:PORT, stateDir: DIR, ca: FILE, drainNotice: 1s}`.
    private func decodeControlPlane(_ node: Node, _ path: String) -> ControlPlaneConfig? {
        guard let fields = reader.fields(node, path, allowed: ["addresses", "node", "service", "app", "stateDir", "ca", "drainNotice"]) else { return nil }
        var addresses: [HostPort] = []
        if let list = reader.required(fields, "addresses"), let items = reader.sequence(list, fields.path("addresses")) {
            if items.isEmpty { reader.report(list, fields.path("addresses"), "expected at least one control plane HOST:PORT") }
            addresses = items.enumerated().compactMap { reader.hostPort($1, fields.path("addresses") + "[\($0)]") }
        }
        let nodeID = reader.required(fields, "node").flatMap { reader.string($0, fields.path("node")) }
        let service = reader.required(fields, "service").flatMap { reader.string($0, fields.path("service")) }
        let app = fields["app"].flatMap { reader.hostPort($0, fields.path("app")) }
        let stateDirectory = fields["stateDir"].flatMap { reader.string($0, fields.path("stateDir")) }
        let ca = fields["ca"].flatMap { readableFile($0, fields.path("ca")) }
        let drainNotice = reader.duration(fields, "drainNotice")
        guard let nodeID, let service, !addresses.isEmpty else { return nil }
        return ControlPlaneConfig(addresses: addresses, node: nodeID, service: service, app: app, stateDirectory: stateDirectory,
                                  trustedCertificates: ca, drainNotice: drainNotice ?? ControlPlaneConfig.defaultDrainNotice)
    }

    /// `services:` — each item a cluster's keys (its traffic policy and static endpoints) plus `domains` and
    /// `routes`, whose destinations name services.
    /// - Parameter elsewhere: services other files of the same mesh define (routes may name them).
    func decodeMesh(_ root: Node, elsewhere: Set<String> = []) -> MeshConfig? {
        guard let fields = reader.fields(root, "", allowed: ["services", "tracing"]) else { return nil }
        var services: [MeshConfig.Service] = []
        if let node = reader.required(fields, "services"), let items = reader.sequence(node, "services") {
            for (index, item) in items.enumerated() {
                let path = "services[\(index)]"
                guard case .mapping(let mapping) = item else {
                    reader.report(item, path, "expected a mapping with a service's name, endpoints, policy and routes, found \(reader.describe(item))")
                    continue
                }
                // The cluster's own keys go to the cluster decoder, with their positions.
                let own = ["domains", "routes"]
                let clusterPairs = mapping.filter { key, _ in !own.contains(key.scalar?.string ?? "") }
                let clusterNode = Node.mapping(.init(clusterPairs.map { ($0.key, $0.value) }, mapping.tag, mapping.style, mapping.mark))
                if let file = mapping.first(where: { $0.key.scalar?.string == "endpointsFile" }) {
                    reader.report(file.value, path + ".endpointsFile", "a service's endpoints are listed or registered; an endpoints file is a sidecar's own")
                }
                let cluster = decodeCluster(clusterNode, path)
                let routesNode = mapping.first { $0.key.scalar?.string == "routes" }?.value
                let domainsNode = mapping.first { $0.key.scalar?.string == "domains" }?.value
                let routes = routesNode.flatMap { decodeRoutes($0, path + ".routes") }
                var domains: [String]?
                if let domainsNode { domains = decodeDomains(domainsNode, path + ".domains") }
                if let cluster { services.append(MeshConfig.Service(cluster: cluster, domains: domains, routes: routes)) }
            }
            reportDuplicates(items, services.map(\.name), path: "services", what: "service name")
        }
        let known = Set(services.map(\.name)).union(elsewhere)
        for reference in references.items where !known.contains(reference.name) {
            var message = "unknown service '\(reference.name)'"
            if let suggestion = YAMLReader.closest(to: reference.name, among: known.sorted()) { message += "; did you mean '\(suggestion)'?" }
            reader.report(reference.node, reference.path, message)
        }
        let tracing = fields["tracing"].flatMap { decodeTracing($0, "tracing") }
        return MeshConfig(services: services, tracing: tracing ?? TracingConfig())
    }

    /// A listener on a wildcard address (0.0.0.0, ::) takes its port on every address: another listener on the
    /// same port, whatever its address, cannot bind.
    private func reportWildcardOverlaps(_ items: [Node], _ listeners: [ListenerConfig]) {
        guard items.count == listeners.count else { return }
        let wildcards: Set<String> = ["0.0.0.0", "::", "[::]"]
        for (index, listener) in listeners.enumerated() where listener.address.port != 0 {
            guard let earlier = listeners[..<index].firstIndex(where: { other in
                other.address.port == listener.address.port && other.address != listener.address
                    && (wildcards.contains(other.address.host) || wildcards.contains(listener.address.host))
            }) else { continue }
            reader.report(items[index], "listeners[\(index)].address",
                          "port \(listener.address.port) is also taken by listeners[\(earlier)] (\(listeners[earlier].address)); a wildcard address holds the port on every address, so only one of them can bind")
        }
    }

    private func reportDuplicates(_ items: [Node], _ names: [String], path: String, what: String) {
        // Only meaningful when every item decoded; otherwise indexes do not line up and errors were reported.
        guard items.count == names.count else { return }
        var seen: Set<String> = []
        for (index, name) in names.enumerated() where !seen.insert(name).inserted {
            reader.report(items[index], "\(path)[\(index)]", "duplicate \(what) '\(name)'")
        }
    }

    private func decodeAdmin(_ node: Node, _ path: String) -> AdminConfig? {
        guard let fields = reader.fields(node, path, allowed: ["address", "enabled", "tokenFile"]) else { return nil }
        if let enabled = fields["enabled"], reader.bool(enabled, fields.path("enabled")) == false { return nil }
        let address = fields["address"].flatMap { reader.hostPort($0, fields.path("address")) }
        var tokenFile: String?
        if let node = fields["tokenFile"], let file = readableFile(node, fields.path("tokenFile"), what: "a readable file holding the admin token") {
            let token = (try? String(contentsOfFile: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            if token.count < 16 {
                reader.report(node, fields.path("tokenFile"), "expected a token of at least 16 characters in '\(file)', found \(token.count)")
            }
            tokenFile = file
        }
        return AdminConfig(address: address ?? AdminConfig.defaultAddress, tokenFile: tokenFile)
    }

    private func decodeListener(_ node: Node, _ path: String) -> ListenerConfig? {
        let allowed = ["name", "address", "direction", "tls", "maxRequestHeadersBytes", "maxRequestBodyBytes", "addVia", "trustOverrideHeaders",
                       "handshakeTimeout", "requestHeadersTimeout", "idleTimeout", "sendTimeout", "maxConnections", "rapidReset", "overloadPriority", "accessLog",
                       "tracing", "virtualHosts", "routes"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        let name = reader.required(fields, "name").flatMap { reader.string($0, fields.path("name")) }
        let address = reader.required(fields, "address").flatMap { reader.hostPort($0, fields.path("address")) }
        let direction = fields["direction"].flatMap { reader.oneOf($0, fields.path("direction"), ListenerConfig.Direction.self) }
        let tls = fields["tls"].flatMap { decodeTLS($0, fields.path("tls")) }
        let maxHeaders = fields["maxRequestHeadersBytes"].flatMap { reader.byteSize($0, fields.path("maxRequestHeadersBytes")) }
        if let maxHeaders, maxHeaders > 80 * 1024, let node = fields["maxRequestHeadersBytes"] {
            // The HTTP/1.1 parser (HTTP1RequestParser) stops at 80 KiB whatever we configure.
            reader.report(node, fields.path("maxRequestHeadersBytes"), "expected at most 80KiB, found \(maxHeaders) bytes")
        }
        let maxBody = fields["maxRequestBodyBytes"].flatMap { reader.byteSize($0, fields.path("maxRequestBodyBytes")) }
        let addVia = reader.bool(fields, "addVia")
        let trustOverrides = reader.bool(fields, "trustOverrideHeaders")
        let handshakeTimeout = reader.duration(fields, "handshakeTimeout")
        let headersTimeout = reader.duration(fields, "requestHeadersTimeout")
        let idleTimeout = reader.duration(fields, "idleTimeout")
        let sendTimeout = reader.duration(fields, "sendTimeout")
        let maxConnections = fields["maxConnections"].flatMap { reader.int($0, fields.path("maxConnections"), range: 1...10_000_000) }
        let rapidReset = fields["rapidReset"].flatMap { decodeRapidReset($0, fields.path("rapidReset")) }
        let overloadPriority = fields["overloadPriority"].flatMap { reader.oneOf($0, fields.path("overloadPriority"), ListenerConfig.OverloadPriority.self) }
        let accessLog = fields["accessLog"].flatMap { decodeAccessLog($0, fields.path("accessLog")) }
        let tracing = fields["tracing"].flatMap { decodeTracing($0, fields.path("tracing")) }
        var virtualHosts: [VirtualHostConfig] = []
        switch (fields["virtualHosts"], fields["routes"]) {
        case (.some(let node), .some):
            reader.report(node, fields.path("virtualHosts"), "expected either 'virtualHosts' or 'routes' (a shorthand for one virtual host matching every domain), not both")
        case (.some(let node), nil):
            if let items = reader.sequence(node, fields.path("virtualHosts")) {
                virtualHosts = items.enumerated().compactMap { decodeVirtualHost($1, fields.path("virtualHosts") + "[\($0)]") }
            }
        case (nil, .some(let node)):
            if let routes = decodeRoutes(node, fields.path("routes")) {
                virtualHosts = [VirtualHostConfig(name: "default", domains: ["*"], routes: routes)]
            }
        case (nil, nil):
            reader.report(node, path, "missing required key 'routes' (or 'virtualHosts')")
        }
        guard let name, let address else { return nil }
        return ListenerConfig(
            name: name,
            address: address,
            direction: direction ?? .inbound,
            tls: tls,
            maxRequestHeadersBytes: maxHeaders ?? ListenerConfig.defaultMaxRequestHeadersBytes,
            maxRequestBodyBytes: maxBody,
            addVia: addVia ?? false,
            trustOverrideHeaders: trustOverrides ?? false,
            handshakeTimeout: handshakeTimeout ?? ListenerConfig.defaultHandshakeTimeout,
            requestHeadersTimeout: headersTimeout ?? ListenerConfig.defaultRequestHeadersTimeout,
            idleTimeout: idleTimeout ?? ListenerConfig.defaultIdleTimeout,
            sendTimeout: sendTimeout ?? ListenerConfig.defaultSendTimeout,
            maxConnections: maxConnections,
            rapidReset: rapidReset ?? RapidResetConfig(),
            overloadPriority: overloadPriority ?? .normal,
            accessLog: accessLog,
            tracing: tracing ?? TracingConfig(),
            virtualHosts: virtualHosts
        )
    }

    /// `overload: {interval, maxMemory, maxActiveRequests, maxEventLoopDelay, disableKeepAliveAt, refuseRequestsAt, stopAcceptingAt}`.
    private func decodeOverload(_ node: Node, _ path: String) -> OverloadConfig? {
        let allowed = ["interval", "maxMemory", "maxActiveRequests", "maxEventLoopDelay", "disableKeepAliveAt", "refuseRequestsAt", "stopAcceptingAt"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        var config = OverloadConfig()
        if let value = reader.duration(fields, "interval") { config.interval = value }
        config.maxMemoryBytes = fields["maxMemory"].flatMap { reader.byteSize($0, fields.path("maxMemory")) }
        config.maxActiveRequests = fields["maxActiveRequests"].flatMap { reader.int($0, fields.path("maxActiveRequests"), range: 1...100_000_000) }
        config.maxEventLoopDelay = reader.duration(fields, "maxEventLoopDelay")
        for (key, keyPath) in [("disableKeepAliveAt", \OverloadConfig.disableKeepAliveAt), ("refuseRequestsAt", \.refuseRequestsAt),
                               ("stopAcceptingAt", \.stopAcceptingAt)] {
            guard let node = fields[key] else { continue }
            guard let value = Double(node.scalar?.string ?? ""), value > 0, value <= 10 else {
                reader.report(node, fields.path(key), "expected a fraction of the limits such as 0.95 (above 0; 1 is at the limit)")
                continue
            }
            config[keyPath: keyPath] = value
        }
        if config.disableKeepAliveAt > config.refuseRequestsAt || config.refuseRequestsAt > config.stopAcceptingAt {
            reader.report(node, path, "expected disableKeepAliveAt ≤ refuseRequestsAt ≤ stopAcceptingAt (each step after the one before)")
        }
        return config
    }

    /// `{maxResetsPerAddress: N, window: DURATION, refuseFor: DURATION}`, each optional.
    /// `{mode: participate | forward, sampleRatio: 0.01 | 1%}`.
    private func decodeTracing(_ node: Node, _ path: String) -> TracingConfig? {
        guard let fields = reader.fields(node, path, allowed: ["mode", "sampleRatio"]) else { return nil }
        var config = TracingConfig()
        if let mode = fields["mode"].flatMap({ reader.oneOf($0, fields.path("mode"), TracingConfig.Mode.self) }) { config.mode = mode }
        if let ratio = fields["sampleRatio"].flatMap({ reader.fraction($0, fields.path("sampleRatio")) }) { config.sampleRatio = ratio }
        return config
    }

    private func decodeRapidReset(_ node: Node, _ path: String) -> RapidResetConfig? {
        guard let fields = reader.fields(node, path, allowed: ["maxResetsPerAddress", "window", "refuseFor"]) else { return nil }
        var config = RapidResetConfig()
        if let value = reader.int(fields, "maxResetsPerAddress", range: 0...100_000_000) { config.maxResetsPerAddress = value }
        if let value = reader.duration(fields, "window") { config.window = value }
        if let value = reader.duration(fields, "refuseFor") { config.refuseFor = value }
        return config
    }

    /// `{path: stdout | stderr | FILE, format: text | json}`; a relative file is next to the config file, like
    /// the other files it names. Whether the file can be opened is found when the listener starts.
    private func decodeAccessLog(_ node: Node, _ path: String) -> AccessLogConfig? {
        guard let fields = reader.fields(node, path, allowed: ["path", "format"]) else { return nil }
        let format = fields["format"].flatMap { reader.oneOf($0, fields.path("format"), AccessLogConfig.Format.self) }
        guard let pathNode = reader.required(fields, "path"), let file = reader.string(pathNode, fields.path("path")) else { return nil }
        guard !file.contains("\0") else {
            reader.report(pathNode, fields.path("path"), "expected a file path without NUL")
            return nil
        }
        let resolved: String
        switch file {
        case AccessLogConfig.standardOutput, AccessLogConfig.standardError:
            resolved = file
        default:
            resolved = file.hasPrefix("/") ? file : URL(fileURLWithPath: reader.file).deletingLastPathComponent().appendingPathComponent(file).path
            // What would stop the listener from starting is said here, where `validate` sees it too.
            let directory = URL(fileURLWithPath: resolved).deletingLastPathComponent().path
            var isDirectory: ObjCBool = false
            if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) || !isDirectory.boolValue {
                reader.report(pathNode, fields.path("path"), "expected a file in an existing directory, but '\(directory)' is not a directory")
                return nil
            }
            let writable = FileManager.default.fileExists(atPath: resolved)
                ? FileManager.default.isWritableFile(atPath: resolved) : FileManager.default.isWritableFile(atPath: directory)
            if !writable {
                reader.report(pathNode, fields.path("path"), "expected a file this process may write, but '\(resolved)' cannot be written")
                return nil
            }
        }
        return AccessLogConfig(path: resolved, format: format ?? .text)
    }

    private func decodeTLS(_ node: Node, _ path: String) -> TLSConfig? {
        guard let fields = reader.fields(node, path, allowed: ["certificate", "privateKey", "minVersion", "cipherSuites", "clientCertificates"]) else { return nil }
        let certificate = reader.required(fields, "certificate").flatMap { readableFile($0, fields.path("certificate")) }
        let key = reader.required(fields, "privateKey").flatMap { readableFile($0, fields.path("privateKey")) }
        let minVersion = fields["minVersion"].flatMap { reader.oneOf($0, fields.path("minVersion"), TLSConfig.MinimumVersion.self) }
        var cipherSuites: [String]?
        if let node = fields["cipherSuites"], let items = reader.sequence(node, fields.path("cipherSuites")) {
            if items.isEmpty { reader.report(node, fields.path("cipherSuites"), "expected at least one cipher suite") }
            cipherSuites = items.enumerated().compactMap { index, item in
                let itemPath = fields.path("cipherSuites") + "[\(index)]"
                guard let name = reader.string(item, itemPath) else { return nil }
                guard TLSConfig.knownCipherSuites.contains(name) else {
                    var message = "expected a TLS 1.2 cipher suite (\(TLSConfig.knownCipherSuites.joined(separator: ", "))), found '\(name)'"
                    if let suggestion = YAMLReader.closest(to: name, among: TLSConfig.knownCipherSuites) { message += "; did you mean '\(suggestion)'?" }
                    reader.report(item, itemPath, message)
                    return nil
                }
                return name
            }
        }
        var clientCertificates: TLSConfig.ClientCertificateConfig?
        if let node = fields["clientCertificates"], let clientFields = reader.fields(node, fields.path("clientCertificates"), allowed: ["caFile", "subjectAltNames"]) {
            let caFile = reader.required(clientFields, "caFile").flatMap { readableFile($0, clientFields.path("caFile")) }
            let names = clientFields["subjectAltNames"].flatMap { decodeSubjectAltNames($0, clientFields.path("subjectAltNames")) }
            if let caFile { clientCertificates = TLSConfig.ClientCertificateConfig(caFile: caFile, subjectAltNames: names ?? []) }
        }
        guard let certificate, let key else { return nil }
        return TLSConfig(certificate: certificate, privateKey: key, minVersion: minVersion ?? .tls12,
                         cipherSuites: cipherSuites ?? TLSConfig.defaultCipherSuites, clientCertificates: clientCertificates)
    }

    /// A cluster's `tls`: `{sni, caFile, certificate, privateKey, subjectAltNames, insecureSkipVerify, minVersion}`, each optional.
    private func decodeUpstreamTLS(_ node: Node, _ path: String) -> UpstreamTLSConfig? {
        let allowed = ["sni", "caFile", "certificate", "privateKey", "subjectAltNames", "insecureSkipVerify", "minVersion"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        var config = UpstreamTLSConfig()
        config.sni = fields["sni"].flatMap { reader.string($0, fields.path("sni")) }
        config.caFile = fields["caFile"].flatMap { readableFile($0, fields.path("caFile")) }
        config.certificate = fields["certificate"].flatMap { readableFile($0, fields.path("certificate")) }
        config.privateKey = fields["privateKey"].flatMap { readableFile($0, fields.path("privateKey")) }
        config.subjectAltNames = fields["subjectAltNames"].flatMap { decodeSubjectAltNames($0, fields.path("subjectAltNames")) } ?? []
        config.insecureSkipVerify = reader.bool(fields, "insecureSkipVerify") ?? false
        config.minVersion = fields["minVersion"].flatMap { reader.oneOf($0, fields.path("minVersion"), TLSConfig.MinimumVersion.self) } ?? .tls12
        switch (fields["certificate"], fields["privateKey"]) {
        case (.some, nil): reader.report(node, path, "expected 'privateKey' with 'certificate' (a client certificate needs its key)")
        case (nil, .some): reader.report(node, path, "expected 'certificate' with 'privateKey'")
        default: break
        }
        if config.insecureSkipVerify, let node = fields["insecureSkipVerify"], fields["caFile"] != nil || fields["subjectAltNames"] != nil {
            reader.report(node, fields.path("insecureSkipVerify"), "expected no 'caFile' or 'subjectAltNames' with insecureSkipVerify: true (nothing would be verified)")
        }
        return config
    }

    /// A list of names: `spiffe://…` and other URIs, or DNS names.
    private func decodeSubjectAltNames(_ node: Node, _ path: String) -> [String]? {
        guard let items = reader.sequence(node, path) else { return nil }
        if items.isEmpty { reader.report(node, path, "expected at least one name (a URI such as spiffe://mesh/sa/name, or a DNS name)") }
        return items.enumerated().compactMap { index, item in
            guard let name = reader.string(item, path + "[\(index)]") else { return nil }
            if name.isEmpty || name.contains(" ") {
                reader.report(item, path + "[\(index)]", "expected a URI or DNS name, found '\(name)'")
                return nil
            }
            return name
        }
    }

    private func readableFile(_ node: Node, _ path: String, what: String = "a readable PEM file") -> String? {
        guard let file = reader.string(node, path) else { return nil }
        if filesOnSidecars {
            guard file.hasPrefix("/") else {
                reader.report(node, path, "expected an absolute path (a mesh file's files are read on each sidecar's machine), found '\(file)'")
                return nil
            }
            return file
        }
        let resolved = file.hasPrefix("/") ? file : (URL(fileURLWithPath: reader.file).deletingLastPathComponent().appendingPathComponent(file).path)
        guard FileManager.default.isReadableFile(atPath: resolved) else {
            reader.report(node, path, "expected \(what), but '\(resolved)' cannot be read")
            return nil
        }
        return resolved
    }

    private func decodeVirtualHost(_ node: Node, _ path: String) -> VirtualHostConfig? {
        guard let fields = reader.fields(node, path, allowed: ["name", "domains", "routes"]) else { return nil }
        let name = reader.required(fields, "name").flatMap { reader.string($0, fields.path("name")) }
        let domains = reader.required(fields, "domains").map { decodeDomains($0, fields.path("domains")) } ?? []
        let routes = reader.required(fields, "routes").flatMap { decodeRoutes($0, fields.path("routes")) }
        guard let name, let routes else { return nil }
        return VirtualHostConfig(name: name, domains: domains, routes: routes)
    }

    /// `[example.com, "*.example.com", "*"]`, at least one, lower-cased.
    private func decodeDomains(_ node: Node, _ path: String) -> [String] {
        guard let items = reader.sequence(node, path) else { return [] }
        if items.isEmpty { reader.report(node, path, "expected at least one domain (use '*' for any)") }
        var domains: [String] = []
        for (index, item) in items.enumerated() {
            let itemPath = path + "[\(index)]"
            guard let domain = reader.string(item, itemPath) else { continue }
            if domain != "*", domain.dropFirst(domain.hasPrefix("*.") ? 2 : 0).contains("*") {
                reader.report(item, itemPath, "expected 'example.com', '*.example.com' or '*', found '\(domain)'")
                continue
            }
            domains.append(domain.lowercased())
        }
        return domains
    }

    private func decodeRoutes(_ node: Node, _ path: String) -> [RouteConfig]? {
        guard let items = reader.sequence(node, path) else { return nil }
        return items.enumerated().compactMap { decodeRoute($1, "\(path)[\($0)]") }
    }

    private func decodeRoute(_ node: Node, _ path: String) -> RouteConfig? {
        let allowed = ["name", "match", "cluster", "weightedClusters", "prefixRewrite", "hostRewrite", "timeout", "requestHeaders", "responseHeaders",
                       "retries", "fallback"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        let name = fields["name"].flatMap { reader.string($0, fields.path("name")) }
        let match = fields["match"].map { decodeMatch($0, fields.path("match")) } ?? RouteMatchConfig()
        var destination: RouteDestination?
        switch (fields["cluster"], fields["weightedClusters"]) {
        case (.some(let node), .some):
            reader.report(node, fields.path("cluster"), "expected either 'cluster' or 'weightedClusters', not both")
        case (.some(let node), nil):
            if let cluster = reader.string(node, fields.path("cluster")) {
                references.add(cluster, node: node, path: fields.path("cluster"))
                destination = .cluster(cluster)
            }
        case (nil, .some(let node)):
            destination = decodeWeightedClusters(node, fields.path("weightedClusters"))
        case (nil, nil):
            reader.report(node, path, "missing required key 'cluster' (or 'weightedClusters')")
        }
        let prefixRewrite = fields["prefixRewrite"].flatMap { reader.string($0, fields.path("prefixRewrite")) }
        if let prefixRewrite, !prefixRewrite.hasPrefix("/"), let node = fields["prefixRewrite"] {
            reader.report(node, fields.path("prefixRewrite"), "expected a path starting with '/', found '\(prefixRewrite)'")
        }
        if prefixRewrite != nil, case .regex = match.path, let node = fields["prefixRewrite"] {
            reader.report(node, fields.path("prefixRewrite"), "expected a route matching 'prefix' or 'path'; a regex route has no prefix to rewrite")
        }
        let hostRewrite = fields["hostRewrite"].flatMap { reader.string($0, fields.path("hostRewrite")) }
        let timeout = reader.duration(fields, "timeout")
        let requestHeaders = fields["requestHeaders"].map { decodeMutations($0, fields.path("requestHeaders")) } ?? HeaderMutations()
        let responseHeaders = fields["responseHeaders"].map { decodeMutations($0, fields.path("responseHeaders")) } ?? HeaderMutations()
        let retries = fields["retries"].flatMap { decodeRetryPolicy($0, fields.path("retries")) } ?? .none
        let fallback = fields["fallback"].flatMap { decodeFallback($0, fields.path("fallback")) }
        guard let destination else { return nil }
        return RouteConfig(
            name: name, match: match, destination: destination, prefixRewrite: prefixRewrite, hostRewrite: hostRewrite,
            timeout: timeout, requestHeaders: requestHeaders, responseHeaders: responseHeaders, retries: retries, fallback: fallback
        )
    }

    /// `{cluster: NAME}`, or `{status: N, headers: {NAME: VALUE}, body: TEXT}`.
    private func decodeFallback(_ node: Node, _ path: String) -> RouteFallback? {
        guard let fields = reader.fields(node, path, allowed: ["cluster", "status", "headers", "body"]) else { return nil }
        if let clusterNode = fields["cluster"] {
            for key in ["status", "headers", "body"] where fields[key] != nil {
                reader.report(fields[key], fields.path(key), "expected either a fallback cluster or a fallback response, not both")
            }
            guard let cluster = reader.string(clusterNode, fields.path("cluster")) else { return nil }
            references.add(cluster, node: clusterNode, path: fields.path("cluster"))
            return .cluster(cluster)
        }
        guard let status = reader.required(fields, "status").flatMap({ reader.int($0, fields.path("status"), range: 200...599) }) else { return nil }
        let headers = fields["headers"].map { headerValues($0, fields.path("headers")) } ?? []
        let body = fields["body"].flatMap { reader.string($0, fields.path("body"), allowEmpty: true) } ?? ""
        return .response(status: status, headers: headers, body: body)
    }

    private func decodeWeightedClusters(_ node: Node, _ path: String) -> RouteDestination? {
        guard let items = reader.sequence(node, path) else { return nil }
        if items.isEmpty {
            reader.report(node, path, "expected at least one weighted cluster")
            return nil
        }
        var clusters: [WeightedCluster] = []
        for (index, item) in items.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let fields = reader.fields(item, itemPath, allowed: ["cluster", "weight"]) else { continue }
            let clusterNode = reader.required(fields, "cluster")
            let cluster = clusterNode.flatMap { reader.string($0, fields.path("cluster")) }
            let weight = reader.required(fields, "weight").flatMap { reader.int($0, fields.path("weight"), range: 1...1_000_000) }
            if let cluster, let clusterNode { references.add(cluster, node: clusterNode, path: fields.path("cluster")) }
            if let cluster, let weight { clusters.append(WeightedCluster(cluster: cluster, weight: weight)) }
        }
        return clusters.count == items.count ? .weightedClusters(clusters) : nil
    }

    private func decodeMatch(_ node: Node, _ path: String) -> RouteMatchConfig {
        var match = RouteMatchConfig()
        guard let fields = reader.fields(node, path, allowed: ["prefix", "path", "regex", "methods", "headers"]) else { return match }
        let pathKeys = ["prefix", "path", "regex"].filter { fields[$0] != nil }
        if pathKeys.count > 1, let node = fields[pathKeys[1]] {
            reader.report(node, fields.path(pathKeys[1]), "expected only one of prefix, path or regex")
        }
        if let node = fields["prefix"], let value = reader.string(node, fields.path("prefix")) {
            if value.hasPrefix("/") { match.path = .prefix(value) } else {
                reader.report(node, fields.path("prefix"), "expected a path prefix starting with '/', found '\(value)'")
            }
        } else if let node = fields["path"], let value = reader.string(node, fields.path("path")) {
            if value.hasPrefix("/") { match.path = .exact(value) } else {
                reader.report(node, fields.path("path"), "expected a path starting with '/', found '\(value)'")
            }
        } else if let node = fields["regex"], let value = reader.string(node, fields.path("regex")) {
            do {
                _ = try Regex(value)
                match.path = .regex(value)
            } catch {
                reader.report(node, fields.path("regex"), "expected a valid regular expression: \(error)")
            }
        }
        if let node = fields["methods"], let items = reader.sequence(node, fields.path("methods")) {
            for (index, item) in items.enumerated() {
                guard let method = reader.string(item, fields.path("methods") + "[\(index)]") else { continue }
                guard HTTPToken.isToken(method) else {
                    reader.report(item, fields.path("methods") + "[\(index)]", "expected an HTTP method such as GET, found '\(method)'")
                    continue
                }
                match.methods.append(method.uppercased())
            }
        }
        if let node = fields["headers"], let items = reader.sequence(node, fields.path("headers")) {
            match.headers = items.enumerated().compactMap { decodeHeaderMatch($1, fields.path("headers") + "[\($0)]") }
        }
        return match
    }

    private func decodeHeaderMatch(_ node: Node, _ path: String) -> HeaderMatchConfig? {
        guard let fields = reader.fields(node, path, allowed: ["name", "present", "exact", "prefix"]) else { return nil }
        let name = reader.required(fields, "name").flatMap { headerName($0, fields.path("name")) }
        let conditions = ["present", "exact", "prefix"].filter { fields[$0] != nil }
        guard conditions.count == 1 else {
            reader.report(node, path, "expected exactly one of present, exact or prefix")
            return nil
        }
        let condition: HeaderMatchConfig.Condition?
        switch conditions[0] {
        case "present": condition = reader.bool(fields["present"]!, fields.path("present")).map { .present($0) }
        case "exact": condition = reader.string(fields["exact"]!, fields.path("exact"), allowEmpty: true).map { .exact($0) }
        default: condition = reader.string(fields["prefix"]!, fields.path("prefix")).map { .prefix($0) }
        }
        guard let name, let condition else { return nil }
        return HeaderMatchConfig(name: name, condition: condition)
    }

    private func decodeMutations(_ node: Node, _ path: String) -> HeaderMutations {
        var mutations = HeaderMutations()
        guard let fields = reader.fields(node, path, allowed: ["add", "set", "remove"]) else { return mutations }
        mutations.add = fields["add"].map { headerValues($0, fields.path("add")) } ?? []
        mutations.set = fields["set"].map { headerValues($0, fields.path("set")) } ?? []
        if let node = fields["remove"], let items = reader.sequence(node, fields.path("remove")) {
            mutations.remove = items.enumerated().compactMap { headerName($1, fields.path("remove") + "[\($0)]") }
        }
        return mutations
    }

    /// `{name: value, ...}` in file order.
    private func headerValues(_ node: Node, _ path: String) -> [HeaderValue] {
        guard case .mapping(let mapping) = node else {
            reader.report(node, path, "expected a mapping of header names to values, found \(reader.describe(node))")
            return []
        }
        return mapping.compactMap { key, value in
            guard let name = headerName(key, path) else { return nil }
            let valuePath = "\(path).\(name)"
            guard let text = reader.string(value, valuePath, allowEmpty: true) else { return nil }
            guard !text.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) else {
                reader.report(value, valuePath, "expected a header value without CR, LF or NUL")
                return nil
            }
            return HeaderValue(name: name, value: text)
        }
    }

    private func headerName(_ node: Node, _ path: String) -> String? {
        guard let name = reader.string(node, path) else { return nil }
        guard HTTPToken.isToken(name) else {
            reader.report(node, path, "expected a header name (letters, digits and !#$%&'*+-.^_`|~), found '\(name)'")
            return nil
        }
        return name.lowercased()
    }

    private func decodeCluster(_ node: Node, _ path: String) -> ClusterConfig? {
        let allowed = ["name", "endpoints", "endpointsFile", "protocol", "connectTimeout", "timeout", "dnsRefreshInterval", "loadBalancer", "pool",
                       "healthChecks", "endpointDrainTimeout", "retryBudget", "outlierDetection", "limits", "breakers", "streamIdleTimeout", "tls"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        let name = reader.required(fields, "name").flatMap { reader.string($0, fields.path("name")) }
        var endpoints: [HostPort] = []
        var endpointMetadata: [HostPort: EndpointMetadata] = [:]
        // An endpoints file may stand in for the list; one that exists must be valid now (a missing one is
        // waited for: the cluster starts without its endpoints and picks them up when it appears).
        var endpointsFile: String?
        if let node = fields["endpointsFile"], let file = reader.string(node, fields.path("endpointsFile")) {
            let resolved = file.hasPrefix("/") ? file : URL(fileURLWithPath: reader.file).deletingLastPathComponent().appendingPathComponent(file).path
            endpointsFile = resolved
            if FileManager.default.fileExists(atPath: resolved) {
                do {
                    _ = try EndpointsFile.load(resolved)
                } catch {
                    for issue in error.issues { reader.report(node, fields.path("endpointsFile"), "\(issue)") }
                }
            }
        }
        let endpointsNode = endpointsFile == nil && !fromControlPlane ? reader.required(fields, "endpoints") : fields["endpoints"]
        if let node = endpointsNode, let items = reader.sequence(node, fields.path("endpoints")) {
            if items.isEmpty && endpointsFile == nil && !fromControlPlane { reader.report(node, fields.path("endpoints"), "expected at least one endpoint HOST:PORT") }
            for (index, item) in items.enumerated() {
                let itemPath = fields.path("endpoints") + "[\(index)]"
                guard let (address, metadata) = decodeEndpoint(item, itemPath) else { continue }
                if let name {
                    let mark = item.mark
                    reader.endpointSites.append(EndpointSite(cluster: name, endpoint: address, file: reader.file, line: mark?.line ?? 1,
                                                             column: mark?.column ?? 1, keyPath: itemPath))
                }
                endpoints.append(address)
                if metadata != .default { endpointMetadata[address] = metadata }
            }
        }
        let upstreamProtocol = fields["protocol"].flatMap { reader.oneOf($0, fields.path("protocol"), ClusterConfig.UpstreamProtocol.self) }
        let connectTimeout = reader.duration(fields, "connectTimeout")
        let timeout = reader.duration(fields, "timeout")
        let dnsRefresh = reader.duration(fields, "dnsRefreshInterval")
        var loadBalancer = LoadBalancerConfig()
        if let node = fields["loadBalancer"],
           let lb = reader.fields(node, fields.path("loadBalancer"), allowed: ["policy", "decay", "defaultRTT", "hashPolicy", "tableSize", "panicThreshold", "slowStart"]) {
            let policyNode = reader.required(lb, "policy")
            if let policy = policyNode.flatMap({ reader.oneOf($0, lb.path("policy"), LoadBalancerConfig.Policy.self) }) {
                loadBalancer.policy = policy
            }
            if let node = lb["hashPolicy"] {
                if !loadBalancer.policy.isConsistentHash {
                    reader.report(node, lb.path("hashPolicy"), "hashPolicy applies to policies ring_hash and maglev only, not \(loadBalancer.policy.rawValue)")
                } else if let hash = reader.fields(node, lb.path("hashPolicy"), allowed: ["header", "cookie", "clientAddress", "ttl"]) {
                    let path = lb.path("hashPolicy")
                    let given = ["header", "cookie", "clientAddress"].filter { hash[$0] != nil }
                    if given.count != 1 {
                        reader.report(node, path, "expected exactly one of header, cookie or clientAddress, found \(given.isEmpty ? "none" : given.joined(separator: " and "))")
                    } else if let name = hash["header"].flatMap({ reader.string($0, hash.path("header")) }) {
                        if HTTPToken.isToken(name) { loadBalancer.hashPolicy = .header(name.lowercased()) } else {
                            reader.report(hash["header"]!, hash.path("header"), "expected a header name, found '\(name)'")
                        }
                    } else if let name = hash["cookie"].flatMap({ reader.string($0, hash.path("cookie")) }) {
                        if HTTPToken.isToken(name) {
                            loadBalancer.hashPolicy = .cookie(name, ttl: reader.duration(hash, "ttl"))
                        } else {
                            reader.report(hash["cookie"]!, hash.path("cookie"), "expected a cookie name, found '\(name)'")
                        }
                    }
                    if let ttl = hash["ttl"], hash["cookie"] == nil {
                        reader.report(ttl, hash.path("ttl"), "ttl applies to a cookie hash policy only (the proxy sets the cookie)")
                    } else if let node = hash["clientAddress"] {
                        if reader.bool(node, hash.path("clientAddress")) == true { loadBalancer.hashPolicy = .clientAddress } else {
                            reader.report(node, hash.path("clientAddress"), "expected true (or another hash key)")
                        }
                    }
                }
            } else if loadBalancer.policy.isConsistentHash, let policyNode {
                reader.report(policyNode, lb.path("policy"), "\(loadBalancer.policy.rawValue) needs a hashPolicy: {header: NAME}, {cookie: NAME} or {clientAddress: true}")
            }
            if let node = lb["tableSize"] {
                if loadBalancer.policy != .maglev {
                    reader.report(node, lb.path("tableSize"), "tableSize applies to policy maglev only, not \(loadBalancer.policy.rawValue)")
                } else if let size = reader.int(node, lb.path("tableSize"), range: 101...5_000_011) {
                    if LoadBalancerConfig.isPrime(size) { loadBalancer.maglevTableSize = size } else {
                        reader.report(node, lb.path("tableSize"), "expected a prime table size (such as 65537), found \(size)")
                    }
                }
            }
            for key in ["decay", "defaultRTT"] {
                guard let node = lb[key] else { continue }
                guard loadBalancer.policy == .peakEWMA else {
                    reader.report(node, lb.path(key), "\(key) applies to policy peak_ewma only, not \(loadBalancer.policy.rawValue)")
                    continue
                }
                guard let value = reader.duration(node, lb.path(key)) else { continue }
                if key == "decay" { loadBalancer.decay = value } else { loadBalancer.defaultRTT = value }
            }
            if let value = reader.int(lb, "panicThreshold", range: 0...100) { loadBalancer.panicThreshold = value }
            if let node = lb["slowStart"] {
                if loadBalancer.policy.isConsistentHash {
                    reader.report(node, lb.path("slowStart"), "slowStart applies to round_robin, random, least_request and peak_ewma, not \(loadBalancer.policy.rawValue)")
                } else {
                    loadBalancer.slowStart = decodeSlowStart(node, lb.path("slowStart"))
                }
            }
        }
        var pool = PoolConfig()
        if let node = fields["pool"], let poolFields = reader.fields(node, fields.path("pool"), allowed: ["maxConnectionsPerEndpoint", "maxPendingRequests", "idleTimeout"]) {
            if let value = reader.int(poolFields, "maxConnectionsPerEndpoint", range: 1...1_000_000) { pool.maxConnectionsPerEndpoint = value }
            if let value = reader.int(poolFields, "maxPendingRequests", range: 0...1_000_000) { pool.maxPendingRequests = value }
            if let value = reader.duration(poolFields, "idleTimeout") {
                pool.idleTimeout = value
            }
        }
        let healthCheck = fields["healthChecks"].flatMap { decodeHealthCheck($0, fields.path("healthChecks")) }
        let endpointDrainTimeout = reader.duration(fields, "endpointDrainTimeout")
        let retryBudget = fields["retryBudget"].flatMap { decodeRetryBudget($0, fields.path("retryBudget")) } ?? RetryBudgetConfig()
        let outlierDetection = fields["outlierDetection"].flatMap { decodeOutlierDetection($0, fields.path("outlierDetection")) }
        let breakers = fields["breakers"].flatMap { decodeBreakers($0, fields.path("breakers")) }
        let streamIdleTimeout = reader.duration(fields, "streamIdleTimeout")
        let tls = fields["tls"].flatMap { decodeUpstreamTLS($0, fields.path("tls")) }
        var limits = ClusterLimits()
        if let node = fields["limits"], let limitFields = reader.fields(node, fields.path("limits"), allowed: ["maxRequests", "maxActiveRetries", "maxConnections", "maxPendingRequests"]) {
            if let value = reader.int(limitFields, "maxRequests", range: 1...10_000_000) { limits.maxRequests = value }
            if let value = reader.int(limitFields, "maxActiveRetries", range: 0...10_000_000) { limits.maxActiveRetries = value }
            if let value = reader.int(limitFields, "maxConnections", range: 1...10_000_000) { limits.maxConnections = value }
            if let value = reader.int(limitFields, "maxPendingRequests", range: 0...10_000_000) { limits.maxPendingRequests = value }
        }
        guard let name else { return nil }
        return ClusterConfig(
            name: name,
            endpoints: endpoints,
            endpointMetadata: endpointMetadata,
            endpointsFile: endpointsFile,
            upstreamProtocol: upstreamProtocol ?? .http1,
            connectTimeout: connectTimeout ?? ClusterConfig.defaultConnectTimeout,
            timeout: timeout ?? ClusterConfig.defaultTimeout,
            dnsRefreshInterval: dnsRefresh ?? ClusterConfig.defaultDNSRefreshInterval,
            loadBalancer: loadBalancer,
            pool: pool,
            healthCheck: healthCheck,
            endpointDrainTimeout: endpointDrainTimeout ?? ClusterConfig.defaultEndpointDrainTimeout,
            retryBudget: retryBudget,
            outlierDetection: outlierDetection,
            limits: limits,
            breakers: breakers,
            streamIdleTimeout: streamIdleTimeout ?? ClusterConfig.defaultStreamIdleTimeout,
            tls: tls
        )
    }

    private func decodeBreakers(_ node: Node, _ path: String) -> BreakerConfig? {
        let allowed = ["consecutiveFailures", "failureRatePercent", "minimumRequests", "window", "openTime", "maxOpenTime", "halfOpenRequests"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        let valid = reader.issues.count
        var config = BreakerConfig()
        if let value = reader.int(fields, "consecutiveFailures", range: 0...100_000) { config.consecutiveFailures = value }
        if let value = reader.int(fields, "failureRatePercent", range: 0...100) { config.failureRatePercent = value }
        if let value = reader.int(fields, "minimumRequests", range: 1...1_000_000) { config.minimumRequests = value }
        if let value = reader.int(fields, "halfOpenRequests", range: 1...10_000) { config.halfOpenRequests = value }
        if let value = reader.duration(fields, "window") {
            if value >= .seconds(1) { config.window = value } else {
                reader.report(fields["window"], fields.path("window"), "expected a window of at least 1s")
            }
        }
        if let value = reader.duration(fields, "openTime") { config.openTime = value }
        if let value = reader.duration(fields, "maxOpenTime") { config.maxOpenTime = value }
        if config.maxOpenTime < config.openTime, let node = fields["maxOpenTime"] ?? fields["openTime"] {
            reader.report(node, fields.path("maxOpenTime"), "expected a maxOpenTime no shorter than openTime (\(ConfigDuration.format(config.openTime)))")
        }
        if config.consecutiveFailures == 0 && config.failureRatePercent == 0 {
            reader.report(node, path, "expected consecutiveFailures or failureRatePercent above 0: this breaker could never open")
        }
        return reader.issues.count == valid ? config : nil
    }

    private func decodeOutlierDetection(_ node: Node, _ path: String) -> OutlierDetectionConfig? {
        let allowed = ["consecutive5xx", "consecutiveGatewayFailure", "baseEjectionTime", "maxEjectionTime", "maxEjectionPercent",
                       "interval", "failurePercentageThreshold", "failurePercentageMinimumHosts", "failurePercentageRequestVolume",
                       "successRateStdevFactor", "successRateMinimumHosts", "successRateRequestVolume"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        var config = OutlierDetectionConfig()
        if let value = reader.int(fields, "consecutive5xx", range: 0...1000) { config.consecutive5xx = value }
        if let value = reader.int(fields, "consecutiveGatewayFailure", range: 0...1000) { config.consecutiveGatewayFailure = value }
        if let value = reader.duration(fields, "baseEjectionTime") { config.baseEjectionTime = value }
        if let value = reader.duration(fields, "maxEjectionTime") { config.maxEjectionTime = value }
        if config.maxEjectionTime < config.baseEjectionTime, let node = fields["maxEjectionTime"] ?? fields["baseEjectionTime"] {
            reader.report(node, fields.path("maxEjectionTime"), "expected a maxEjectionTime no shorter than baseEjectionTime (\(ConfigDuration.format(config.baseEjectionTime)))")
        }
        if let value = reader.int(fields, "maxEjectionPercent", range: 0...100) { config.maxEjectionPercent = value }
        if let value = reader.duration(fields, "interval") { config.interval = value }
        if let value = reader.int(fields, "failurePercentageThreshold", range: 0...100) { config.failurePercentageThreshold = value }
        if let value = reader.int(fields, "failurePercentageMinimumHosts", range: 1...100_000) { config.failurePercentageMinimumHosts = value }
        if let value = reader.int(fields, "failurePercentageRequestVolume", range: 1...10_000_000) { config.failurePercentageRequestVolume = value }
        if let value = reader.int(fields, "successRateStdevFactor", range: 0...100_000) { config.successRateStdevFactor = value }
        if let value = reader.int(fields, "successRateMinimumHosts", range: 1...100_000) { config.successRateMinimumHosts = value }
        if let value = reader.int(fields, "successRateRequestVolume", range: 1...10_000_000) { config.successRateRequestVolume = value }
        return config
    }

    private func decodeRetryBudget(_ node: Node, _ path: String) -> RetryBudgetConfig? {
        guard let fields = reader.fields(node, path, allowed: ["percent", "minRetriesPerSecond", "window"]) else { return nil }
        var budget = RetryBudgetConfig()
        if let value = reader.int(fields, "percent", range: 0...1000) { budget.percent = value }
        if let value = reader.int(fields, "minRetriesPerSecond", range: 0...1_000_000) { budget.minRetriesPerSecond = value }
        if let value = reader.duration(fields, "window") {
            if value >= .seconds(1) && value <= .seconds(300) { budget.window = value } else {
                reader.report(fields["window"], fields.path("window"), "expected a window from 1s to 5m, found '\(ConfigDuration.format(value))'")
            }
        }
        return budget
    }

    func decodeRetryPolicy(_ node: Node, _ path: String) -> RetryPolicy? {
        let allowed = ["attempts", "retryOn", "retriableStatusCodes", "perTryTimeout", "backoff", "retryAfterMax", "replayBufferBytes", "retryNonIdempotent",
                       "hedgeOnPerTryTimeout"]
        guard let fields = reader.fields(node, path, allowed: allowed) else { return nil }
        let valid = reader.issues.count
        var policy = RetryPolicy(attempts: 2, retryOn: [.fiveXX, .reset, .connectFailure, .refusedStream])
        if let value = reader.int(fields, "attempts", range: 1...10) { policy.attempts = value }
        if let node = fields["retryOn"] {
            // A list, or Envoy's comma-separated string.
            let items: [(Node, String)]
            if case .scalar(let scalar) = node {
                items = scalar.string.split(separator: ",").map { (node, $0.trimmingCharacters(in: .whitespaces)) }
            } else {
                items = (reader.sequence(node, fields.path("retryOn")) ?? []).compactMap { item in
                    reader.string(item, fields.path("retryOn")).map { (item, $0) }
                }
            }
            var conditions: Set<RetryPolicy.Condition> = []
            for (item, token) in items {
                if let condition = RetryPolicy.Condition(rawValue: token) { conditions.insert(condition); continue }
                var message = "unknown retryOn condition '\(token)'"
                let names = RetryPolicy.Condition.allCases.map(\.rawValue)
                if let suggestion = YAMLReader.closest(to: token, among: names) { message += "; did you mean '\(suggestion)'?" } else {
                    message += "; expected \(names.joined(separator: ", "))"
                }
                reader.report(item, fields.path("retryOn"), message)
            }
            policy.retryOn = conditions
        }
        if let node = fields["retriableStatusCodes"], let items = reader.sequence(node, fields.path("retriableStatusCodes")) {
            policy.retriableStatusCodes = Set(items.enumerated().compactMap { index, item in
                reader.int(item, fields.path("retriableStatusCodes") + "[\(index)]", range: 100...599)
            })
            if !policy.retryOn.contains(.retriableStatusCodes) { policy.retryOn.insert(.retriableStatusCodes) }
        } else if policy.retryOn.contains(.retriableStatusCodes), let node = fields["retryOn"] {
            reader.report(node, fields.path("retryOn"), "retriable-status-codes needs a retriableStatusCodes list")
        }
        policy.perTryTimeout = reader.duration(fields, "perTryTimeout")
        if let node = fields["backoff"], let backoff = reader.fields(node, fields.path("backoff"), allowed: ["base", "max"]) {
            if let value = reader.duration(backoff, "base") { policy.backoffBase = value }
            if let value = reader.duration(backoff, "max") { policy.backoffMax = value }
            if policy.backoffMax < policy.backoffBase {
                reader.report(node, backoff.path("max"), "expected a max no shorter than the base (\(ConfigDuration.format(policy.backoffBase)))")
            }
        }
        if let value = reader.duration(fields, "retryAfterMax") { policy.retryAfterMax = value }
        if let node = fields["replayBufferBytes"], let value = reader.byteSize(node, fields.path("replayBufferBytes")) {
            policy.replayBufferBytes = value
        }
        if let value = reader.bool(fields, "retryNonIdempotent") {
            policy.retryNonIdempotent = value
        }
        if let value = reader.bool(fields, "hedgeOnPerTryTimeout") {
            policy.hedgeOnPerTryTimeout = value
            if value && policy.perTryTimeout == nil {
                reader.report(fields["hedgeOnPerTryTimeout"], fields.path("hedgeOnPerTryTimeout"), "hedgeOnPerTryTimeout needs a perTryTimeout")
            }
        }
        return reader.issues.count == valid ? policy : nil
    }

    /// One endpoint: `HOST:PORT`, or `{address: HOST:PORT, weight: N, zone: Z, priority: P}` (clusters and
    /// YAML endpoints files share it).
    func decodeEndpoint(_ item: Node, _ path: String) -> (HostPort, EndpointMetadata)? {
        var metadata = EndpointMetadata()
        let address: HostPort
        let addressNode: Node
        if case .mapping = item {
            guard let entry = reader.fields(item, path, allowed: ["address", "weight", "zone", "priority"]),
                  let node = reader.required(entry, "address"), let parsed = reader.hostPort(node, entry.path("address")) else { return nil }
            address = parsed
            addressNode = node
            if let node = entry["weight"], let weight = reader.int(node, entry.path("weight"), range: 1...1_000_000) { metadata.weight = weight }
            if let node = entry["zone"], let zone = reader.string(node, entry.path("zone")) { metadata.zone = zone }
            if let node = entry["priority"], let priority = reader.int(node, entry.path("priority"), range: 0...127) { metadata.priority = priority }
        } else {
            guard let parsed = reader.hostPort(item, path) else { return nil }
            address = parsed
            addressNode = item
        }
        guard address.port > 0 else {
            reader.report(addressNode, path, "expected an endpoint port in 1...65535, found 0")
            return nil
        }
        return (address, metadata)
    }

    private func decodeSlowStart(_ node: Node, _ path: String) -> LoadBalancerConfig.SlowStart? {
        guard let fields = reader.fields(node, path, allowed: ["window", "aggression", "minWeightPercent"]),
              let window = reader.required(fields, "window").flatMap({ reader.duration($0, fields.path("window")) }) else { return nil }
        var slowStart = LoadBalancerConfig.SlowStart(window: window)
        if let node = fields["aggression"] {
            if case .scalar(let scalar) = node, let value = Double(scalar.string), value > 0, value <= 100 {
                slowStart.aggression = value
            } else {
                reader.report(node, fields.path("aggression"), "expected a number greater than 0 (1 ramps linearly), found \(reader.describe(node))")
            }
        }
        if let value = reader.int(fields, "minWeightPercent", range: 1...100) { slowStart.minWeightPercent = value }
        return slowStart
    }

    private func decodeHealthCheck(_ node: Node, _ path: String) -> HealthCheckConfig? {
        let common = ["type", "interval", "unhealthyInterval", "timeout", "initialJitter", "jitter", "healthyThreshold", "unhealthyThreshold"]
        let httpOnly = ["path", "method", "expectedStatuses", "bodyContains"]
        guard let fields = reader.fields(node, path, allowed: common + httpOnly + ["host", "service"]),
              let kind = reader.required(fields, "type").flatMap({ reader.oneOf($0, fields.path("type"), HealthCheckConfig.Kind.self) }) else {
            return nil
        }
        var check = HealthCheckConfig(kind: kind)
        let valid = reader.issues.count
        // Keys of another kind of check are mistakes, not silently ignored settings.
        let foreign = switch kind {
        case .http: ["service"]
        case .tcp: httpOnly + ["host", "service"]
        case .grpc: httpOnly
        }
        for key in foreign where fields[key] != nil {
            reader.report(fields[key], fields.path(key), "\(key) does not apply to a \(kind.rawValue) health check")
        }
        if let value = reader.duration(fields, "interval") { check.interval = value }
        check.unhealthyInterval = reader.duration(fields, "unhealthyInterval")
        if let value = reader.duration(fields, "timeout") { check.timeout = value }
        if let value = reader.duration(fields, "initialJitter", allowZero: true) { check.initialJitter = value }
        if let value = reader.duration(fields, "jitter", allowZero: true) { check.jitter = value }
        if let value = reader.int(fields, "healthyThreshold", range: 1...1000) { check.healthyThreshold = value }
        if let value = reader.int(fields, "unhealthyThreshold", range: 1...1000) { check.unhealthyThreshold = value }
        if kind == .http {
            if let node = reader.required(fields, "path"), let value = reader.string(node, fields.path("path")) {
                if value.hasPrefix("/") && !value.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) { check.path = value } else {
                    reader.report(node, fields.path("path"), "expected a path starting with '/' and without spaces, found '\(value)'")
                }
            }
            if let node = fields["method"], let value = reader.string(node, fields.path("method")) {
                if HTTPToken.isToken(value) { check.method = value.uppercased() } else {
                    reader.report(node, fields.path("method"), "expected an HTTP method such as GET or HEAD, found '\(value)'")
                }
            }
            if let node = fields["expectedStatuses"], let items = reader.sequence(node, fields.path("expectedStatuses")) {
                var ranges: [ClosedRange<Int>] = []
                for (index, item) in items.enumerated() {
                    let itemPath = fields.path("expectedStatuses") + "[\(index)]"
                    guard let text = item.scalar?.string, let range = Self.statusRange(text) else {
                        reader.report(item, itemPath, "expected a status such as 200 or a range such as 200-299 (within 100-599), found \(reader.describe(item))")
                        continue
                    }
                    ranges.append(range)
                }
                if items.isEmpty { reader.report(node, fields.path("expectedStatuses"), "expected at least one status or range") }
                if !ranges.isEmpty { check.expectedStatuses = ranges }
            }
            check.bodyContains = fields["bodyContains"].flatMap { reader.string($0, fields.path("bodyContains")) }
        }
        if kind != .tcp { check.host = fields["host"].flatMap { reader.string($0, fields.path("host")) } }
        if kind == .grpc, let node = fields["service"] { check.service = reader.string(node, fields.path("service"), allowEmpty: true) ?? "" }
        if check.timeout > check.interval, let node = fields["timeout"] {
            reader.report(node, fields.path("timeout"), "expected a timeout no longer than the interval (\(ConfigDuration.format(check.interval)))")
        }
        return reader.issues.count == valid ? check : nil
    }

    /// `200` or `200-299`, within 100...599.
    static func statusRange(_ text: String) -> ClosedRange<Int>? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let low = Int(parts[0]), let high = Int(parts.last!), 100 <= low, low <= high, high <= 599 else {
            return nil
        }
        return low...high
    }
}

/// Route → cluster references, resolved after all clusters are read.
private final class ReferenceList {
    struct Reference {
        let name: String
        let node: Node
        let path: String
    }

    private(set) var items: [Reference] = []

    func add(_ name: String, node: Node, path: String) {
        items.append(Reference(name: name, node: node, path: path))
    }
}

/// RFC 9110 §5.6.2 tokens: header names and methods.
public enum HTTPToken {
    public static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy(isTokenByte)
    }

    public static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }
}
