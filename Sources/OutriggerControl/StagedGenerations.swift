import Foundation
import OutriggerXDS
import SwiftProtobuf

/// A two-phase rollout's messages over ADS: one resource of its own type, `outrigger.v1.StagedGeneration`, that
/// prepares a generation on a sidecar (its whole view of the mesh, held ready and not served), commits it (the
/// switch) or aborts it. A sidecar answers each with an ACK, or a NACK saying why. Envoy ignores the type.
public enum StagedGenerations {
    public static let typeURL = "type.googleapis.com/outrigger.v1.StagedGeneration"

    /// Why a sidecar refused a rollout's message.
    struct Refusal: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// The message of `phase` for `generation`; a prepare carries the sidecar's view, type by type, as a sidecar
    /// persists what it accepted (so it decodes it the same way).
    static func message(generation: UInt64, phase: Outrigger_V1_StagedGeneration.Phase,
                        view: [XDSType: [String: XDSResource]] = [:], switchAt: Int64 = 0) -> Outrigger_V1_StagedGeneration {
        var message = Outrigger_V1_StagedGeneration()
        message.generation = generation
        message.phase = phase
        message.switchAtUnixMs = switchAt
        message.view.types = view.keys.sorted().map { type in
            var entry = Outrigger_V1_PersistedState.TypeMessage()
            entry.typeURL = type.rawValue
            entry.version = ADSStreamStateMachine.version(of: view[type] ?? [:])
            entry.resources = (view[type] ?? [:]).keys.sorted().map { view[type]![$0]!.body }
            return entry
        }
        return message
    }

    /// How long until the instant `switchAt` (Unix milliseconds, as a COMMIT names it), at most `cap` (a clock that
    /// far off is not waited for); zero when it has passed, or is none.
    public static func wait(until switchAt: Int64, cap: Duration = .seconds(1)) -> Duration {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        guard switchAt > now else { return .zero }
        return min(.milliseconds(switchAt - now), cap)
    }

    /// The version a message goes out with, and its answer comes back with.
    static func version(_ generation: UInt64, _ phase: Outrigger_V1_StagedGeneration.Phase) -> String {
        "\(generation)/\(phase)"
    }
}
