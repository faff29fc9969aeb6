import Dispatch
import Foundation

/// Process signals as an async sequence: each delivery of one of `numbers` (ignored by default meanwhile).
public enum ProcessSignals {
    public static func stream(_ numbers: [Int32]) -> AsyncStream<Int32> {
        AsyncStream { continuation in
            var sources: [DispatchSourceSignal] = []
            for number in numbers {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { continuation.yield(number) }
                source.resume()
                sources.append(source)
            }
            let keep = SignalSources(sources)
            continuation.onTermination = { _ in keep.cancel() }
        }
    }
}

/// Dispatch signal sources are not `Sendable`; they are only cancelled once, when the stream ends.
private final class SignalSources: @unchecked Sendable {
    private let sources: [DispatchSourceSignal]

    init(_ sources: [DispatchSourceSignal]) {
        self.sources = sources
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
