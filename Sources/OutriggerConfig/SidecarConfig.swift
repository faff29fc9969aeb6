/// A sidecar's whole configuration, as decoded and validated from `sidecar.yaml` (or built from
/// quick-start flags). Value types only; `OutriggerCore` compiles it into a runtime snapshot.
public struct SidecarConfig: Sendable, Hashable, Encodable {
    public var admin: AdminConfig?
    /// Event loops; nil means one per core.
    public var concurrency: Int?
    /// How long SIGTERM waits for in-flight requests before closing what is left.
    public var drainTimeout: Duration
    /// The sidecar's own zone: balancers keep traffic among endpoints in it while enough are healthy.
    public var zone: String?
    /// Downstream connections open at once on all listeners together; one more is closed as soon as it is
    /// accepted. nil: half the process's file-descriptor limit (each may need an upstream connection too),
    /// so the admin and upstream connections always have descriptors left.
    public var maxConnections: Int?
    public var listeners: [ListenerConfig]
    public var clusters: [ClusterConfig]
    /// Follow a control plane: its pushes then replace the listeners and clusters above, which serve until
    /// the first push (or the persisted last one) arrives.
    public var controlPlane: ControlPlaneConfig?
    /// Limits the process is watched against, and the steps taken as it nears them.
    public var overload: OverloadConfig
    /// Where sampled spans are sent (OTLP/HTTP or Zipkin); nil: kept for the admin's `/traces` only.
    public var traceExport: TraceExportConfig?

    public static let defaultDrainTimeout: Duration = .seconds(10)

    public init(
        admin: AdminConfig? = AdminConfig(),
        concurrency: Int? = nil,
        drainTimeout: Duration = SidecarConfig.defaultDrainTimeout,
        zone: String? = nil,
        maxConnections: Int? = nil,
        overload: OverloadConfig = OverloadConfig(),
        listeners: [ListenerConfig],
        clusters: [ClusterConfig]
    ) {
        self.overload = overload
        self.admin = admin
        self.concurrency = concurrency
        self.drainTimeout = drainTimeout
        self.zone = zone
        self.maxConnections = maxConnections
        self.listeners = listeners
        self.clusters = clusters
    }

    enum CodingKeys: String, CodingKey {
        case admin, concurrency, drainTimeout, zone, maxConnections, overload, listeners, clusters, controlPlane, traceExport
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(admin, forKey: .admin)
        try container.encodeIfPresent(concurrency, forKey: .concurrency)
        try container.encode(ConfigDuration.format(drainTimeout), forKey: .drainTimeout)
        try container.encodeIfPresent(zone, forKey: .zone)
        try container.encodeIfPresent(maxConnections, forKey: .maxConnections)
        try container.encode(overload, forKey: .overload)
        try container.encode(listeners, forKey: .listeners)
        try container.encode(clusters, forKey: .clusters)
        try container.encodeIfPresent(controlPlane, forKey: .controlPlane)
        try container.encodeIfPresent(traceExport, forKey: .traceExport)
    }
}

/// The overload manager's settings: what the process is watched against (each limit optional; the process's
/// `maxConnections` always counts), and the pressure — the highest reading as a fraction of its limit — at
/// which each step is taken. A listener with `overloadPriority: low` takes each step 5 points earlier, `high`
/// 5 points later; each is undone 5 points below where it was taken.
public struct OverloadConfig: Sendable, Hashable, Encodable {
    public var interval: Duration
    /// Resident memory of the process, bytes.
    public var maxMemoryBytes: Int?
    /// Requests in flight on all listeners together.
    public var maxActiveRequests: Int?
    /// How late a task given to an event loop runs.
    public var maxEventLoopDelay: Duration?
    /// HTTP/1.1 connections close after their response (`connection: close`).
    public var disableKeepAliveAt: Double
    /// New requests are answered 503 `overload`.
    public var refuseRequestsAt: Double
    /// Listeners stop accepting connections (they wait in the kernel's backlog).
    public var stopAcceptingAt: Double

    public init(interval: Duration = .milliseconds(250), maxMemoryBytes: Int? = nil, maxActiveRequests: Int? = nil,
                maxEventLoopDelay: Duration? = nil, disableKeepAliveAt: Double = 0.90, refuseRequestsAt: Double = 0.95,
                stopAcceptingAt: Double = 0.98) {
        self.interval = interval
        self.maxMemoryBytes = maxMemoryBytes
        self.maxActiveRequests = maxActiveRequests
        self.maxEventLoopDelay = maxEventLoopDelay
        self.disableKeepAliveAt = disableKeepAliveAt
        self.refuseRequestsAt = refuseRequestsAt
        self.stopAcceptingAt = stopAcceptingAt
    }

    enum CodingKeys: String, CodingKey {
        case interval, maxMemory, maxActiveRequests, maxEventLoopDelay, disableKeepAliveAt, refuseRequestsAt, stopAcceptingAt
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(ConfigDuration.format(interval), forKey: .interval)
        try container.encodeIfPresent(maxMemoryBytes, forKey: .maxMemory)
        try container.encodeIfPresent(maxActiveRequests, forKey: .maxActiveRequests)
        try container.encodeIfPresent(maxEventLoopDelay.map(ConfigDuration.format), forKey: .maxEventLoopDelay)
        try container.encode(disableKeepAliveAt, forKey: .disableKeepAliveAt)
        try container.encode(refuseRequestsAt, forKey: .refuseRequestsAt)
        try container.encode(stopAcceptingAt, forKey: .stopAcceptingAt)
    }
}

/// `controlPlane:` in a sidecar file, the same settings as `proxy --control … --node … --service …`.
public struct ControlPlaneConfig: Sendable, Hashable, Encodable {
    /// Tried in turn, with jittered exponential backoff.
    public var addresses: [HostPort]
    public var node: String
    public var service: String
    /// Where the inbound listener forwards to: the service's own process.
    public var app: HostPort?
    /// Where the last accepted config is kept, to start from while the control plane is down.
    public var stateDirectory: String?
    /// A PEM CA bundle: xDS over TLS, the control plane's certificate verified against it.
    public var trustedCertificates: String?
    /// On SIGTERM, how long to wait after telling the control plane this sidecar is draining.
    public var drainNotice: Duration

    public static let defaultDrainNotice: Duration = .seconds(1)

    public init(addresses: [HostPort], node: String, service: String, app: HostPort? = nil, stateDirectory: String? = nil,
                trustedCertificates: String? = nil, drainNotice: Duration = ControlPlaneConfig.defaultDrainNotice) {
        self.addresses = addresses
        self.node = node
        self.service = service
        self.app = app
        self.stateDirectory = stateDirectory
        self.trustedCertificates = trustedCertificates
        self.drainNotice = drainNotice
    }

    enum CodingKeys: String, CodingKey { case addresses, node, service, app, stateDir, ca, drainNotice }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(addresses, forKey: .addresses)
        try container.encode(node, forKey: .node)
        try container.encode(service, forKey: .service)
        try container.encodeIfPresent(app, forKey: .app)
        try container.encodeIfPresent(stateDirectory, forKey: .stateDir)
        try container.encodeIfPresent(trustedCertificates, forKey: .ca)
        try container.encode(ConfigDuration.format(drainNotice), forKey: .drainNotice)
    }
}

public struct AdminConfig: Sendable, Hashable, Encodable {
    public var address: HostPort
    /// A file holding the token that changes (`POST /endpoints/drain`, …) must carry as
    /// `Authorization: Bearer TOKEN`. Required for changes when the admin listens beyond loopback.
    public var tokenFile: String?

    public static let defaultAddress = HostPort(host: "127.0.0.1", port: 15000)

    public init(address: HostPort = AdminConfig.defaultAddress, tokenFile: String? = nil) {
        self.address = address
        self.tokenFile = tokenFile
    }

    /// Whether only this machine can reach the admin (127.0.0.0/8, ::1, localhost).
    public var isLoopback: Bool {
        address.host == "localhost" || address.host == "::1" || address.host.hasPrefix("127.")
    }
}

public struct ListenerConfig: Sendable, Hashable, Encodable {
    /// Which way the traffic flows; mesh users know the names from Istio.
    public enum Direction: String, Sendable, Hashable, Encodable, CaseIterable {
        case inbound, outbound
    }

    public var name: String
    public var address: HostPort
    public var direction: Direction
    public var tls: TLSConfig?
    /// Request line plus headers, in bytes; over it → 431.
    public var maxRequestHeadersBytes: Int
    /// Optional cap on a request body, in bytes; over it → 413.
    public var maxRequestBodyBytes: Int?
    /// Adds `via: 1.1 outrigger` (HTTP/1.1) or `via: 2 outrigger` to proxied requests and responses.
    public var addVia: Bool
    /// Honour the local service's `x-outrigger-*` override headers (timeouts, retries). Outbound listeners
    /// always do; an inbound one strips them unless told to trust its clients.
    public var trustOverrideHeaders: Bool
    /// From accept until the protocol is known (the TLS handshake done, or enough bytes to tell HTTP/1.1 from
    /// HTTP/2): a connection that takes longer is closed.
    public var handshakeTimeout: Duration
    /// HTTP/1.1: a request's head must arrive within this of its first byte (→ 408, close). HTTP/2: a header
    /// block begun must be finished within this (→ close).
    public var requestHeadersTimeout: Duration
    /// A connection with nothing in flight closes after this (HTTP/2: no open stream; with a GOAWAY).
    public var idleTimeout: Duration
    /// A client that takes no response bytes for this long (the proxy's buffer and the kernel's both full) is
    /// cut: its connection reset (HTTP/2: its stream), the upstream exchange aborted. Like nginx's `send_timeout`.
    public var sendTimeout: Duration
    /// Connections open at once on this listener; one more is closed as soon as it is accepted. nil: only
    /// the process-wide limit.
    public var maxConnections: Int?
    /// HTTP/2 streams reset by one client address, counted across its connections.
    public var rapidReset: RapidResetConfig
    /// Under overload, a `low` listener is shed first, a `high` one last.
    public var overloadPriority: OverloadPriority

    public enum OverloadPriority: String, Sendable, Hashable, Encodable, CaseIterable {
        case low, normal, high
    }
    /// One line per request, written off the event loops; nil: no access log.
    public var accessLog: AccessLogConfig?
    /// Trace-context propagation: join the caller's trace with a span of our own per hop, or pass it untouched.
    public var tracing: TracingConfig
    public var virtualHosts: [VirtualHostConfig]

    public static let defaultHandshakeTimeout: Duration = .seconds(10)
    public static let defaultRequestHeadersTimeout: Duration = .seconds(10)
    public static let defaultIdleTimeout: Duration = .seconds(300)
    public static let defaultSendTimeout: Duration = .seconds(60)

    public static let defaultMaxRequestHeadersBytes = 60 * 1024

    /// Whether requests on this listener may override timeouts and retries with headers.
    public var honoursOverrideHeaders: Bool { direction == .outbound || trustOverrideHeaders }

    public init(
        name: String,
        address: HostPort,
        direction: Direction = .inbound,
        tls: TLSConfig? = nil,
        maxRequestHeadersBytes: Int = ListenerConfig.defaultMaxRequestHeadersBytes,
        maxRequestBodyBytes: Int? = nil,
        addVia: Bool = false,
        trustOverrideHeaders: Bool = false,
        handshakeTimeout: Duration = ListenerConfig.defaultHandshakeTimeout,
        requestHeadersTimeout: Duration = ListenerConfig.defaultRequestHeadersTimeout,
        idleTimeout: Duration = ListenerConfig.defaultIdleTimeout,
        sendTimeout: Duration = ListenerConfig.defaultSendTimeout,
        maxConnections: Int? = nil,
        rapidReset: RapidResetConfig = RapidResetConfig(),
        overloadPriority: OverloadPriority = .normal,
        accessLog: AccessLogConfig? = nil,
        tracing: TracingConfig = TracingConfig(),
        virtualHosts: [VirtualHostConfig]
    ) {
        self.tracing = tracing
        self.rapidReset = rapidReset
        self.overloadPriority = overloadPriority
        self.accessLog = accessLog
        self.trustOverrideHeaders = trustOverrideHeaders
        self.handshakeTimeout = handshakeTimeout
        self.requestHeadersTimeout = requestHeadersTimeout
        self.idleTimeout = idleTimeout
        self.sendTimeout = sendTimeout
        self.maxConnections = maxConnections
        self.name = name
        self.address = address
        self.direction = direction
        self.tls = tls
        self.maxRequestHeadersBytes = maxRequestHeadersBytes
        self.maxRequestBodyBytes = maxRequestBodyBytes
        self.addVia = addVia
        self.virtualHosts = virtualHosts
    }

    enum CodingKeys: String, CodingKey {
        case name, address, direction, tls, maxRequestHeadersBytes, maxRequestBodyBytes, addVia, trustOverrideHeaders,
             handshakeTimeout, requestHeadersTimeout, idleTimeout, sendTimeout, maxConnections, rapidReset, overloadPriority, accessLog, tracing,
             virtualHosts
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(address, forKey: .address)
        try container.encode(direction, forKey: .direction)
        try container.encodeIfPresent(tls, forKey: .tls)
        try container.encode(maxRequestHeadersBytes, forKey: .maxRequestHeadersBytes)
        try container.encodeIfPresent(maxRequestBodyBytes, forKey: .maxRequestBodyBytes)
        try container.encode(addVia, forKey: .addVia)
        try container.encode(trustOverrideHeaders, forKey: .trustOverrideHeaders)
        try container.encode(ConfigDuration.format(handshakeTimeout), forKey: .handshakeTimeout)
        try container.encode(ConfigDuration.format(requestHeadersTimeout), forKey: .requestHeadersTimeout)
        try container.encode(ConfigDuration.format(idleTimeout), forKey: .idleTimeout)
        try container.encode(ConfigDuration.format(sendTimeout), forKey: .sendTimeout)
        try container.encodeIfPresent(maxConnections, forKey: .maxConnections)
        try container.encode(rapidReset, forKey: .rapidReset)
        try container.encode(overloadPriority, forKey: .overloadPriority)
        try container.encodeIfPresent(accessLog, forKey: .accessLog)
        try container.encode(tracing, forKey: .tracing)
        try container.encode(virtualHosts, forKey: .virtualHosts)
    }
}

/// A listener's part in distributed traces (W3C Trace Context and B3 headers).
public struct TracingConfig: Sendable, Hashable, Encodable {
    public enum Mode: String, Sendable, Hashable, Encodable, CaseIterable {
        /// Join the caller's trace (or start one): a server span per request and a client span per try, each
        /// upstream request carrying its try's span as the parent (Envoy's and Linkerd's sidecars do the same).
        case participate
        /// Pass the trace headers on untouched: the sidecar is invisible in the trace.
        case forward
    }

    public var mode: Mode
    /// At a trace's root (no caller's decision), the share of traces sampled, decided on the trace id so that
    /// every hop agrees.
    public var sampleRatio: Double

    public static let defaultSampleRatio = 0.01

    public init(mode: Mode = .participate, sampleRatio: Double = TracingConfig.defaultSampleRatio) {
        self.mode = mode
        self.sampleRatio = sampleRatio
    }
}

/// Where and how the sidecar sends its sampled spans: batches POSTed over HTTP/1.1 by a thread of their own, never
/// holding a request up (a span that finds the queue full is dropped and counted).
public struct TraceExportConfig: Sendable, Hashable, Encodable {
    public enum Format: String, Sendable, Hashable, Encodable, CaseIterable {
        /// OTLP/HTTP, protobuf (`/v1/traces`; an OpenTelemetry collector listens on 4318).
        case otlp
        /// Zipkin v2 JSON (`/api/v2/spans`; Zipkin and Jaeger listen on 9411).
        case zipkin
    }

    public var format: Format
    /// The collector's address and the path spans are POSTed to.
    public var address: HostPort
    public var path: String
    /// The resource's `service.name`; nil: the control plane's `service`, else `outrigger`.
    public var serviceName: String?
    /// Spans per request to the collector, at most.
    public var batchSize: Int
    /// Spans waiting to be sent, at most; more are dropped and counted.
    public var maxQueuedSpans: Int
    /// How long one POST may take before it counts as failed (and is retried with backoff).
    public var timeout: Duration
    /// How long spans wait for a full batch: fewer than `batchSize` go once the oldest has waited this long.
    public var flushInterval: Duration

    public static let defaultBatchSize = 512
    public static let defaultMaxQueuedSpans = 8192
    public static let defaultTimeout: Duration = .seconds(5)
    public static let defaultFlushInterval: Duration = .seconds(1)

    public init(format: Format = .otlp, address: HostPort, path: String? = nil, serviceName: String? = nil,
                batchSize: Int = TraceExportConfig.defaultBatchSize, maxQueuedSpans: Int = TraceExportConfig.defaultMaxQueuedSpans,
                timeout: Duration = TraceExportConfig.defaultTimeout, flushInterval: Duration = TraceExportConfig.defaultFlushInterval) {
        self.format = format
        self.address = address
        self.path = path ?? Self.defaultPath(format)
        self.serviceName = serviceName
        self.batchSize = batchSize
        self.maxQueuedSpans = maxQueuedSpans
        self.timeout = timeout
        self.flushInterval = flushInterval
    }

    public static func defaultPath(_ format: Format) -> String {
        format == .otlp ? "/v1/traces" : "/api/v2/spans"
    }

    /// `http://HOST:PORT/PATH` as address and path (the port defaults to the format's usual one); nil when it is not.
    public static func parseEndpoint(_ text: String, format: Format) -> (address: HostPort, path: String)? {
        guard text.hasPrefix("http://") else { return nil }
        let rest = text.dropFirst("http://".count)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        let path = slash == rest.endIndex ? defaultPath(format) : String(rest[slash...])
        guard !authority.isEmpty else { return nil }
        let hasPort = authority.hasPrefix("[") ? authority.contains("]:") : authority.contains(":")
        let defaultPort = format == .otlp ? 4318 : 9411
        guard let address = HostPort(parsing: hasPort ? authority : "\(authority):\(defaultPort)") else { return nil }
        return (address, path)
    }

    enum CodingKeys: String, CodingKey {
        case format, endpoint, serviceName, batchSize, maxQueuedSpans, timeout
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(format, forKey: .format)
        try container.encode("http://\(address)\(path)", forKey: .endpoint)
        try container.encodeIfPresent(serviceName, forKey: .serviceName)
        try container.encode(batchSize, forKey: .batchSize)
        try container.encode(maxQueuedSpans, forKey: .maxQueuedSpans)
        try container.encode(ConfigDuration.format(timeout), forKey: .timeout)
    }
}

/// The HTTP/2 rapid-reset defence across connections (CVE-2023-44487): a client address that, over `window`,
/// resets more than `maxResetsPerAddress` streams, and at least three quarters of the streams it opened, has
/// its connections refused for `refuseFor` (an open one gets a GOAWAY when it next reports: at once for the one
/// that crossed the limit, after its next 50 resets for the others). One connection alone is already limited
/// to 200 resets per 30 s by the HTTP/2 codec.
public struct RapidResetConfig: Sendable, Hashable, Encodable {
    /// 0 turns the defence off.
    public var maxResetsPerAddress: Int
    public var window: Duration
    public var refuseFor: Duration

    public init(maxResetsPerAddress: Int = 1000, window: Duration = .seconds(30), refuseFor: Duration = .seconds(60)) {
        self.maxResetsPerAddress = maxResetsPerAddress
        self.window = window
        self.refuseFor = refuseFor
    }

    enum CodingKeys: String, CodingKey { case maxResetsPerAddress, window, refuseFor }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(maxResetsPerAddress, forKey: .maxResetsPerAddress)
        try container.encode(ConfigDuration.format(window), forKey: .window)
        try container.encode(ConfigDuration.format(refuseFor), forKey: .refuseFor)
    }
}

/// Where a listener writes its access log, one line per request, and in which shape.
public struct AccessLogConfig: Sendable, Hashable, Encodable {
    public enum Format: String, Sendable, Hashable, Encodable, CaseIterable {
        /// Space-separated, Envoy-like, for people and `grep`.
        case text
        /// One JSON object per line, for log shippers.
        case json
    }

    /// `stdout`, `stderr`, or a file (absolute once decoded from YAML).
    public var path: String
    public var format: Format

    public static let standardOutput = "stdout"
    public static let standardError = "stderr"

    public init(path: String, format: Format = .text) {
        self.path = path
        self.format = format
    }
}

public struct TLSConfig: Sendable, Hashable, Encodable {
    /// The oldest protocol version a client may use.
    public enum MinimumVersion: String, Sendable, Hashable, Encodable, CaseIterable {
        case tls12 = "TLS1.2"
        case tls13 = "TLS1.3"
    }

    /// PEM certificate chain file.
    public var certificate: String
    /// PEM private key file.
    public var privateKey: String
    public var minVersion: MinimumVersion
    /// The TLS 1.2 cipher suites offered, by their OpenSSL names, in order of preference (TLS 1.3 has only AEAD
    /// suites, always on).
    public var cipherSuites: [String]
    /// mTLS: clients must present a certificate that chains to `caFile` (and carries one of `subjectAltNames`,
    /// when given); nil: no client certificate is asked for.
    public var clientCertificates: ClientCertificateConfig?

    public struct ClientCertificateConfig: Sendable, Hashable, Encodable {
        /// PEM bundle of the CAs a client certificate must chain to.
        public var caFile: String
        /// A client certificate must carry one of these subject alternative names (URI, e.g. a SPIFFE id, or
        /// DNS); empty: any certificate from the CAs.
        public var subjectAltNames: [String]

        public init(caFile: String, subjectAltNames: [String] = []) {
            self.caFile = caFile
            self.subjectAltNames = subjectAltNames
        }
    }

    /// Forward-secret AEAD suites only: no CBC, no RSA key exchange (Mozilla's "intermediate" profile).
    public static let defaultCipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ]

    /// The TLS 1.2 suites the TLS library (BoringSSL) offers: the defaults, and older ones an operator may add
    /// for old clients, knowingly.
    public static let knownCipherSuites = defaultCipherSuites + [
        "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA",
    ]

    public init(certificate: String, privateKey: String, minVersion: MinimumVersion = .tls12,
                cipherSuites: [String] = TLSConfig.defaultCipherSuites, clientCertificates: ClientCertificateConfig? = nil) {
        self.clientCertificates = clientCertificates
        self.certificate = certificate
        self.privateKey = privateKey
        self.minVersion = minVersion
        self.cipherSuites = cipherSuites
    }
}

public struct VirtualHostConfig: Sendable, Hashable, Encodable {
    public var name: String
    /// `example.com`, `*.example.com` (any subdomain), or `*` (anything). A port in Host is ignored.
    public var domains: [String]
    public var routes: [RouteConfig]

    public init(name: String, domains: [String], routes: [RouteConfig]) {
        self.name = name
        self.domains = domains
        self.routes = routes
    }
}

public struct RouteConfig: Sendable, Hashable, Encodable {
    public var name: String?
    public var match: RouteMatchConfig
    public var destination: RouteDestination
    public var prefixRewrite: String?
    public var hostRewrite: String?
    /// Overrides the cluster's route timeout.
    public var timeout: Duration?
    public var requestHeaders: HeaderMutations
    public var responseHeaders: HeaderMutations
    public var retries: RetryPolicy
    public var fallback: RouteFallback?

    public init(
        name: String? = nil,
        match: RouteMatchConfig = RouteMatchConfig(),
        destination: RouteDestination,
        prefixRewrite: String? = nil,
        hostRewrite: String? = nil,
        timeout: Duration? = nil,
        requestHeaders: HeaderMutations = HeaderMutations(),
        responseHeaders: HeaderMutations = HeaderMutations(),
        retries: RetryPolicy = .none,
        fallback: RouteFallback? = nil
    ) {
        self.retries = retries
        self.fallback = fallback
        self.name = name
        self.match = match
        self.destination = destination
        self.prefixRewrite = prefixRewrite
        self.hostRewrite = hostRewrite
        self.timeout = timeout
        self.requestHeaders = requestHeaders
        self.responseHeaders = responseHeaders
    }

    enum CodingKeys: String, CodingKey {
        case name, match, cluster, weightedClusters, prefixRewrite, hostRewrite, timeout
        case requestHeaders, responseHeaders, retries, fallback
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(name, forKey: .name)
        try container.encode(match, forKey: .match)
        switch destination {
        case .cluster(let name): try container.encode(name, forKey: .cluster)
        case .weightedClusters(let clusters): try container.encode(clusters, forKey: .weightedClusters)
        }
        try container.encodeIfPresent(prefixRewrite, forKey: .prefixRewrite)
        try container.encodeIfPresent(hostRewrite, forKey: .hostRewrite)
        if retries != .none { try container.encode(retries, forKey: .retries) }
        try container.encodeIfPresent(fallback, forKey: .fallback)
        try container.encodeIfPresent(timeout.map(ConfigDuration.format), forKey: .timeout)
        if !requestHeaders.isEmpty { try container.encode(requestHeaders, forKey: .requestHeaders) }
        if !responseHeaders.isEmpty { try container.encode(responseHeaders, forKey: .responseHeaders) }
    }
}

public enum RouteDestination: Sendable, Hashable {
    case cluster(String)
    /// Traffic splitting: each request goes to one cluster, chosen in proportion to the weights.
    case weightedClusters([WeightedCluster])

    public var clusterNames: [String] {
        switch self {
        case .cluster(let name): return [name]
        case .weightedClusters(let clusters): return clusters.map(\.cluster)
        }
    }
}

public struct WeightedCluster: Sendable, Hashable, Encodable {
    public var cluster: String
    public var weight: Int

    public init(cluster: String, weight: Int) {
        self.cluster = cluster
        self.weight = weight
    }
}

public struct RouteMatchConfig: Sendable, Hashable, Encodable {
    public enum Path: Sendable, Hashable {
        case prefix(String)
        case exact(String)
        /// Matched against the whole path (without the query).
        case regex(String)
    }

    public var path: Path
    /// Upper-case method names; empty means any.
    public var methods: [String]
    public var headers: [HeaderMatchConfig]

    public init(path: Path = .prefix("/"), methods: [String] = [], headers: [HeaderMatchConfig] = []) {
        self.path = path
        self.methods = methods
        self.headers = headers
    }

    enum CodingKeys: String, CodingKey { case prefix, path, regex, methods, headers }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch path {
        case .prefix(let value): try container.encode(value, forKey: .prefix)
        case .exact(let value): try container.encode(value, forKey: .path)
        case .regex(let value): try container.encode(value, forKey: .regex)
        }
        if !methods.isEmpty { try container.encode(methods, forKey: .methods) }
        if !headers.isEmpty { try container.encode(headers, forKey: .headers) }
    }
}

public struct HeaderMatchConfig: Sendable, Hashable, Encodable {
    public enum Condition: Sendable, Hashable {
        /// The header is present (`present: true`) or absent (`present: false`).
        case present(Bool)
        case exact(String)
        case prefix(String)
    }

    /// Lower-cased header name.
    public var name: String
    public var condition: Condition

    public init(name: String, condition: Condition) {
        self.name = name.lowercased()
        self.condition = condition
    }

    enum CodingKeys: String, CodingKey { case name, present, exact, prefix }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        switch condition {
        case .present(let value): try container.encode(value, forKey: .present)
        case .exact(let value): try container.encode(value, forKey: .exact)
        case .prefix(let value): try container.encode(value, forKey: .prefix)
        }
    }
}

/// Header rewrites applied to a request before it goes upstream, or to a response before it goes back.
/// Applied in the order remove, set, add.
public struct HeaderMutations: Sendable, Hashable, Encodable {
    /// Appended, keeping values already there.
    public var add: [HeaderValue]
    /// Replacing every value already there.
    public var set: [HeaderValue]
    /// Lower-cased names to drop.
    public var remove: [String]

    public init(add: [HeaderValue] = [], set: [HeaderValue] = [], remove: [String] = []) {
        self.add = add
        self.set = set
        self.remove = remove.map { $0.lowercased() }
    }

    public var isEmpty: Bool { add.isEmpty && set.isEmpty && remove.isEmpty }

    /// Whether a rule removes, sets or adds the field `lowercaseName` (names compared ignoring case).
    public func changes(_ lowercaseName: String) -> Bool {
        remove.contains(lowercaseName) || (set + add).contains { $0.name.lowercased() == lowercaseName }
    }
}

public struct HeaderValue: Sendable, Hashable, Encodable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// What a cluster knows of one configured endpoint besides its address.
public struct EndpointMetadata: Sendable, Hashable, Encodable {
    /// Its share of the cluster's traffic relative to the others' (≥ 1).
    public var weight: Int
    /// Its zone (locality); nil when unknown.
    public var zone: String?
    /// 0 is the highest: traffic spills to priority 1 only as priority 0 loses healthy endpoints.
    public var priority: Int

    public init(weight: Int = 1, zone: String? = nil, priority: Int = 0) {
        self.weight = weight
        self.zone = zone
        self.priority = priority
    }

    public static let `default` = EndpointMetadata()
}

/// An endpoint as `/config_dump` shows it.
private struct EndpointDump: Encodable {
    let address: String
    let weight: Int
    let zone: String?
    let priority: Int
}

/// How a cluster picks the endpoint for each request.
public struct LoadBalancerConfig: Sendable, Hashable, Encodable {
    public enum Policy: String, Sendable, Hashable, Encodable, CaseIterable {
        /// Smooth weighted rotation: equal weights give strict rotation.
        case roundRobin = "round_robin"
        /// Weighted random.
        case random
        /// Power of two choices on requests in flight, weight-aware.
        case leastRequest = "least_request"
        /// Power of two choices on peak-EWMA latency × (requests in flight + 1).
        case peakEWMA = "peak_ewma"
        /// Consistent hashing on a ring (Ketama): removing one of N endpoints moves ~1/N of the keys.
        case ringHash = "ring_hash"
        /// Consistent hashing with Google's Maglev table: even shares, ~1/N disruption.
        case maglev

        public var isConsistentHash: Bool { self == .ringHash || self == .maglev }
    }

    /// What a consistent-hash balancer hashes; a request without it is sent to a random endpoint.
    public enum HashPolicy: Sendable, Hashable, Encodable {
        case header(String)
        /// A cookie; with a `ttl`, a request without it gets one chosen by the proxy (sent back in
        /// `Set-Cookie` with that Max-Age), so a client's session sticks to one endpoint from its first request.
        case cookie(String, ttl: Duration? = nil)
        case clientAddress

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .header(let name): try container.encode(["header": name])
            case .cookie(let name, let ttl):
                var fields = ["cookie": name]
                if let ttl { fields["ttl"] = ConfigDuration.format(ttl) }
                try container.encode(fields)
            case .clientAddress: try container.encode(["clientAddress": true])
            }
        }
    }

    /// A new or recovered endpoint's weight ramps up over `window`: weight × max(minWeightPercent,
    /// (time since it became ready / window)^(1 / aggression)) — Envoy's formula.
    public struct SlowStart: Sendable, Hashable, Encodable {
        public var window: Duration
        public var aggression: Double
        public var minWeightPercent: Int

        public init(window: Duration, aggression: Double = 1, minWeightPercent: Int = 10) {
            self.window = window
            self.aggression = aggression
            self.minWeightPercent = minWeightPercent
        }

        enum CodingKeys: String, CodingKey { case window, aggression, minWeightPercent }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(ConfigDuration.format(window), forKey: .window)
            try container.encode(aggression, forKey: .aggression)
            try container.encode(minWeightPercent, forKey: .minWeightPercent)
        }
    }

    public var policy: Policy
    /// ring_hash and maglev: the request's hash key.
    public var hashPolicy: HashPolicy?
    /// maglev: the lookup table's size, a prime.
    public var maglevTableSize: Int
    /// peak_ewma: the time constant over which old latency samples stop counting.
    public var decay: Duration
    /// peak_ewma: the latency assumed for an endpoint before its first response.
    public var defaultRTT: Duration
    /// Below this percentage of healthy endpoints (in a priority level) the balancer uses all of them,
    /// healthy or not: better some errors than overloading the few left. 0 turns panic mode off.
    public var panicThreshold: Int
    /// Off unless set; round_robin, random, least_request and peak_ewma only.
    public var slowStart: SlowStart?

    public static let defaultPanicThreshold = 50

    public static let defaultDecay: Duration = .seconds(10)
    public static let defaultDefaultRTT: Duration = .milliseconds(30)
    public static let defaultMaglevTableSize = 65537

    /// Maglev's table needs a prime size so that every endpoint's permutation visits every slot.
    public static func isPrime(_ n: Int) -> Bool {
        guard n >= 2 else { return false }
        var divisor = 2
        while divisor * divisor <= n {
            if n % divisor == 0 { return false }
            divisor += 1
        }
        return true
    }

    public init(policy: Policy = .roundRobin, decay: Duration = LoadBalancerConfig.defaultDecay,
                defaultRTT: Duration = LoadBalancerConfig.defaultDefaultRTT, hashPolicy: HashPolicy? = nil,
                maglevTableSize: Int = LoadBalancerConfig.defaultMaglevTableSize,
                panicThreshold: Int = LoadBalancerConfig.defaultPanicThreshold, slowStart: SlowStart? = nil) {
        self.panicThreshold = panicThreshold
        self.slowStart = slowStart
        self.policy = policy
        self.decay = decay
        self.defaultRTT = defaultRTT
        self.hashPolicy = hashPolicy
        self.maglevTableSize = maglevTableSize
    }

    enum CodingKeys: String, CodingKey {
        case policy, decay, defaultRTT, hashPolicy, tableSize, panicThreshold, slowStart
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(policy, forKey: .policy)
        if policy == .peakEWMA {
            try container.encode(ConfigDuration.format(decay), forKey: .decay)
            try container.encode(ConfigDuration.format(defaultRTT), forKey: .defaultRTT)
        }
        try container.encodeIfPresent(hashPolicy, forKey: .hashPolicy)
        if policy == .maglev { try container.encode(maglevTableSize, forKey: .tableSize) }
        try container.encode(panicThreshold, forKey: .panicThreshold)
        try container.encodeIfPresent(slowStart, forKey: .slowStart)
    }
}

public struct ClusterConfig: Sendable, Hashable, Encodable {
    public enum UpstreamProtocol: String, Sendable, Hashable, Encodable, CaseIterable {
        case http1, http2
    }


    public var name: String
    public var endpoints: [HostPort]
    /// Endpoints' weight, zone and priority where not the defaults (`{address: HOST:PORT, weight: N, zone: Z,
    /// priority: P}` in YAML); every address a name resolves to gets its endpoint's.
    public var endpointMetadata: [HostPort: EndpointMetadata]
    /// An endpoints file whose entries are added to `endpoints` and followed as it changes (a path relative
    /// to the config file's directory in YAML, resolved when read).
    public var endpointsFile: String?
    public var upstreamProtocol: UpstreamProtocol
    public var connectTimeout: Duration
    /// The route timeout: from the end of the request (an upload is timed by its progress instead) to the
    /// response head.
    public var timeout: Duration
    /// How often hostnames among the endpoints are resolved again.
    public var dnsRefreshInterval: Duration
    public var loadBalancer: LoadBalancerConfig
    public var pool: PoolConfig
    /// Active health checking of every endpoint; nil: none (endpoints count as healthy).
    public var healthCheck: HealthCheckConfig?
    public var retryBudget: RetryBudgetConfig
    /// Off unless set.
    public var outlierDetection: OutlierDetectionConfig?
    public var limits: ClusterLimits
    /// Per-endpoint circuit breakers; off unless set.
    public var breakers: BreakerConfig?
    /// A response whose body makes no progress for this long is cut (between `streamIdleTimeout` and twice it).
    public var streamIdleTimeout: Duration
    /// TLS to the endpoints (and their health checks); nil: plaintext.
    public var tls: UpstreamTLSConfig?

    public static let defaultStreamIdleTimeout: Duration = .seconds(300)
    /// How long an endpoint that answered `x-outrigger-drain: true` gets no new requests, unless a passing
    /// health check (without the header) or an admin call ends it sooner.
    public var endpointDrainTimeout: Duration

    public static let defaultEndpointDrainTimeout: Duration = .seconds(60)
    public static let defaultConnectTimeout: Duration = .seconds(1)
    public static let defaultTimeout: Duration = .seconds(15)
    public static let defaultDNSRefreshInterval: Duration = .seconds(30)

    public init(
        name: String,
        endpoints: [HostPort],
        endpointMetadata: [HostPort: EndpointMetadata] = [:],
        endpointsFile: String? = nil,
        upstreamProtocol: UpstreamProtocol = .http1,
        connectTimeout: Duration = ClusterConfig.defaultConnectTimeout,
        timeout: Duration = ClusterConfig.defaultTimeout,
        dnsRefreshInterval: Duration = ClusterConfig.defaultDNSRefreshInterval,
        loadBalancer: LoadBalancerConfig = LoadBalancerConfig(),
        pool: PoolConfig = PoolConfig(),
        healthCheck: HealthCheckConfig? = nil,
        endpointDrainTimeout: Duration = ClusterConfig.defaultEndpointDrainTimeout,
        retryBudget: RetryBudgetConfig = RetryBudgetConfig(),
        outlierDetection: OutlierDetectionConfig? = nil,
        limits: ClusterLimits = ClusterLimits(),
        breakers: BreakerConfig? = nil,
        streamIdleTimeout: Duration = ClusterConfig.defaultStreamIdleTimeout,
        tls: UpstreamTLSConfig? = nil
    ) {
        self.streamIdleTimeout = streamIdleTimeout
        self.tls = tls
        self.limits = limits
        self.breakers = breakers
        self.retryBudget = retryBudget
        self.outlierDetection = outlierDetection
        self.healthCheck = healthCheck
        self.endpointDrainTimeout = endpointDrainTimeout
        self.name = name
        self.endpoints = endpoints
        self.endpointMetadata = endpointMetadata
        self.endpointsFile = endpointsFile
        self.upstreamProtocol = upstreamProtocol
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.dnsRefreshInterval = dnsRefreshInterval
        self.loadBalancer = loadBalancer
        self.pool = pool
    }

    enum CodingKeys: String, CodingKey {
        case name, endpoints, endpointsFile, `protocol`, connectTimeout, timeout, dnsRefreshInterval, loadBalancer, pool
        case healthChecks, endpointDrainTimeout, retryBudget, outlierDetection, limits, breakers, streamIdleTimeout, tls
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encode(endpoints.map { endpoint in
            let metadata = endpointMetadata[endpoint] ?? .default
            return EndpointDump(address: endpoint.description, weight: metadata.weight, zone: metadata.zone, priority: metadata.priority)
        }, forKey: .endpoints)
        try container.encodeIfPresent(endpointsFile, forKey: .endpointsFile)
        try container.encode(upstreamProtocol, forKey: .protocol)
        try container.encode(ConfigDuration.format(connectTimeout), forKey: .connectTimeout)
        try container.encode(ConfigDuration.format(timeout), forKey: .timeout)
        try container.encode(ConfigDuration.format(dnsRefreshInterval), forKey: .dnsRefreshInterval)
        try container.encode(loadBalancer, forKey: .loadBalancer)
        try container.encode(pool, forKey: .pool)
        try container.encodeIfPresent(healthCheck, forKey: .healthChecks)
        try container.encode(ConfigDuration.format(endpointDrainTimeout), forKey: .endpointDrainTimeout)
        try container.encode(retryBudget, forKey: .retryBudget)
        try container.encodeIfPresent(outlierDetection, forKey: .outlierDetection)
        try container.encode(limits, forKey: .limits)
        try container.encodeIfPresent(breakers, forKey: .breakers)
        try container.encode(ConfigDuration.format(streamIdleTimeout), forKey: .streamIdleTimeout)
        try container.encodeIfPresent(tls, forKey: .tls)
    }
}

/// TLS from a cluster to its endpoints: the upstream's certificate verified against `caFile` (or the system's
/// roots), and either its name (`sni`, or the endpoint's hostname) or one of `subjectAltNames` (SPIFFE URIs such
/// as `spiffe://mesh/ns/default/sa/payments`, or DNS names), an optional client certificate (mTLS), and ALPN
/// offering the cluster's protocol (`h2` or `http/1.1`).
public struct UpstreamTLSConfig: Sendable, Hashable, Encodable {
    /// The server name sent (SNI) and, without `subjectAltNames`, verified; nil: the endpoint's hostname (none
    /// for an IP address).
    public var sni: String?
    /// PEM bundle of the CAs the upstream's certificate must chain to; nil: the system's.
    public var caFile: String?
    /// The client certificate chain and key presented to the upstream (mTLS); both or neither.
    public var certificate: String?
    public var privateKey: String?
    /// The upstream's certificate must carry one of these subject alternative names (URI or DNS); the name
    /// is then not checked against `sni`. Empty: the name is.
    public var subjectAltNames: [String]
    /// No verification of the upstream's certificate at all (testing only; logged at start).
    public var insecureSkipVerify: Bool
    public var minVersion: TLSConfig.MinimumVersion

    public init(sni: String? = nil, caFile: String? = nil, certificate: String? = nil, privateKey: String? = nil,
                subjectAltNames: [String] = [], insecureSkipVerify: Bool = false, minVersion: TLSConfig.MinimumVersion = .tls12) {
        self.sni = sni
        self.caFile = caFile
        self.certificate = certificate
        self.privateKey = privateKey
        self.subjectAltNames = subjectAltNames
        self.insecureSkipVerify = insecureSkipVerify
        self.minVersion = minVersion
    }
}

/// How a cluster checks its endpoints' health: one checker per endpoint per process, shared by every event loop.
public struct HealthCheckConfig: Sendable, Hashable, Encodable {
    public enum Kind: String, Sendable, Hashable, Encodable, CaseIterable {
        /// A request; healthy when the status is expected (and the body contains `bodyContains`).
        case http
        /// A TCP connect; healthy when it is accepted.
        case tcp
        /// `grpc.health.v1.Health/Check` over HTTP/2; healthy when the answer is SERVING.
        case grpc
    }

    public var kind: Kind
    public var interval: Duration
    /// The interval while the endpoint is unhealthy (nil: `interval`).
    public var unhealthyInterval: Duration?
    public var timeout: Duration
    /// The first check waits a random time up to this, so checkers do not all start at once.
    public var initialJitter: Duration
    /// Each interval is lengthened by a random time up to this.
    public var jitter: Duration
    /// Consecutive passes that make an unhealthy endpoint healthy.
    public var healthyThreshold: Int
    /// Consecutive failures that make a healthy endpoint unhealthy.
    public var unhealthyThreshold: Int
    /// http: the request.
    public var path: String
    public var method: String
    /// http and grpc: the Host / :authority (nil: the endpoint's HOST:PORT).
    public var host: String?
    /// http: statuses that pass, as inclusive ranges.
    public var expectedStatuses: [ClosedRange<Int>]
    /// http: a text the body must contain to pass.
    public var bodyContains: String?
    /// grpc: the service name asked about ("" is the whole server).
    public var service: String

    public static let defaultInterval: Duration = .seconds(5)
    public static let defaultTimeout: Duration = .seconds(1)

    public init(kind: Kind, interval: Duration = HealthCheckConfig.defaultInterval, unhealthyInterval: Duration? = nil,
                timeout: Duration = HealthCheckConfig.defaultTimeout, initialJitter: Duration = .zero, jitter: Duration = .zero,
                healthyThreshold: Int = 2, unhealthyThreshold: Int = 3, path: String = "/", method: String = "GET",
                host: String? = nil, expectedStatuses: [ClosedRange<Int>] = [200...299], bodyContains: String? = nil,
                service: String = "") {
        self.kind = kind
        self.interval = interval
        self.unhealthyInterval = unhealthyInterval
        self.timeout = timeout
        self.initialJitter = initialJitter
        self.jitter = jitter
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
        self.path = path
        self.method = method
        self.host = host
        self.expectedStatuses = expectedStatuses
        self.bodyContains = bodyContains
        self.service = service
    }

    enum CodingKeys: String, CodingKey {
        case type, interval, unhealthyInterval, timeout, initialJitter, jitter, healthyThreshold, unhealthyThreshold
        case path, method, host, expectedStatuses, bodyContains, service
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(kind, forKey: .type)
        try container.encode(ConfigDuration.format(interval), forKey: .interval)
        try container.encodeIfPresent(unhealthyInterval.map(ConfigDuration.format), forKey: .unhealthyInterval)
        try container.encode(ConfigDuration.format(timeout), forKey: .timeout)
        if initialJitter > .zero { try container.encode(ConfigDuration.format(initialJitter), forKey: .initialJitter) }
        if jitter > .zero { try container.encode(ConfigDuration.format(jitter), forKey: .jitter) }
        try container.encode(healthyThreshold, forKey: .healthyThreshold)
        try container.encode(unhealthyThreshold, forKey: .unhealthyThreshold)
        switch kind {
        case .http:
            try container.encode(path, forKey: .path)
            try container.encode(method, forKey: .method)
            try container.encodeIfPresent(host, forKey: .host)
            try container.encode(expectedStatuses.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" },
                                 forKey: .expectedStatuses)
            try container.encodeIfPresent(bodyContains, forKey: .bodyContains)
        case .grpc:
            try container.encodeIfPresent(host, forKey: .host)
            try container.encode(service, forKey: .service)
        case .tcp:
            break
        }
    }
}

/// Upstream connection pool limits. Pools are per event loop, so the limits are too.
public struct PoolConfig: Sendable, Hashable, Encodable {
    /// Connections per endpoint per event loop (HTTP/1.1); HTTP/2 clusters use one connection per endpoint.
    public var maxConnectionsPerEndpoint: Int
    /// Requests waiting for a connection per endpoint per event loop; past it → 503 `overflow`.
    public var maxPendingRequests: Int
    /// An idle pooled connection is closed after this long.
    public var idleTimeout: Duration

    public init(maxConnectionsPerEndpoint: Int = 256, maxPendingRequests: Int = 1024, idleTimeout: Duration = .seconds(60)) {
        self.maxConnectionsPerEndpoint = maxConnectionsPerEndpoint
        self.maxPendingRequests = maxPendingRequests
        self.idleTimeout = idleTimeout
    }

    enum CodingKeys: String, CodingKey { case maxConnectionsPerEndpoint, maxPendingRequests, idleTimeout }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(maxConnectionsPerEndpoint, forKey: .maxConnectionsPerEndpoint)
        try container.encode(maxPendingRequests, forKey: .maxPendingRequests)
        try container.encode(ConfigDuration.format(idleTimeout), forKey: .idleTimeout)
    }
}
