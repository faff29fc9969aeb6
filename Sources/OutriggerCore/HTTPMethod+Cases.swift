import NIOHTTP1

/// A method compared by its case. `method == .HEAD` compiles to `RawRepresentable`'s `==` (NIO's `HTTPMethod` is
/// both `Equatable` and `RawRepresentable`, and the compiler prefers the latter), which builds both raw-value
/// strings and compares them: ~50 instructions, and the request path asked ten times a request.
extension HTTPMethod {
    @inlinable public var isHEAD: Bool {
        if case .HEAD = self { true } else { false }
    }

    @inlinable public var isCONNECT: Bool {
        if case .CONNECT = self { true } else { false }
    }

    @inlinable public var isTRACE: Bool {
        if case .TRACE = self { true } else { false }
    }
}
