import OutriggerConfig
import OutriggerXDS
import SwiftProtobuf

/// One sidecar's ADS stream as the control plane sees it (state of the world, pure): what it subscribed to,
/// what was sent with which version and nonce, what it ACKed or NACKed. Requests and snapshot changes go in;
/// responses to send come out, in make-before-break order.
///
/// The protocol's rules (Envoy's xDS protocol document): a request whose nonce is not the last one sent for
/// its type is stale and ignored; one with `error_detail` NACKs the version sent with that nonce, which is
/// then never sent to this stream again; otherwise it ACKs it. Versions are content hashes, so an unchanged
/// set is never re-sent.
public struct ADSStreamStateMachine: Sendable {
    /// A request as the state machine needs it.
    public struct Request: Sendable, Hashable {
        public var type: XDSType
        public var versionInfo: String
        public var nonce: String
        public var resourceNames: [String]
        /// Set on a NACK.
        public var error: String?

        public init(type: XDSType, versionInfo: String = "", nonce: String = "", resourceNames: [String] = [], error: String? = nil) {
            self.type = type
            self.versionInfo = versionInfo
            self.nonce = nonce
            self.resourceNames = resourceNames
            self.error = error
        }
    }

    /// A response to write.
    public struct Response: Sendable, Hashable {
        public var type: XDSType
        public var version: String
        public var nonce: String
        public var resources: [XDSResource]
    }

    public enum Event: Sendable, Hashable {
        case acked(XDSType, version: String)
        case nacked(XDSType, version: String, message: String)
    }

    struct Sent: Sendable {
        var version: String
        var nonce: String
        var names: [String]
        var resources: [String: XDSResource]
    }

    struct TypeState: Sendable {
        /// nil: not subscribed yet. Empty: every resource of the type (wildcard).
        var names: [String]?
        var sent: Sent?
        var acked: String?
        var nacked: (version: String, message: String)?
    }

    private var types: [XDSType: TypeState] = [:]
    private var snapshot: [XDSType: [String: XDSResource]] = [:]
    /// The version of each type's whole set in `snapshot`, hashed once by whoever shares the snapshot.
    private var snapshotVersions: [XDSType: String] = [:]
    private var nonces: UInt64 = 0
    private let noncePrefix: String
    /// Nothing is sent before the node's first snapshot (it needs the node's identity, from its first request).
    private var hasSnapshot = false
    /// Held: snapshots are kept, nothing is sent (while a rollout's COMMIT awaits the sidecar's answer).
    private var holding = false

    /// Starts every nonce with `noncePrefix`, so nonces of different streams never match.
    public init(noncePrefix: String = "") {
        self.noncePrefix = noncePrefix
    }

    /// The last version each type was ACKed at, and the last NACK.
    public func status(of type: XDSType) -> (sent: String?, acked: String?, nacked: (version: String, message: String)?) {
        let state = types[type]
        return (state?.sent?.version, state?.acked, state?.nacked)
    }

    /// True when the sidecar has answered (ACK or NACK) everything sent to it.
    public var isSynced: Bool {
        types.values.allSatisfy { state in
            guard let sent = state.sent else { return true }
            return state.acked == sent.version || state.nacked?.version == sent.version
        }
    }

    /// A request arrived: record its ACK or NACK, follow its subscription, and send what it now lacks.
    public mutating func received(_ request: Request) -> (events: [Event], responses: [Response]) {
        var state = types[request.type] ?? TypeState()
        var events: [Event] = []
        if !request.nonce.isEmpty {
            guard let sent = state.sent, sent.nonce == request.nonce else { return ([], []) }  // stale
            if let error = request.error {
                state.nacked = (sent.version, error)
                events.append(.nacked(request.type, version: sent.version, message: error))
            } else if request.versionInfo == sent.version {
                state.acked = sent.version
                events.append(.acked(request.type, version: sent.version))
            }
            // Otherwise the request only changes the subscription (it still carries the version accepted
            // before a NACK): it is no ACK of what was sent.
        }
        state.names = request.resourceNames
        types[request.type] = state
        return (events, pushes())
    }

    /// The node's resources changed: send every subscribed type whose content changed.
    /// - Parameter versions: each type's `version(of:)` for its whole set, when the caller has it (a snapshot
    ///   shared by many streams is hashed once).
    public mutating func snapshotChanged(_ resources: [XDSType: [String: XDSResource]], versions: [XDSType: String]? = nil) -> [Response] {
        snapshot = resources
        snapshotVersions = versions ?? [:]
        hasSnapshot = true
        return pushes()
    }

    /// What a subscription to `names` of `type` gets of `all`. Listeners and clusters: no names is every one
    /// (wildcard). Endpoints and routes: the names asked for ("*" asks for all); no names is none.
    static func subscribed(_ names: [String], of type: XDSType, in all: [String: XDSResource]) -> [String: XDSResource] {
        if names.contains("*") || (names.isEmpty && (type == .listener || type == .cluster)) { return all }
        var wanted: [String: XDSResource] = [:]
        for name in names { if let resource = all[name] { wanted[name] = resource } }
        return wanted
    }

    /// The sidecar switched to `resources` (a rollout's COMMIT of the view this stream sent it to prepare): they are
    /// what it has now, as if sent and ACKed (under the last nonce sent, which its next requests carry), so only what
    /// differs from them is sent next.
    /// Sends nothing until `release` (snapshots still replace each other).
    public mutating func hold() {
        holding = true
    }

    /// Sends what is due again, starting with what changed while held.
    public mutating func release() -> [Response] {
        holding = false
        return pushes()
    }

    /// - Parameter versions: each type's version of its whole set in `resources`, when the caller has it.
    /// - Returns: the version each subscribed type is at now.
    @discardableResult
    public mutating func adopt(_ resources: [XDSType: [String: XDSResource]], versions: [XDSType: String] = [:]) -> [XDSType: String] {
        var adopted: [XDSType: String] = [:]
        for (type, state) in types {
            guard let names = state.names else { continue }
            let all = resources[type] ?? [:]
            let wanted = Self.subscribed(names, of: type, in: all)
            let version = wanted.count == all.count ? versions[type] ?? Self.version(of: wanted) : Self.version(of: wanted)
            types[type]?.sent = Sent(version: version, nonce: state.sent?.nonce ?? "", names: names, resources: wanted)
            types[type]?.acked = version
            types[type]?.nacked = nil
            adopted[type] = version
        }
        return adopted
    }

    /// The sidecar's resources are not what this stream sent (a rollout's COMMIT switched it to a view it was
    /// handed before): everything subscribed is sent again, from `resources` when given, else the snapshot held.
    public mutating func resendAll(_ resources: [XDSType: [String: XDSResource]]? = nil, versions: [XDSType: String]? = nil) -> [Response] {
        for type in types.keys { types[type]?.sent = nil }
        if let resources { return snapshotChanged(resources, versions: versions) }
        return pushes()
    }

    /// What to send now. Clusters and endpoints go before the listeners and routes that use them; when
    /// clusters go away while routes change too, the routes go first with the old clusters still there:
    /// clusters are sent as the union of old and new, then routes, then the clusters without the removed ones.
    mutating func pushes() -> [Response] {
        guard hasSnapshot, !holding else { return [] }
        var responses: [Response] = []
        let clustersRemoved = due(.cluster).map { next in
            Set(types[.cluster]?.sent?.resources.keys.map { $0 } ?? []).subtracting(next.keys)
        } ?? []
        if !clustersRemoved.isEmpty && (due(.listener) != nil || due(.route) != nil), let next = due(.cluster),
           let old = types[.cluster]?.sent?.resources {
            responses += send(.cluster, next.merging(old) { new, _ in new })
            if let endpoints = due(.endpoints) { responses += send(.endpoints, endpoints) }
            for type in [XDSType.listener, .route] { if let next = due(type) { responses += send(type, next) } }
            if let next = due(.cluster) { responses += send(.cluster, next) }
            return responses
        }
        for type in XDSType.allCases.sorted() {
            if let next = due(type) { responses += send(type, next) }
        }
        return responses
    }

    /// The resources of `type` this stream should have, when that differs from what it has and was not NACKed.
    func due(_ type: XDSType) -> [String: XDSResource]? {
        guard let state = types[type], let names = state.names else { return nil }
        let wanted = Self.subscribed(names, of: type, in: snapshot[type] ?? [:])
        let version = version(of: wanted, type)
        if let sent = state.sent, sent.version == version, sent.names == names { return nil }
        if let nacked = state.nacked, nacked.version == version { return nil }
        return wanted
    }

    mutating func send(_ type: XDSType, _ resources: [String: XDSResource]) -> [Response] {
        nonces += 1
        let version = version(of: resources, type)
        let nonce = noncePrefix + String(nonces)
        let names = types[type]?.names ?? []
        types[type]?.sent = Sent(version: version, nonce: nonce, names: names, resources: resources)
        return [Response(type: type, version: version, nonce: nonce, resources: resources.keys.sorted().map { resources[$0]! })]
    }

    /// The version of `resources` of `type`: the snapshot's, hashed once for every stream, when they are its
    /// whole set; their own hash otherwise.
    private func version(of resources: [String: XDSResource], _ type: XDSType) -> String {
        let all = snapshot[type] ?? [:]
        if resources.count == all.count, let whole = snapshotVersions[type], resources.keys.allSatisfy({ all[$0] != nil }) { return whole }
        return Self.version(of: resources)
    }

    /// A content hash (FNV-1a, 64 bits) of the resources' names and bytes (each body's own digest), in name order.
    public static func version(of resources: [String: XDSResource]) -> String {
        var hasher = FNV1a()
        for name in resources.keys.sorted() {
            hasher.add(name.utf8)
            hasher.add([0])
            withUnsafeBytes(of: resources[name]!.digest.littleEndian) { hasher.add($0) }
        }
        let hash = hasher.value
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
