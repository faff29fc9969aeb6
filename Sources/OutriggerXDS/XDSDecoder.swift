import Foundation
import OutriggerConfig
import SwiftProtobuf
import Yams

/// Why a pushed resource was refused: the resource, and the field and reason (the NACK's `error_detail`).
public struct XDSRejection: Error, Sendable, Hashable, CustomStringConvertible {
    public var type: XDSType
    public var name: String
    public var message: String

    public init(type: XDSType, name: String, message: String) {
        self.type = type
        self.name = name
        self.message = message
    }

    public var description: String { "\(type.shortName) '\(name)': \(message)" }
}

/// xDS resources back into our config: each resource is translated into the config's own document tree
/// (the keys of `sidecar.yaml`), and the document is decoded by the same decoder as a file — so a push is
/// validated exactly as a file is. What cannot be translated (an unknown field, a matcher or filter we do
/// not implement) is refused with the resource and field; nothing is silently dropped.
public struct XDSDecoder: Sendable {
    /// Listener and route resources (by name) the sidecar has accepted.
    public var listeners: [String: Google_Protobuf_Any] = [:]
    public var routes: [String: Google_Protobuf_Any] = [:]
    public var clusters: [String: Google_Protobuf_Any] = [:]
    public var endpoints: [String: Google_Protobuf_Any] = [:]

    public init() {}

    /// The resources of one type, as a state-of-the-world response replaces them.
    public subscript(type: XDSType) -> [String: Google_Protobuf_Any] {
        get {
            switch type {
            case .listener: listeners
            case .route: routes
            case .cluster: clusters
            case .endpoints: endpoints
            }
        }
        set {
            switch type {
            case .listener: listeners = newValue
            case .route: routes = newValue
            case .cluster: clusters = newValue
            case .endpoints: endpoints = newValue
            }
        }
    }

    /// Route configurations the listeners name (what to subscribe to over RDS).
    public func routeNames() throws(XDSRejection) -> [String] {
        var names: [String] = []
        for name in listeners.keys.sorted() {
            if let routeName = try Self.connectionManager(of: listeners[name]!, name: name).routeName { names.append(routeName) }
        }
        return names
    }

    /// The ClusterLoadAssignments the EDS clusters name (what to subscribe to over EDS): each cluster's
    /// `eds_cluster_config.service_name`, or its own name. A STATIC cluster carries its endpoints itself.
    public func endpointNames() throws(XDSRejection) -> [String] {
        var names: [String] = []
        for name in clusters.keys.sorted() {
            if let endpointsName = try Self.endpointsName(of: Self.unpack(clusters[name]!, as: Envoy_Config_Cluster_V3_Cluster.self, type: .cluster, name: name)) {
                names.append(endpointsName)
            }
        }
        return names
    }

    /// A resource's name, decoded (once: what is checked here is not decoded again) and checked as every
    /// resource is: a resource with a field this build does not declare is refused by its name.
    public static func name(of body: Google_Protobuf_Any, type: XDSType) throws(XDSRejection) -> String {
        do {
            return try resourceName(body, type: type, checked: true)
        } catch {
            // Refused: say which resource, if its bytes give its name.
            let name = (try? resourceName(body, type: type, checked: false)) ?? "?"
            throw XDSRejection(type: type, name: name, message: error.message)
        }
    }

    /// A resource's name from its bytes alone, its fields not checked (the control-plane simulator's sidecars
    /// decode each resource this way, each on its own).
    public static func uncheckedName(of body: Google_Protobuf_Any, type: XDSType) throws(XDSRejection) -> String {
        try resourceName(body, type: type, checked: false)
    }

    private static func resourceName(_ body: Google_Protobuf_Any, type: XDSType, checked: Bool) throws(XDSRejection) -> String {
        guard body.typeURL == type.rawValue else {
            throw XDSRejection(type: type, name: "?", message: "a \(type.shortName) response carried a \(body.typeURL)")
        }
        func read<M: SwiftProtobuf.Message & Sendable>(_: M.Type, _ name: (M) -> String) throws(XDSRejection) -> String {
            if checked { return name(try unpack(body, as: M.self, type: type, name: "?")) }
            do {
                return name(try M(serializedBytes: body.value))
            } catch {
                throw XDSRejection(type: type, name: "?", message: "cannot decode: \(error)")
            }
        }
        switch type {
        case .listener: return try read(Envoy_Config_Listener_V3_Listener.self) { $0.name }
        case .route: return try read(Envoy_Config_Route_V3_RouteConfiguration.self) { $0.name }
        case .cluster: return try read(Envoy_Config_Cluster_V3_Cluster.self) { $0.name }
        case .endpoints: return try read(Envoy_Config_Endpoint_V3_ClusterLoadAssignment.self) { $0.clusterName }
        }
    }

    static func endpointsName(of cluster: Envoy_Config_Cluster_V3_Cluster) -> String? {
        guard case .type(.eds)? = cluster.clusterDiscoveryType else { return nil }
        return cluster.edsClusterConfig.serviceName.isEmpty ? cluster.name : cluster.edsClusterConfig.serviceName
    }

    /// Whether every route configuration the listeners name and every EDS cluster's endpoints have arrived.
    public func isComplete() throws(XDSRejection) -> Bool {
        let routeNames = try routeNames()
        let endpointNames = try endpointNames()
        return routeNames.allSatisfy { routes[$0] != nil } && endpointNames.allSatisfy { endpoints[$0] != nil }
    }

    /// A listener's routes: inline, or the RouteConfiguration it names, if that has arrived.
    func routeConfiguration(of manager: ConnectionManager) throws(XDSRejection) -> Envoy_Config_Route_V3_RouteConfiguration? {
        if let inline = manager.inlineRoutes { return inline }
        guard let name = manager.routeName, let body = routes[name] else { return nil }
        return try Self.unpack(body, as: Envoy_Config_Route_V3_RouteConfiguration.self, type: .route, name: name)
    }

    /// The ClusterLoadAssignment an EDS cluster names, if it has arrived.
    func assignment(for cluster: Envoy_Config_Cluster_V3_Cluster) throws(XDSRejection) -> Envoy_Config_Endpoint_V3_ClusterLoadAssignment? {
        guard let name = Self.endpointsName(of: cluster), let body = endpoints[name] else { return nil }
        return try Self.unpack(body, as: Envoy_Config_Endpoint_V3_ClusterLoadAssignment.self, type: .endpoints, name: name)
    }

    /// Checks on its own each resource a response of `type` brought or changed (named `names`), while others
    /// they name are still on their way: the listeners and clusters themselves, the listeners whose routes and
    /// the clusters whose endpoints they are. What was accepted before was checked then.
    public func checkEach(arrived type: XDSType, names: Set<String>) throws(XDSRejection) {
        for (name, body) in listeners where type == .listener || type == .route {
            let manager = try Self.connectionManager(of: body, name: name)
            guard type == .listener && names.contains(name) || type == .route && manager.routeName.map(names.contains) == true else { continue }
            if let routeConfiguration = try routeConfiguration(of: manager) {
                _ = try Self.listenerDocument(manager.listener, manager.connectionManager, routeConfiguration)
            }
        }
        for (name, body) in routes where type == .route && names.contains(name) {
            let routes = try Self.unpack(body, as: Envoy_Config_Route_V3_RouteConfiguration.self, type: .route, name: name)
            for host in routes.virtualHosts {
                for (index, route) in host.routes.enumerated() {
                    _ = try Self.routeDocument(route, routes: name, where: "virtual_hosts['\(host.name)'].routes[\(index)]")
                }
            }
        }
        for (name, body) in clusters where type == .cluster || type == .endpoints {
            let cluster = try Self.unpack(body, as: Envoy_Config_Cluster_V3_Cluster.self, type: .cluster, name: name)
            guard type == .cluster && names.contains(name) || type == .endpoints && Self.endpointsName(of: cluster).map(names.contains) == true else { continue }
            _ = try Self.clusterDocument(cluster, try assignment(for: cluster))
        }
    }

    /// The config these resources say, on top of `base` (the sidecar's own admin, concurrency, drain and zone).
    public func config(base: SidecarConfig) throws(XDSRejection) -> SidecarConfig {
        defer { Self.decoded.rotate() }
        var listenerDocuments: [Node] = []
        let listenerNames = listeners.keys.sorted()
        var routeOwners: [String] = []
        for name in listenerNames {
            let manager = try Self.connectionManager(of: listeners[name]!, name: name)
            guard let routeConfiguration = try routeConfiguration(of: manager) else {
                throw XDSRejection(type: .listener, name: name, message: "route configuration '\(manager.routeName ?? "")' has not arrived")
            }
            routeOwners.append(manager.routeName ?? name)
            listenerDocuments.append(try Self.listenerDocument(manager.listener, manager.connectionManager, routeConfiguration))
        }
        let clusterNames = clusters.keys.sorted()
        var clusterDocuments: [Node] = []
        for name in clusterNames {
            let cluster = try Self.unpack(clusters[name]!, as: Envoy_Config_Cluster_V3_Cluster.self, type: .cluster, name: name)
            clusterDocuments.append(try Self.clusterDocument(cluster, try assignment(for: cluster)))
        }
        let document = Document()
        document["listeners"] = Self.sequence(listenerDocuments)
        document["clusters"] = Self.sequence(clusterDocuments)
        var decoded: SidecarConfig
        do {
            decoded = try SidecarConfig.decode(document: document.node, source: "xds")
        } catch {
            // Name the resource the first issue is in: listeners[i] (or its routes) or clusters[i].
            let issue = error.issues[0]
            let (type, name, rest) = Self.resource(of: issue.keyPath, listeners: listenerNames, routeOwners: routeOwners, clusters: clusterNames)
            let more = error.issues.count > 1 ? " (and \(error.issues.count - 1) more)" : ""
            throw XDSRejection(type: type, name: name, message: "\(rest.isEmpty ? "" : "\(rest): ")\(issue.message)\(more)")
        }
        decoded.admin = base.admin
        decoded.concurrency = base.concurrency
        decoded.drainTimeout = base.drainTimeout
        decoded.zone = base.zone
        decoded.controlPlane = base.controlPlane
        return decoded
    }

    /// The resource a decoder key path points into, and the path within it.
    static func resource(of keyPath: String, listeners: [String], routeOwners: [String], clusters: [String]) -> (XDSType, String, String) {
        func index(after prefix: String) -> (Int, String)? {
            guard keyPath.hasPrefix(prefix + "["), let close = keyPath.firstIndex(of: "]"),
                  let number = Int(keyPath[keyPath.index(keyPath.startIndex, offsetBy: prefix.count + 1)..<close]) else { return nil }
            var rest = String(keyPath[keyPath.index(after: close)...])
            if rest.hasPrefix(".") { rest.removeFirst() }
            return (number, rest)
        }
        if let (number, rest) = index(after: "clusters"), number < clusters.count {
            return (.cluster, clusters[number], rest)
        }
        if let (number, rest) = index(after: "listeners"), number < listeners.count {
            if rest.hasPrefix("virtualHosts") { return (.route, routeOwners[number], rest) }
            return (.listener, listeners[number], rest)
        }
        return (.listener, listeners.first ?? "", keyPath)
    }

    // MARK: Messages

    /// Unpacks `body` as `M`, refusing another type and any field this build does not know: a field we do not
    /// implement must not be silently ignored when it would change behaviour.
    static let decoded = DecodedMessages()

    static func unpack<M: SwiftProtobuf.Message & Sendable>(_ body: Google_Protobuf_Any, as: M.Type, type: XDSType, name: String,
                                                 field: String? = nil) throws(XDSRejection) -> M {
        let place = field.map { "\($0): " } ?? ""
        let expected = "type.googleapis.com/" + M.protoMessageName
        guard body.typeURL == expected else {
            throw XDSRejection(type: type, name: name, message: "\(place)expected \(expected), found \(body.typeURL)")
        }
        let key = DecodedMessages.Key(type: ObjectIdentifier(M.self), bytes: body.value)
        if let known = decoded.message(key, as: M.self) { return known }
        let message: M
        do {
            message = try M(serializedBytes: body.value)
        } catch {
            throw XDSRejection(type: type, name: name, message: "\(place)cannot decode \(M.protoMessageName): \(error)")
        }
        // Decoded once; one walk finds a field this build does not declare, at any depth (an `Any` inside is
        // checked when it is unpacked in turn).
        var finder = UnknownFieldFinder(current: M.protoMessageName)
        try? message.traverse(visitor: &finder)
        if let (owner, numbers) = finder.found {
            let fields = numbers.map(String.init).joined(separator: ", ")
            throw XDSRejection(type: type, name: name,
                               message: "\(place)field\(numbers.count == 1 ? "" : "s") \(fields) of \(owner) \(numbers.count == 1 ? "is" : "are") not implemented by Outrigger")
        }
        decoded.remember(message, for: key)
        return message
    }

    static func readVarint(_ bytes: inout Data.SubSequence) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while let byte = bytes.first {
            bytes = bytes.dropFirst()
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
            if shift > 63 { return nil }
        }
        return nil
    }

    static func options<M: SwiftProtobuf.Message & Sendable>(_ metadata: Envoy_Config_Core_V3_Metadata, as: M.Type, type: XDSType, name: String) throws(XDSRejection) -> M {
        guard let body = metadata.typedFilterMetadata[XDSNames.options] else { return M() }
        return try unpack(body, as: M.self, type: type, name: name, field: "metadata.typed_filter_metadata['\(XDSNames.options)']")
    }

    // MARK: Document pieces

    /// A quoted string. Whether it may be empty is the config reader's rule for its key, as for a file.
    static func string(_ text: String) -> Node { .scalar(.init(text, implicitTag(), .singleQuoted)) }

    static func number(_ value: some BinaryInteger) -> Node { plain("\(value)") }

    static func bool(_ value: Bool) -> Node { plain(value ? "true" : "false") }

    static func sequence(_ items: [Node]) -> Node { .sequence(.init(items, implicitTag())) }

    static func plain(_ text: String) -> Node { .scalar(.init(text, implicitTag())) }

    /// Yams' `Tag.implicit` builds a new resolver and constructor (a few dictionaries) for every node; a
    /// translated push makes hundreds of thousands of nodes. A tag is resolved in place, so each node gets its
    /// own, sharing these two (never changed after they are made).
    private static let resolver = Resolver.default
    nonisolated(unsafe) private static let constructor = Constructor.default

    static func implicitTag() -> Tag { Tag(.implicit, resolver, constructor) }

    static func duration(_ value: Google_Protobuf_Duration) -> Node {
        let nanoseconds = value.seconds * 1_000_000_000 + Int64(value.nanos)
        return plain(ConfigDuration.format(.nanoseconds(nanoseconds)))
    }
}

/// Walks a decoded message for fields this build does not declare (kept by the decoder as unknown fields):
/// the first message that has some, by name, and their numbers.
struct UnknownFieldFinder: Visitor {
    var current: String
    var found: (message: String, numbers: [UInt64])?

    mutating func visitUnknown(bytes: Data) throws {
        guard found == nil, !bytes.isEmpty else { return }
        var numbers: [UInt64] = []
        var rest = bytes[...]
        while let key = XDSDecoder.readVarint(&rest) {
            numbers.append(key >> 3)
            switch key & 7 {
            case 0: _ = XDSDecoder.readVarint(&rest)
            case 1: rest = rest.dropFirst(8)
            case 2: let length = Int(XDSDecoder.readVarint(&rest) ?? 0); rest = rest.dropFirst(length)
            case 5: rest = rest.dropFirst(4)
            default: rest = rest.dropFirst(rest.count)
            }
        }
        found = (current, numbers)
    }

    mutating func visitSingularMessageField<M: Message>(value: M, fieldNumber: Int) throws {
        guard found == nil else { return }
        let outer = current
        current = M.protoMessageName
        try value.traverse(visitor: &self)
        current = outer
    }

    mutating func visitMapField<KeyType, ValueType>(fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type,
                                                     value: _ProtobufMessageMap<KeyType, ValueType>.BaseType, fieldNumber: Int) throws {
        for message in value.values { try visitSingularMessageField(value: message, fieldNumber: fieldNumber) }
    }

    mutating func visitMapField<KeyType, ValueType: MapValueType>(fieldType: _ProtobufMap<KeyType, ValueType>.Type,
                                                                   value: _ProtobufMap<KeyType, ValueType>.BaseType, fieldNumber: Int) throws {}
    mutating func visitMapField<KeyType, ValueType>(fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type,
                                                     value: _ProtobufEnumMap<KeyType, ValueType>.BaseType, fieldNumber: Int) throws
    where ValueType.RawValue == Int {}
    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws {}
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws {}
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws {}
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws {}
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws {}
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws {}
    mutating func visitSingularEnumField<E: Enum>(value: E, fieldNumber: Int) throws {}
}

/// A mapping under construction, keys in insertion order.
final class Document {
    private var pairs: [(Node, Node)] = []
    private var index: [String: Int] = [:]

    subscript(key: String) -> Node? {
        get { index[key].map { pairs[$0].1 } }
        set {
            if let at = index[key] {
                pairs.remove(at: at)
                index = [:]
                for (position, pair) in pairs.enumerated() { index[pair.0.scalar!.string] = position }
            }
            if let newValue {
                index[key] = pairs.count
                pairs.append((XDSDecoder.plain(key), newValue))
            }
        }
    }

    var isEmpty: Bool { pairs.isEmpty }

    var node: Node { .mapping(.init(pairs, XDSDecoder.implicitTag())) }
}
