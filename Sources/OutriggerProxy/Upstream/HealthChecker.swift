import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import OutriggerConfig
import OutriggerCore

/// What one health check found.
struct HealthProbeResult {
    var passed: Bool
    /// The endpoint's answer asked to drain (`x-outrigger-drain: true`); nil when the probe cannot tell (TCP).
    var drain: Bool?
    var detail: String
}

/// Runs one endpoint's active health checks: one checker per endpoint per process, on one event loop, its
/// verdicts written to the endpoint's shared state for every loop's balancer. The decisions are
/// `HealthCheckStateMachine`'s; this class only probes and keeps time.
final class HealthChecker: @unchecked Sendable {
    // @unchecked: everything mutable below is touched on `eventLoop` only (every entry point hops there).
    let endpoint: Endpoint
    private let clusterName: String
    private let stats: ClusterStats
    private let drainTimeout: Duration
    private let eventLoop: any EventLoop
    private let logger: Logger
    private var machine: HealthCheckStateMachine
    private var random = FastRandom()
    private var next: Scheduled<Void>?
    private var stopped = false

    /// The cluster's TLS, which its probes (HTTP and gRPC) speak too.
    private let tls: UpstreamTLSConfig?
    private let tlsContexts: UpstreamTLSContexts

    init(endpoint: Endpoint, cluster: ClusterRuntime, config: HealthCheckConfig, eventLoop: any EventLoop, tlsContexts: UpstreamTLSContexts, logger: Logger) {
        self.tls = cluster.config.tls
        self.tlsContexts = tlsContexts
        self.endpoint = endpoint
        self.clusterName = cluster.name
        self.stats = cluster.stats
        self.drainTimeout = cluster.config.endpointDrainTimeout
        self.eventLoop = eventLoop
        self.logger = logger
        self.machine = HealthCheckStateMachine(config)
    }

    func start() {
        eventLoop.execute {
            self.schedule(in: self.machine.initialDelay(random: &self.random))
        }
    }

    /// Stops checking; with `forgetVerdict` the endpoint goes back to unchecked (health checks were removed).
    func stop(forgetVerdict: Bool) {
        eventLoop.execute {
            self.stopped = true
            self.next?.cancel()
            if forgetVerdict { self.endpoint.state.setHealth(.unchecked, now: NIODeadline.now().uptimeNanoseconds) }
        }
    }

    private func schedule(in nanoseconds: Int64) {
        guard !stopped else { return }
        next = eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) { self.check() }
    }

    private func check() {
        guard !stopped else { return }
        // The probe's future never fails: every failure is a failed check.
        var tlsSettings: UpstreamTLSSettings?
        if let tls, machine.config.kind != .tcp {
            // A probe speaks HTTP/1.1 (http) or HTTP/2 (grpc) whatever the cluster's requests do.
            let upstreamProtocol: ClusterConfig.UpstreamProtocol = machine.config.kind == .grpc ? .http2 : .http1
            do {
                let context = try tlsContexts.context(for: tls, upstreamProtocol: upstreamProtocol)
                tlsSettings = UpstreamTLSSettings(context: context, tls: tls, endpointHost: endpoint.configured.host, upstreamProtocol: upstreamProtocol)
            } catch {
                // Never in plaintext to a TLS upstream: the check fails, saying why.
                record(HealthProbeResult(passed: false, drain: nil, detail: "TLS: \(error)"))
                schedule(in: machine.nextDelay(random: &random))
                return
            }
        }
        HealthProbe.run(machine.config, endpoint: endpoint, on: eventLoop, tls: tlsSettings).whenSuccess { result in
            self.record(result)
            self.schedule(in: self.machine.nextDelay(random: &self.random))
        }
    }

    private func record(_ result: HealthProbeResult) {
        guard !stopped else { return }
        let state = endpoint.state
        let now = NIODeadline.now().uptimeNanoseconds
        if result.passed {
            state.healthChecksPassed.increment()
            stats.healthChecksPassed.increment()
        } else {
            state.healthChecksFailed.increment()
            stats.healthChecksFailed.increment()
        }
        switch result.drain {
        case true?:
            EndpointDrain.start(endpoint, stats: stats, timeout: drainTimeout)
        case false? where result.passed && state.drainingUntil != .max:
            // The endpoint answers again without asking to drain (a new instance): end a drain it asked for
            // (an admin drain stays until the admin ends it).
            state.undrain(now: now)
        default:
            break
        }
        guard let health = machine.record(passed: result.passed) else { return }
        let previous = state.setHealth(health, now: now)
        let metadata: Logger.Metadata = ["cluster": "\(clusterName)", "endpoint": "\(endpoint)", "check": "\(result.detail)"]
        switch health {
        case .unhealthy:
            stats.endpointsMarkedUnhealthy.increment()
            logger.warning("endpoint unhealthy; no new requests go to it", metadata: metadata)
        case .healthy where previous == .unhealthy:
            stats.endpointsMarkedHealthy.increment()
            logger.info("endpoint healthy again", metadata: metadata)
        default:
            break
        }
    }
}
