/// A received HTTP/2 header block's fields, in order, as `HPACKBlockDecoder` made them: what a stream's head or
/// trailers are read from. Fields are a struct, not a tuple: an array of tuples is destroyed through the runtime's
/// generic tuple witness, field by field.
public struct HTTP2ReceivedFields: Sendable {
    public struct Field: Sendable {
        public let name: String
        public let value: String
    }

    public private(set) var fields: [Field] = []
    /// Whether every regular field's value is known to be one HTTP/1.1 can carry (the codec's check read them);
    /// false when not known.
    public var everyValueFitsHTTP1 = false

    public init() {
        // Most blocks are a few fields: room for them without growing.
        fields.reserveCapacity(16)
    }

    /// A block of these fields (tests, and blocks made here).
    public init(_ pairs: [(String, String)]) {
        fields = pairs.map { Field(name: $0.0, value: $0.1) }
    }

    public mutating func append(name: String, value: String) {
        fields.append(Field(name: name, value: value))
    }

    public var count: Int { fields.count }

    /// Whether a field has this name (HTTP/2's names are lower case: compared exactly). Lengths first: two unequal
    /// small strings compared take `String`'s slow path.
    public func contains(name: String) -> Bool {
        let length = name.utf8.count
        return fields.contains { $0.name.utf8.count == length && $0.name == name }
    }
}
