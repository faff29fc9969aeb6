/// How long to wait before trying a peer again after `failures` failures in a row (a control plane, an etcd
/// member): full jitter over an exponential ceiling, 100 ms doubling to `ceiling`.
public enum ReconnectBackoff {
    public static func delay(after failures: Int, ceiling: Duration = .seconds(5)) -> Duration {
        let ceilingMilliseconds = Int(ceiling.components.seconds * 1000)
        let top = min(ceilingMilliseconds, 100 << min(max(failures, 0), 16))
        return .milliseconds(Int.random(in: top / 2...top))
    }
}
