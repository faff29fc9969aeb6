import OutriggerConfig
import OutriggerXDS
import SwiftProtobuf

/// What a sidecar holds of the control plane's pushes (pure): the resources it accepted, per type the version
/// and the last nonce, and what it subscribes to. A response is checked against the accepted resources of
/// the other types: when every listener's routes and every cluster's endpoints are there it is decoded into
/// a whole config (the same validation as a file) to apply; while some are still on their way it is held
/// (checked resource by resource, ACKed, applied once the rest arrives).
public struct XDSClientState: Sendable {
    public enum Decision: Sendable {
        /// Apply this config, then `commit` and ACK.
        case apply(SidecarConfig)
        /// Valid so far; ACK and wait for the resources it names.
        case hold
        /// NACK, keep everything as it was.
        case reject(XDSRejection)
    }

    public private(set) var accepted = XDSDecoder()
    public private(set) var versions: [XDSType: String] = [:]
    public private(set) var nonces: [XDSType: String] = [:]
    /// Endpoints and routes are subscribed by name; clusters and listeners by wildcard (empty).
    public private(set) var names: [XDSType: [String]] = [:]
    private var candidate: (XDSDecoder, XDSType, String)?

    public init() {}

    /// A response arrived: what to do with it.
    public mutating func received(type: XDSType, version: String, nonce: String, resources: [Google_Protobuf_Any], base: SidecarConfig) -> Decision {
        nonces[type] = nonce
        var next = accepted
        var byName: [String: Google_Protobuf_Any] = [:]
        do throws(XDSRejection) {
            for body in resources {
                let name = try XDSDecoder.name(of: body, type: type)
                guard byName[name] == nil else { throw XDSRejection(type: type, name: name, message: "sent twice in one response") }
                byName[name] = body
            }
            if type == .endpoints || type == .route {
                // Named subscriptions: a response may carry only what changed; the rest stays as accepted.
                next[type] = accepted[type].merging(byName) { _, new in new }
            } else {
                next[type] = byName  // clusters and listeners: every response is the whole set
            }
            candidate = (next, type, version)
            guard try next.isComplete() else {
                try next.checkEach(arrived: type, names: Set(byName.keys))
                return .hold
            }
            return .apply(try next.config(base: base))
        } catch {
            candidate = nil
            return .reject(error)
        }
    }

    /// The last `received` response was applied (or held): it becomes the accepted state.
    public mutating func commit() {
        guard let (next, type, version) = candidate else { return }
        accepted = next
        versions[type] = version
        candidate = nil
    }

    /// The subscriptions the accepted resources call for that differ from the current ones: endpoints of every
    /// cluster, routes of every listener.
    public mutating func subscriptionChanges() -> [XDSType: [String]] {
        var changes: [XDSType: [String]] = [:]
        let wanted: [XDSType: [String]] = [.endpoints: (try? accepted.endpointNames()) ?? [], .route: (try? accepted.routeNames()) ?? []]
        // A type is first asked for once it has names.
        for (type, list) in wanted where names[type] != list && !(names[type] == nil && list.isEmpty) {
            names[type] = list
            changes[type] = list
            accepted[type] = accepted[type].filter { list.contains($0.key) }  // unsubscribed: gone
        }
        return changes
    }

    /// A rollout's committed generation: its resources and versions become the accepted ones (subscriptions follow
    /// with `subscriptionChanges`).
    public mutating func adopt(_ committed: XDSClientState) {
        accepted = committed.accepted
        versions = committed.versions
        candidate = nil
    }

    /// A new stream: nonces of the last one mean nothing to it.
    public mutating func streamStarted() {
        nonces = [:]
    }

    /// The accepted resources and versions, to write to disk.
    public var persisted: Outrigger_V1_PersistedState {
        var state = Outrigger_V1_PersistedState()
        state.types = XDSType.allCases.sorted().map { type in
            var entry = Outrigger_V1_PersistedState.TypeMessage()
            entry.typeURL = type.rawValue
            entry.version = versions[type] ?? ""
            entry.resources = accepted[type].keys.sorted().map { accepted[type][$0]! }
            return entry
        }
        return state
    }

    /// Starts from persisted resources (the control plane's last accepted pushes), if they still make a valid config.
    public static func restoring(_ persisted: Outrigger_V1_PersistedState, base: SidecarConfig) throws(XDSRejection) -> (XDSClientState, SidecarConfig) {
        var state = XDSClientState()
        for entry in persisted.types {
            guard let type = XDSType(rawValue: entry.typeURL) else { continue }
            for body in entry.resources { state.accepted[type][try XDSDecoder.name(of: body, type: type)] = body }
            if !entry.version.isEmpty { state.versions[type] = entry.version }
        }
        let config = try state.accepted.config(base: base)
        _ = state.subscriptionChanges()
        return (state, config)
    }
}
