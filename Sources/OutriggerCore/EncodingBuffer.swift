/// Bytes being encoded: a growable buffer whose writes check its capacity once and store without any other check
/// (no copy-on-write test, no bounds check per byte), reused from one batch to the next so that a batch costs no
/// allocation once the buffer has grown. Used by one thread at a time (the span exporter's).
public final class EncodingBuffer {
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    /// Bytes written so far.
    public private(set) var count = 0

    public init(capacity: Int = 4_096) {
        self.capacity = max(capacity, 16)
        base = .allocate(byteCount: self.capacity, alignment: 8)
    }

    deinit {
        base.deallocate()
    }

    /// The bytes from `offset` to the end, valid until the next write.
    public func bytes(from offset: Int = 0) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + offset, count: count - offset)
    }

    /// Forgets what was written; the capacity stays.
    public func removeAll() {
        count = 0
    }

    @inline(__always)
    func reserve(_ extra: Int) {
        if count + extra > capacity { grow(to: count + extra) }
    }

    private func grow(to needed: Int) {
        let newCapacity = max(needed, capacity * 2)
        let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 8)
        grown.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = grown
        capacity = newCapacity
    }

    @inline(__always)
    func append(_ byte: UInt8) {
        reserve(1)
        base.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    /// `value` as a protobuf varint: 7 bits per byte, least significant first, the high bit on all but the last.
    func append(varint value: UInt64) {
        reserve(10)
        var value = value
        var end = count
        while value >= 0x80 {
            base.storeBytes(of: UInt8(truncatingIfNeeded: value) | 0x80, toByteOffset: end, as: UInt8.self)
            end += 1
            value >>= 7
        }
        base.storeBytes(of: UInt8(value), toByteOffset: end, as: UInt8.self)
        count = end + 1
    }

    /// `value`'s bytes in memory order (`littleEndian` or `bigEndian` first for a wire order).
    @inline(__always)
    func append<Integer: FixedWidthInteger>(bytesOf value: Integer) {
        let size = MemoryLayout<Integer>.size
        reserve(size)
        (base + count).storeBytes(of: value, as: Integer.self)
        count += size
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        reserve(bytes.count)
        (base + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
    }

    func append(repeating byte: UInt8, count extra: Int) {
        reserve(extra)
        (base + count).initializeMemory(as: UInt8.self, repeating: byte, count: extra)
        count += extra
    }

    func append(utf8 string: String) {
        var string = string
        string.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    func append(utf8 string: Substring) {
        var string = string
        string.withUTF8 { append(UnsafeRawBufferPointer($0)) }
    }

    func append(utf8 string: StaticString) {
        string.withUTF8Buffer { append(UnsafeRawBufferPointer($0)) }
    }

    /// Moves `length` bytes at `source` to `destination` (overlapping or not), then makes the end the moved bytes' end.
    func move(from source: Int, to destination: Int, length: Int) {
        if destination + length > count { reserve(destination + length - count) }
        (base + destination).copyMemory(from: base + source, byteCount: length)
        count = destination + length
    }

    /// Overwrites the byte at `offset`, written already.
    @inline(__always)
    func set(_ byte: UInt8, at offset: Int) {
        base.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
    }

    /// Overwrites the bytes at `offset`, written already.
    func set(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard let source = bytes.baseAddress else { return }
        (base + offset).copyMemory(from: source, byteCount: bytes.count)
    }
}

@available(*, unavailable)
extension EncodingBuffer: Sendable {}
