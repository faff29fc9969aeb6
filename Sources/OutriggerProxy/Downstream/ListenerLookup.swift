import OutriggerConfig
import OutriggerCore

/// A listener's runtime in the running snapshot, looked up by name again only when the snapshot changed, with this
/// loop's access log batch for it. One per downstream connection, shared by its exchanges: an HTTP/2 connection's
/// streams each have an exchange of their own, and each looked the listener up by its name in a dictionary (~350
/// instructions a request). Touched on the connection's event loop only.
final class ListenerLookup {
    let name: String
    private let configStore: ConfigStore
    private let local: LoopLocalState
    private var cached: (snapshot: RuntimeSnapshot, listener: ListenerRuntime)?
    /// This loop's access log batch for the listener, if it has an access log (as of the last lookup that found it;
    /// each exchange keeps its own copy from when it was routed).
    private(set) var accessLog: (buffer: AccessLogBuffer, format: AccessLogConfig.Format)?

    init(name: String, configStore: ConfigStore, local: LoopLocalState) {
        self.name = name
        self.configStore = configStore
        self.local = local
    }

    /// The listener in the running snapshot; nil when it is no longer there.
    func current() -> ListenerRuntime? {
        let snapshot = configStore.snapshot
        if let cached, cached.snapshot === snapshot { return cached.listener }
        guard let listener = snapshot.listeners[name] else { return nil }
        cached = (snapshot, listener)
        accessLog = listener.config.accessLog.flatMap { config in local.accessLog(config).map { ($0, config.format) } }
        return listener
    }
}
