import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OutriggerCore

/// What another component adds to a sidecar's admin pages (`Sidecar.setAdminExtension`).
public struct AdminExtension: Sendable {
    /// Appended to `/stats/prometheus`.
    public var prometheusText: String
    /// A key and a JSON value added to `/config_dump`'s top-level object.
    public var configDumpKey: String
    public var configDumpJSON: String

    public init(prometheusText: String, configDumpKey: String, configDumpJSON: String) {
        self.prometheusText = prometheusText
        self.configDumpKey = configDumpKey
        self.configDumpJSON = configDumpJSON
    }
}
