import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import OutriggerConfig
import OutriggerCore

/// Watches the process every `overload.interval` — resident memory, requests in flight, downstream
/// connections against the process limit, event-loop delay — and sets each listener's `OverloadLevel`
/// (`OverloadPolicy` decides): requests read it, and a listener at `notAccepting` stops accepting until the
/// pressure falls. The admin is never shed.
final class OverloadManager: Sendable {
    private let configStore: ConfigStore
    private let loops: [any EventLoop]
    private let connectionLimit: @Sendable () -> Int
    private let setAccepting: @Sendable (_ listener: String, _ accepting: Bool) -> Void
    private let logger: Logger
    /// The delay of the last probe task given to each loop, nanoseconds.
    private let loopDelays: [ManagedAtomic<Int64>]
    private let timer = NIOLockedValueBox<Scheduled<Void>?>(nil)
    private let stopped = ManagedAtomic(false)

    init(configStore: ConfigStore, group: any EventLoopGroup, connectionLimit: @escaping @Sendable () -> Int,
         setAccepting: @escaping @Sendable (String, Bool) -> Void, logger: Logger) {
        self.configStore = configStore
        self.loops = Array(group.makeIterator())
        self.connectionLimit = connectionLimit
        self.setAccepting = setAccepting
        self.logger = logger
        self.loopDelays = loops.map { _ in ManagedAtomic<Int64>(0) }
    }

    func start() {
        schedule()
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        timer.withLockedValue { $0?.cancel() }
    }

    private func schedule() {
        guard !stopped.load(ordering: .relaxed), let loop = loops.first else { return }
        let interval = configStore.snapshot.config.overload.interval
        let scheduled = loop.scheduleTask(in: .nanoseconds(interval.nanoseconds)) { [self] in
            check()
            schedule()
        }
        timer.withLockedValue { $0 = scheduled }
    }

    /// One look: the readings, the pressure, each listener's level; then probes of the loops' delay for the next.
    func check() {
        let snapshot = configStore.snapshot
        let config = snapshot.config.overload
        let stats = configStore.stats
        let readings = OverloadReadings(
            memoryBytes: Self.residentMemoryBytes(),
            activeRequests: stats.requestsActive,
            connections: stats.downstreamConnectionsActive.current,
            eventLoopDelayNanoseconds: loopDelays.map { $0.load(ordering: .relaxed) }.max() ?? 0)
        let pressures = readings.pressures(config, connectionLimit: connectionLimit())
        stats.overloadPressures.withLockedValue { $0 = pressures }
        stats.overloadChecks.increment()
        for listener in snapshot.config.listeners {
            let listenerStats = stats.listener(listener.name)
            let current = listenerStats.overloadLevel
            let next = OverloadPolicy.level(after: current, pressures: pressures, priority: listener.overloadPriority, config: config)
            // Said again each look while it lasts: an accept back-off or a reload's new socket accepts again.
            if next == .notAccepting { setAccepting(listener.name, false) }
            guard next != current else { continue }
            listenerStats.overloadLevelValue.set(next.rawValue)
            let metadata: Logger.Metadata = ["listener": "\(listener.name)", "level": "\(next.name)",
                                             "pressure": "\(pressures.map { "\($0.resource)=\(String(format: "%.2f", $0.pressure))" }.joined(separator: " "))"]
            if next > current {
                logger.warning("overloaded: shedding load", metadata: metadata)
            } else {
                logger.info("overload eased", metadata: metadata)
            }
            if current == .notAccepting { setAccepting(listener.name, true) }
        }
        probeLoops()
    }

    /// Gives each loop a task that measures how late it runs.
    private func probeLoops() {
        for (loop, delay) in zip(loops, loopDelays) {
            let sent = NIODeadline.now().uptimeNanoseconds
            loop.execute { delay.store(Int64(NIODeadline.now().uptimeNanoseconds &- sent), ordering: .relaxed) }
        }
    }

    /// The process's resident memory from `/proc/self/statm` (Linux); nil where there is none.
    static func residentMemoryBytes() -> Int? {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        let fields = statm.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
