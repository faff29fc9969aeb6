import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import OutriggerConfig
import OutriggerCore

/// A running sidecar: event loops, listeners, admin, and the config they serve.
///
/// Started with `start`, changed with `apply` / `reload`, stopped with `shutdown` (drain, then close).
/// `run` adds the process-level behaviour: SIGHUP and file-change reloads, SIGTERM/SIGINT drain.
public final class Sidecar: Sendable {
    public let configStore: ConfigStore
    let group: MultiThreadedEventLoopGroup
    let locals: EventLoopLocals
    /// Every listener's access log destination, opened when a config names it, closed at shutdown.
    let accessLogs: AccessLogSinks
    /// Spans of sampled requests: the recent ones for `/traces`, and the export to a collector (`traceExport`).
    public let spans = SpanExporter()
    /// The command line's flags, applied to the file's config at every reload.
    private let overrides: @Sendable (inout SidecarConfig) -> Void
    let connections = ConnectionTracker()
    /// The client TLS contexts of clusters with `tls`.
    private let upstreamTLS = UpstreamTLSContexts()
    private let healthChecks: HealthCheckSupervisor
    let logger: Logger
    private let configPath: String?
    let state = NIOLockedValueBox(MutableState())
    /// What a component beside the sidecar (the control-plane client) adds to the admin pages.
    let adminExtension = NIOLockedValueBox<(@Sendable () -> AdminExtension)?>(nil)
    /// Set while a reload runs: reloads (SIGHUP, file watch, API) never interleave.
    private let reloading = NIOLockedValueBox(false)

    struct BoundListener {
        var config: ListenerConfig
        var channel: Channel
        var tls: ListenerTLS?

        /// True when `next` names the port this listener got for port 0 (a control plane echoes the
        /// address the sidecar reported), so the socket stays.
        func isBound(at next: ListenerConfig) -> Bool {
            guard config.address.port == 0, next.address.port != 0, config.tls == next.tls,
                  let local = channel.localAddress else { return false }
            return local.port == next.address.port && (local.ipAddress == next.address.host || config.address.host == next.address.host)
        }
    }

    struct MutableState {
        var listeners: [String: BoundListener] = [:]
        var admin: (config: AdminConfig, channel: Channel)?
        var draining = false
        var fileStamp: FileStamp?
        /// The last complaint about each cluster's endpoints file, so it is logged once, not every second.
        var endpointsFileErrors: [String: String] = [:]
        /// When each cluster's failure-percentage sweep is next due (uptime ns).
        var outlierSweeps: [String: UInt64] = [:]
        /// The last DNS failures of each cluster, so they are logged when they change, not every refresh.
        var resolutionErrors: [String: String] = [:]
        /// What each endpoints file looked like when last read.
        var endpointsFileStamps: [String: FileStamp] = [:]
        /// Where the running config file writes each endpoint (for warnings about names that do not resolve).
        var endpointSites: [EndpointSite] = []
        var overload: OverloadManager?
    }

    private init(config: SidecarConfig, configPath: String?, overrides: @escaping @Sendable (inout SidecarConfig) -> Void, logger: Logger,
                 resolve: @escaping @Sendable (HostPort) throws -> [SocketAddress]) throws {
        self.overrides = overrides
        let loopCount = config.concurrency ?? System.coreCount
        self.configStore = try ConfigStore(config: config, stats: ProxyStats(loops: loopCount), resolve: resolve)
        self.accessLogs = AccessLogSinks()
        try Self.openAccessLogs(of: config, in: accessLogs)
        try upstreamTLS.prepare(config.clusters)
        Self.warnAboutUnverifiedUpstreams(config, logger: logger)
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: loopCount)
        self.locals = EventLoopLocals(group: group, accessLogs: accessLogs, spans: spans, tlsContexts: upstreamTLS)
        Self.configureSpanExport(config, spans)
        self.logger = logger
        self.healthChecks = HealthCheckSupervisor(group: group, tlsContexts: upstreamTLS, logger: logger)
        self.configPath = configPath
    }

    /// Compiles `config`, binds its listeners and admin, and starts serving.
    /// - Parameters:
    ///   - endpointSites: where `configPath` writes each endpoint, as its load found them.
    ///   - overrides: applied to the file's config at every reload (the command line's flags).
    ///   - resolve: turns endpoint names into addresses (the system resolver unless a test stands in).
    public static func start(config: SidecarConfig, configPath: String? = nil, endpointSites: [EndpointSite] = [],
                             overrides: @escaping @Sendable (inout SidecarConfig) -> Void = { _ in }, logger: Logger,
                             resolve: @escaping @Sendable (HostPort) throws -> [SocketAddress] = EndpointResolver.resolve) async throws -> Sidecar {
        let sidecar = try Sidecar(config: config, configPath: configPath, overrides: overrides, logger: logger, resolve: resolve)
        sidecar.state.withLockedValue { $0.endpointSites = endpointSites }
        do {
            try await sidecar.bindListeners(for: config)
            try await sidecar.bindAdmin(config.admin, logLevel: .debug)
        } catch {
            await sidecar.closeEverything()
            throw error
        }
        sidecar.state.withLockedValue { $0.fileStamp = configPath.flatMap(FileStamp.init(path:)) }
        let limit = config.maxConnections.map { "\($0) (maxConnections)" }
            ?? "\(sidecar.connections.defaultProcessLimit) (half the file-descriptor limit, \(ProcessLimits.fileDescriptorLimit))"
        logger.info("downstream connections limited to \(limit)")
        sidecar.warnAboutUnresolvedEndpoints()
        sidecar.healthChecks.reconcile(sidecar.configStore.snapshot)
        sidecar.startOverloadManager()
        return sidecar
    }

    /// Where each listener is bound (useful when the config asked for port 0).
    public var listenerAddresses: [String: SocketAddress] {
        state.withLockedValue { $0.listeners.compactMapValues { $0.channel.localAddress } }
    }

    public var adminAddress: SocketAddress? {
        state.withLockedValue { $0.admin?.channel.localAddress }
    }

    public var isDraining: Bool { state.withLockedValue { $0.draining } }

    /// Adds to the admin pages: Prometheus text to `/stats/prometheus` and a JSON object to `/config_dump`.
    public func setAdminExtension(_ provider: @escaping @Sendable () -> AdminExtension) {
        adminExtension.withLockedValue { $0 = provider }
    }

    // MARK: Reload

    /// A config validated and warmed by `prepare`, not served yet: `activate` makes it the running one.
    public struct PreparedConfig: Sendable {
        public let config: SidecarConfig
        let endpointSites: [EndpointSite]
    }

    /// Validates and applies a new config: binds new listeners, swaps the snapshot atomically, closes
    /// listeners that went away. On any error nothing changes and the error is thrown.
    public func apply(_ config: SidecarConfig, endpointSites: [EndpointSite] = []) async throws {
        try await withReloadLock {
            try await activateLocked(prepareLocked(config, endpointSites: endpointSites))
        }
    }

    /// The first half of `apply`, for a config to be switched to later (a staged rollout): compiles it (endpoint
    /// names resolved), opens its access logs and loads its clusters' TLS files, and throws whatever of that fails.
    /// Traffic goes on with the running config; nothing is bound or swapped.
    public func prepare(_ config: SidecarConfig, endpointSites: [EndpointSite] = []) async throws -> PreparedConfig {
        try await withReloadLock { try prepareLocked(config, endpointSites: endpointSites) }
    }

    /// The second half of `apply`: binds what the prepared config needs, swaps it in atomically, closes what it no
    /// longer has. A listener that cannot be bound now throws, and nothing changes.
    public func activate(_ prepared: PreparedConfig) async throws {
        try await withReloadLock { try await activateLocked(prepared) }
    }

    private func prepareLocked(_ config: SidecarConfig, endpointSites: [EndpointSite]) throws -> PreparedConfig {
        let running = configStore.snapshot.config
        if config.concurrency != running.concurrency {
            logger.warning("concurrency changes take effect at the next start", metadata: ["running": "\(running.concurrency.map(String.init) ?? "cores")"])
        }
        // Compile first: a config that does not compile touches nothing.
        _ = try ConfigStore.compile(config, version: 0, stats: configStore.stats, states: EndpointStates(), resolve: configStore.resolve)
        // A new access log destination that cannot be opened rejects the config (those already open stay
        // open until shutdown, so event loops never see a closed one).
        try Self.openAccessLogs(of: config, in: accessLogs)
        // A cluster whose TLS files do not load rejects the config too.
        try upstreamTLS.prepare(config.clusters)
        Self.warnAboutUnverifiedUpstreams(config, logger: logger)
        return PreparedConfig(config: config, endpointSites: endpointSites)
    }

    private func activateLocked(_ prepared: PreparedConfig) async throws {
        let config = prepared.config
        let endpointSites = prepared.endpointSites
        // Only the address and TLS settings live in a listener's socket; routes and limits are read
        // from the snapshot per request, so changing them keeps the socket (and its port).
        let previous = state.withLockedValue { $0.listeners }
        let newNames = Set(config.listeners.map(\.name))
        let closing = previous.filter { name, bound in
            guard let next = config.listeners.first(where: { $0.name == name }) else { return true }
            return !bound.config.hasSameSocket(as: next) && !bound.isBound(at: next)
        }
        let needSocket = config.listeners.filter { previous[$0.name] == nil || closing[$0.name] != nil }
        // An address a closing listener still holds can only be bound once that one is closed.
        let late = needSocket.filter { listener in
            listener.address.port != 0 && closing.values.contains { $0.config.address == listener.address }
        }
        let early = needSocket.filter { listener in !late.contains { $0.name == listener.name } }
        var bound: [String: BoundListener] = [:]
        do {
            for listener in early { bound[listener.name] = try await bind(listener) }
        } catch {
            for listener in bound.values { try? await listener.channel.close() }
            throw error
        }
        try configStore.apply(config)
        Self.configureSpanExport(config, spans)
        state.withLockedValue { $0.endpointSites = endpointSites }
        endpointsChanged()
        warnAboutUnresolvedEndpoints()
        for listener in closing.values { try? await listener.channel.close() }
        for listener in late {
            do { bound[listener.name] = try await bind(listener) } catch {
                logger.error("cannot bind listener", metadata: ["listener": "\(listener.name)", "error": "\(error)"])
            }
        }
        state.withLockedValue { state in
            state.listeners = state.listeners.filter { newNames.contains($0.key) && closing[$0.key] == nil }
            for listener in config.listeners { state.listeners[listener.name]?.config = listener }
            state.listeners.merge(bound) { $1 }
        }
        if config.admin != state.withLockedValue({ $0.admin?.config }) {
            let old = state.withLockedValue { $0.admin }
            try? await old?.channel.close()
            state.withLockedValue { $0.admin = nil }
            try await bindAdmin(config.admin)
        }
    }

    /// Reads the config file again and applies it; a bad file is logged and the running config stays.
    @discardableResult
    public func reload() async -> Bool {
        guard let configPath else { return false }
        state.withLockedValue { $0.fileStamp = FileStamp(path: configPath) }
        do {
            var loaded = try SidecarConfig.loadWithEndpointSites(contentsOf: configPath)
            overrides(&loaded.config)
            try await apply(loaded.config, endpointSites: loaded.endpointSites)
            configStore.stats.configReloadSuccesses.increment()
            logger.info("config reloaded", metadata: ["file": "\(configPath)", "version": "\(configStore.snapshot.version)"])
            return true
        } catch {
            configStore.stats.configReloadFailures.increment()
            logger.error("config rejected; keeping the running config (version \(configStore.snapshot.version))\n\(error)", metadata: ["file": "\(configPath)"])
            return false
        }
    }

    /// Closes and reopens every access log file: log rotation moves them, then sends SIGHUP.
    public func reopenAccessLogs() async {
        do { try await accessLogs.reopenAll() } catch {
            logger.error("cannot reopen an access log", metadata: ["error": "\(error)"])
        }
    }

    /// Reloads when the config file's size, modification time or inode changed since the last look.
    public func reloadIfFileChanged() async {
        guard let configPath, !isDraining else { return }
        let now = FileStamp(path: configPath)
        let changed = state.withLockedValue { state -> Bool in
            guard now != state.fileStamp else { return false }
            state.fileStamp = now
            return true
        }
        if changed, now != nil { await reload() }
    }

    /// Reads every cluster's endpoints file again; a changed list is resolved and swapped in through the
    /// same path as DNS changes (requests in flight keep their endpoint; pools of removed endpoints drain).
    /// A file that cannot be read or parsed keeps the last good list, and says why once.
    public func refreshEndpointsFiles() {
        for cluster in configStore.snapshot.clusters.values {
            guard let path = cluster.config.endpointsFile else { continue }
            // Read only when the file changed (size, modification time or inode), as for the config file.
            let stamp = FileStamp(path: path)
            let unchanged = state.withLockedValue { state -> Bool in
                defer { state.endpointsFileStamps[path] = stamp }
                return stamp != nil && state.endpointsFileStamps[path] == stamp
            }
            if unchanged { continue }
            let entries: [EndpointsFile.Entry]
            do {
                entries = try EndpointsFile.load(path)
            } catch {
                let message = "\(error)"
                let isNew = state.withLockedValue { $0.endpointsFileErrors.updateValue(message, forKey: cluster.name) != message }
                if isNew { logger.warning("endpoints file unusable; keeping the last good endpoints", metadata: ["cluster": "\(cluster.name)", "error": "\(message)"]) }
                continue
            }
            state.withLockedValue { _ = $0.endpointsFileErrors.removeValue(forKey: cluster.name) }
            let describe = { (list: [EndpointsFile.Entry]) in list.map { "\($0.endpoint) \($0.metadata)" } }
            guard describe(entries) != describe(cluster.fileEntries) else { continue }
            cluster.fileEntries = entries
            swapEndpoints(of: cluster)
        }
    }

    /// Failure-percentage and success-rate outlier detection: every cluster whose interval is up has its
    /// endpoints' counts judged (and reset). Called every watch tick; tests call it directly.
    public func sweepOutliers(force: Bool = false) {
        let now = NIODeadline.now().uptimeNanoseconds
        for cluster in configStore.snapshot.clusters.values {
            guard let config = cluster.outlierDetection, config.judgesIntervals else { continue }
            let due = state.withLockedValue { state -> Bool in
                guard let next = state.outlierSweeps[cluster.name] else {
                    // The first interval starts now.
                    state.outlierSweeps[cluster.name] = now + UInt64(config.interval.nanoseconds)
                    return force
                }
                guard force || now >= next else { return false }
                state.outlierSweeps[cluster.name] = now + UInt64(config.interval.nanoseconds)
                return true
            }
            guard due else { continue }
            let ejected = OutlierDetection.sweep(cluster.endpoints, config: config, states: configStore.endpointStates, now: now)
            if ejected > 0 {
                cluster.stats.outlierEjections.increment(by: ejected)
                logger.warning("endpoints ejected for their failure percentage or success rate", metadata: ["cluster": "\(cluster.name)", "ejected": "\(ejected)"])
            }
        }
    }

    /// Resolves hostname endpoints again; changed address sets are swapped in without a reload.
    public func refreshEndpoints() {
        for cluster in configStore.snapshot.clusters.values
        where cluster.configWithFileEndpoints.endpoints.contains(where: { !$0.isIPLiteral }) {
            swapEndpoints(of: cluster)
        }
    }

    /// Resolves the cluster's configured and file endpoints and swaps in the result if it changed.
    private func swapEndpoints(of cluster: ClusterRuntime) {
        var failed: [HostPort: String] = [:]
        var endpoints = RuntimeSnapshot.endpoints(of: cluster.configWithFileEndpoints, resolve: configStore.resolve,
                                                  states: configStore.endpointStates) { endpoint, error in
            failed[endpoint] = "\(error)"
        }
        // A name whose lookup fails now keeps what it resolved to before (DNS hiccups must not drain a
        // cluster); the other names' changes still apply. Said once per change of what fails.
        endpoints += cluster.endpoints.filter { failed[$0.configured] != nil }
        let failures = failed.map { "\($0.key): \($0.value)" }.sorted().joined(separator: "; ")
        let isNew = state.withLockedValue { state in
            failures.isEmpty ? state.resolutionErrors.removeValue(forKey: cluster.name) != nil
                : state.resolutionErrors.updateValue(failures, forKey: cluster.name) != failures
        }
        if isNew {
            if failures.isEmpty {
                logger.info("endpoints resolve again", metadata: ["cluster": "\(cluster.name)"])
            } else {
                logger.warning("cannot resolve endpoints; keeping their last addresses", metadata: ["cluster": "\(cluster.name)", "errors": "\(failures)"])
            }
        }
        let identities = { (list: [Endpoint]) in list.map { "\($0.poolKey)#\($0.weight)#\($0.zone ?? "")#\($0.priority)" } }
        if identities(endpoints) != identities(cluster.endpoints) {
            cluster.replaceEndpoints(endpoints)
            configStore.forgetRemovedEndpoints()
            endpointsChanged()
            logger.info("endpoints changed", metadata: ["cluster": "\(cluster.name)", "endpoints": "\(endpoints)"])
        }
    }

    /// After any change of endpoints: health checkers follow, and pools of endpoints that left retire
    /// (idle connections close now, busy ones after their exchange).
    private func endpointsChanged() {
        let snapshot = configStore.snapshot
        healthChecks.reconcile(snapshot)
        let keys = Set(snapshot.clusters.values.flatMap { $0.endpoints.map(\.poolKey) })
        locals.forEach { $0.retirePools(keeping: keys) }
    }

    private func warnAboutUnresolvedEndpoints() {
        for cluster in configStore.snapshot.config.clusters {
            guard let path = cluster.endpointsFile, !FileManager.default.fileExists(atPath: path) else { continue }
            logger.warning("endpoints file not found; the cluster starts without its endpoints and picks them up when it appears",
                           metadata: ["cluster": "\(cluster.name)", "file": "\(path)"])
        }
        let snapshot = configStore.snapshot
        guard !snapshot.unresolved.isEmpty else { return }
        let sites = state.withLockedValue { $0.endpointSites }
        for failure in snapshot.unresolved {
            let refresh = snapshot.clusters[failure.cluster]?.config.dnsRefreshInterval ?? ClusterConfig.defaultDNSRefreshInterval
            let message = EndpointSite.doesNotResolve(failure.endpoint, cluster: failure.cluster, error: failure.error, retryEvery: refresh)
            let site = sites.first { $0.cluster == failure.cluster && $0.endpoint == failure.endpoint }
            logger.warning("\(site.map { $0.warning(message) } ?? message)")
        }
    }

    private func startOverloadManager() {
        let manager = OverloadManager(
            configStore: configStore, group: group,
            connectionLimit: { [weak self] in
                guard let self else { return .max }
                return self.configStore.snapshot.config.maxConnections ?? self.connections.defaultProcessLimit
            },
            setAccepting: { [weak self] name, accepting in
                guard let channel = self?.state.withLockedValue({ $0.listeners[name]?.channel }) else { return }
                channel.setOption(.autoRead, value: accepting).whenFailure { _ in }
            },
            logger: logger)
        state.withLockedValue { $0.overload = manager }
        manager.start()
    }

    // MARK: Shutdown

    /// Stops accepting, lets requests in flight finish within the drain timeout, then closes everything.
    public func shutdown() async {
        let alreadyDraining = state.withLockedValue { state -> Bool in
            defer { state.draining = true }
            return state.draining
        }
        guard !alreadyDraining else { return }
        let listeners = state.withLockedValue { $0.listeners.values.map(\.channel) }
        for channel in listeners { try? await channel.close() }
        let asked = await connections.quiesceAll()
        logger.info("draining: \(asked) connections asked to finish their requests")
        let deadline = ContinuousClock.now + configStore.snapshot.config.drainTimeout
        while connections.count > 0, ContinuousClock.now < deadline, configStore.stats.requestsActive > 0 {
            try? await Task.sleep(for: .milliseconds(20))
        }
        // Counted now, not before the last wait: connections that closed meanwhile took their requests along.
        let active = connections.count > 0 ? configStore.stats.requestsActive : 0
        if active > 0 {
            configStore.drainDeadlinePassed.store(true, ordering: .relaxed)
            logger.warning("drain timeout (\(ConfigDuration.format(configStore.snapshot.config.drainTimeout))) reached: cutting \(active) requests still in flight on \(connections.count) connections")
        } else {
            logger.info("drained: no request in flight")
        }
        await closeEverything()
    }

    private func closeEverything() async {
        state.withLockedValue { $0.overload }?.stop()
        healthChecks.stopAll()
        connections.closeAll()
        locals.forEach { $0.closeIdleConnections() }
        await locals.forEachAndWait { state in
            state.flushAccessLogs()
            state.spans.flush()
        }
        await accessLogs.close()
        await spans.close(within: configStore.snapshot.config.traceExport?.timeout ?? .zero)
        let (listeners, admin) = state.withLockedValue { ($0.listeners.values.map(\.channel), $0.admin?.channel) }
        for channel in listeners { try? await channel.close() }
        try? await admin?.close()
        try? await group.shutdownGracefully()
    }

    /// Where spans go, and the service they are of: `traceExport.serviceName`, else the control plane's `service`.
    private static func configureSpanExport(_ config: SidecarConfig, _ spans: SpanExporter) {
        spans.configure(config.traceExport, serviceName: config.controlPlane?.service ?? "outrigger", instance: config.controlPlane?.node)
    }

    /// Opens the destination of every listener's access log that is not open yet.
    private static func openAccessLogs(of config: SidecarConfig, in sinks: AccessLogSinks) throws {
        for listener in config.listeners {
            guard let accessLog = listener.accessLog else { continue }
            _ = try sinks.sink(for: accessLog.path)
        }
    }

    private static func warnAboutUnverifiedUpstreams(_ config: SidecarConfig, logger: Logger) {
        for cluster in config.clusters where cluster.tls?.insecureSkipVerify == true {
            logger.warning("cluster '\(cluster.name)' does not verify its upstreams' certificates (tls.insecureSkipVerify): anyone on the path can pose as them")
        }
    }

    /// Reloads the certificate and key of each TLS listener whose files changed in place (the watch tick
    /// calls it; a changed path is a config change, which rebinds the listener instead), and the CA bundles
    /// and client certificates of clusters with `tls`.
    public func refreshTLSCertificates() {
        for (tls, error) in upstreamTLS.refreshIfFilesChanged() {
            logger.error("upstream TLS files unusable; keeping the last good ones", metadata: ["caFile": "\(tls.caFile ?? "")", "certificate": "\(tls.certificate ?? "")", "error": "\(error)"])
        }
        for (name, listener) in state.withLockedValue({ $0.listeners }) {
            switch listener.tls?.refreshIfFilesChanged() {
            case .success?:
                logger.info("certificate reloaded", metadata: ["listener": "\(name)", "certificate": "\(listener.config.tls?.certificate ?? "")"])
            case .failure(let error)?:
                logger.error("certificate or key unusable; keeping the last good ones", metadata: ["listener": "\(name)", "error": "\(error)"])
            case nil:
                break
            }
        }
    }

    private func withReloadLock<T>(_ body: () async throws -> T) async throws -> T {
        // A lock cannot be held across awaits; reloads are rare and short, so the next one polls.
        while !reloading.withLockedValue({ busy in defer { busy = true }; return !busy }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        defer { reloading.withLockedValue { $0 = false } }
        return try await body()
    }
}

extension ListenerConfig {
    /// True when `other` can be served by this listener's socket: same address, same TLS settings.
    func hasSameSocket(as other: ListenerConfig) -> Bool {
        address == other.address && tls == other.tls
    }
}
