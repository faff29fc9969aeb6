import Foundation
import NIOCore
import OutriggerConfig

/// A listening socket that could not be opened, said as an operator needs it: which one, where, and why.
public struct BindError: Error, CustomStringConvertible {
    public let what: String
    public let address: HostPort
    public let underlying: any Error

    public var description: String {
        let reason: String
        if let io = underlying as? IOError {
            reason = "\(String(cString: strerror(io.errnoCode))) (errno \(io.errnoCode))"
        } else {
            reason = "\(underlying)"
        }
        return "cannot bind \(what) to \(address): \(reason)"
    }
}
