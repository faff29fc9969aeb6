@testable import OutriggerProxy
import Testing

@Suite("A loop's span batch is handed over sized to what it holds")
struct SpanBufferTests {
    @Test("a partial batch is copied to its size, and the loop's array keeps its storage for the next")
    func partialBatchIsCopiedToItsSize() {
        var pending: [Int] = []
        pending.reserveCapacity(SpanBuffer.handOffCount)
        pending.append(contentsOf: [7, 8])
        let batch = SpanBuffer.takeBatch(&pending, fullAt: SpanBuffer.handOffCount)
        #expect(batch == [7, 8])
        #expect(batch.capacity < SpanBuffer.handOffCount / 4)
        #expect(pending.isEmpty)
        #expect(pending.capacity >= SpanBuffer.handOffCount)
    }

    @Test("a full batch moves whole, without a copy")
    func fullBatchMovesWhole() {
        var pending = Array(0..<SpanBuffer.handOffCount)
        let storage = pending.withUnsafeBufferPointer { $0.baseAddress }
        let batch = SpanBuffer.takeBatch(&pending, fullAt: SpanBuffer.handOffCount)
        #expect(batch == Array(0..<SpanBuffer.handOffCount))
        #expect(batch.withUnsafeBufferPointer { $0.baseAddress } == storage)
        #expect(pending.isEmpty)
    }
}
