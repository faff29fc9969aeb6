import Dispatch
import Foundation

extension Sidecar {
    /// Runs until SIGTERM or SIGINT, then drains and returns. SIGHUP and edits to the config file reload
    /// it; endpoints files and TLS certificates changed in place are read again on the same tick; hostname endpoints are resolved again on each
    /// cluster's interval.
    /// - Parameter beforeDrain: runs when SIGTERM or SIGINT arrives, before the sidecar stops accepting (a
    ///   control-plane client announces the drain there, so callers stop picking this sidecar first).
    /// - Parameter signals: SIGHUP, SIGTERM and SIGINT as they arrive (`ProcessSignals.stream`), taken by the caller
    ///   before it says it is ready, so that one sent the moment it is ready is acted on.
    public func runUntilStopped(signals: AsyncStream<Int32>, watchInterval: Duration = .seconds(1),
                                beforeDrain: @Sendable () async -> Void = {}) async {
        let watcher = Task {
            while !Task.isCancelled {
                do { try await Task.sleep(for: watchInterval) } catch { break }
                await reloadIfFileChanged()
                refreshEndpointsFiles()
                refreshTLSCertificates()
                sweepOutliers()
            }
        }
        let resolver = Task {
            while !Task.isCancelled {
                let interval = configStore.snapshot.config.clusters.map(\.dnsRefreshInterval).min() ?? .seconds(30)
                do { try await Task.sleep(for: interval) } catch { break }
                refreshEndpoints()
            }
        }
        for await number in signals {
            if number == SIGHUP {
                await reopenAccessLogs()
                await reload()
                continue
            }
            break
        }
        await beforeDrain()
        watcher.cancel()
        resolver.cancel()
        await shutdown()
    }
}
