/// A field value of fixed length the proxy makes from numbers (a generated request id, a try's `traceparent`): its
/// bytes stored in place — into a string when its text is asked for, or on the stack for an encoder — never held as
/// a string on the way (`AppendedOwnFields`).
public protocol MadeFieldValue {
    /// The value's length in bytes.
    static var length: Int { get }
    /// The value at the buffer's start (`length` bytes).
    func store(into buffer: UnsafeMutableBufferPointer<UInt8>)
}

extension MadeFieldValue {
    /// The value as text.
    public var text: String {
        String(unsafeUninitializedCapacity: Self.length) { buffer in
            store(into: buffer)
            return Self.length
        }
    }

    /// The value's bytes, made on the stack, for `body`.
    @inline(__always)
    func withBytes(_ body: (UnsafeRawBufferPointer) -> Void) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Self.length) { buffer in
            store(into: buffer)
            body(UnsafeRawBufferPointer(buffer))
        }
    }
}
