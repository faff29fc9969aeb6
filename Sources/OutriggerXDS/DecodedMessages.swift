import Foundation
import OutriggerConfig
import Synchronization
import SwiftProtobuf

/// What `XDSDecoder.unpack` decoded and found free of undeclared fields, by message type and bytes: a push is
/// looked at several times (its names, what it subscribes to, each resource alone, the whole config) and each
/// resource is decoded once. Decoding is a pure function of the bytes, so the memo is shared by every decoder
/// in the process. Two generations bound it: `rotate()` (after each whole config) keeps what the last two
/// configs used and drops the rest.
final class DecodedMessages: Sendable {
    struct Key: Hashable, Sendable {
        let type: ObjectIdentifier
        let bytes: Data
        /// Over every byte (Data's own hash looks at a prefix only, and resources share long prefixes).
        let digest: UInt64

        init(type: ObjectIdentifier, bytes: Data) {
            self.type = type
            self.bytes = bytes
            digest = FNV1a.hash(bytes)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(type)
            hasher.combine(digest)
        }

        static func == (a: Key, b: Key) -> Bool { a.type == b.type && a.digest == b.digest && a.bytes == b.bytes }
    }

    private struct Generations {
        var current: [Key: any Message & Sendable] = [:]
        var previous: [Key: any Message & Sendable] = [:]
    }

    private let generations = Mutex(Generations())

    func message<M: Message & Sendable>(_ key: Key, as: M.Type) -> M? {
        generations.withLock { generations in
            if let found = generations.current[key] as? M { return found }
            guard let found = generations.previous[key] as? M else { return nil }
            generations.current[key] = found
            return found
        }
    }

    func remember(_ message: some Message & Sendable, for key: Key) {
        generations.withLock { $0.current[key] = message }
    }

    func rotate() {
        generations.withLock { generations in
            generations.previous = generations.current
            generations.current = [:]
        }
    }
}
