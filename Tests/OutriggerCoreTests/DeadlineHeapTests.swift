import OutriggerCore
import Testing

/// One event loop's timer deadlines, driven alone: in order, moved, removed, and checked against a plain list on
/// seeded random operations.
@Suite("A loop's timer deadlines")
struct DeadlineHeapTests {
    /// Pops every timer due at `now`, soonest first.
    static func due(_ heap: inout DeadlineHeap<String>, now: UInt64) -> [String] {
        var fired: [String] = []
        while let payload = heap.popDue(now: now) { fired.append(payload) }
        return fired
    }

    @Test func dueTimersComeOutSoonestFirstAndOnlyWhenDue() {
        var heap = DeadlineHeap<String>()
        #expect(heap.earliest == nil)
        _ = heap.insert("c", at: 30)
        _ = heap.insert("a", at: 10)
        _ = heap.insert("b", at: 20)
        #expect(heap.earliest == 10)
        #expect(Self.due(&heap, now: 9) == [], "nothing is due before its deadline")
        #expect(Self.due(&heap, now: 25) == ["a", "b"])
        #expect(heap.earliest == 30)
        #expect(Self.due(&heap, now: 30) == ["c"], "due at its deadline")
        #expect(heap.isEmpty)
    }

    @Test func aMovedTimerIsDueAtItsNewDeadlineSoonerOrLater() {
        var heap = DeadlineHeap<String>()
        let a = heap.insert("a", at: 10)
        let b = heap.insert("b", at: 20)
        var moved = heap.move(a, to: 40)
        #expect(moved)
        #expect(heap.earliest == 20)
        #expect(heap.deadline(of: a) == 40)
        moved = heap.move(b, to: 50) && heap.move(b, to: 5)
        #expect(moved)
        #expect(Self.due(&heap, now: 100) == ["b", "a"])
    }

    @Test func aStaleHandleChangesNothingEvenWhenItsSlotWasReused() {
        var heap = DeadlineHeap<String>()
        let fired = heap.insert("fired", at: 10)
        #expect(Self.due(&heap, now: 10) == ["fired"])
        var removed = heap.remove(fired)
        var moved = heap.move(fired, to: 1)
        #expect(removed == nil && !moved)

        let reused = heap.insert("reused", at: 20)  // takes the freed slot
        removed = heap.remove(fired)
        moved = heap.move(fired, to: 1)
        #expect(removed == nil && !moved, "the old handle does not reach the slot's new timer")
        #expect(heap.deadline(of: fired) == nil)
        #expect(heap.deadline(of: reused) == 20)

        removed = heap.remove(reused)
        #expect(removed == "reused")
        removed = heap.remove(reused)
        #expect(removed == nil, "removed once")
        #expect(heap.isEmpty)
    }

    @Test func aRemovedTimerGivesBackItsPayloadAndNeverFires() {
        var heap = DeadlineHeap<String>()
        let handles = (0..<8).map { heap.insert("\($0)", at: UInt64(100 - $0)) }
        let middle = heap.remove(handles[3])
        let soonest = heap.remove(handles[7])
        #expect(middle == "3" && soonest == "7")
        #expect(Self.due(&heap, now: .max) == ["6", "5", "4", "2", "1", "0"])
    }

    /// Seeded random inserts, moves, removes and pops, against a plain table of deadlines by id: every pop is the
    /// table's soonest (ids with equal deadlines may come in either order), and a stale handle stays stale.
    @Test func randomOperationsMatchAPlainTable() {
        var random = FastRandom(seed: 0x7E57)
        var heap = DeadlineHeap<Int>()
        var table: [Int: UInt64] = [:]
        var handles: [Int: DeadlineHeap<Int>.Handle] = [:]
        var stale: [DeadlineHeap<Int>.Handle] = []
        var nextID = 0
        var now: UInt64 = 0
        var mismatches = 0
        for _ in 0..<20_000 {
            let live = Array(handles.keys)
            switch random.next() % 6 {
            case 0, 1:
                let deadline = now + random.next() % 1000
                handles[nextID] = heap.insert(nextID, at: deadline)
                table[nextID] = deadline
                nextID += 1
            case 2 where !live.isEmpty:
                let id = live[Int(random.next() % UInt64(live.count))]
                let deadline = now + random.next() % 1000
                if !heap.move(handles[id]!, to: deadline) { mismatches += 1 }
                table[id] = deadline
            case 3 where !live.isEmpty:
                let id = live[Int(random.next() % UInt64(live.count))]
                if heap.remove(handles[id]!) != id { mismatches += 1 }
                stale.append(handles.removeValue(forKey: id)!)
                table[id] = nil
            case 4:
                now += random.next() % 300
                while let id = heap.popDue(now: now) {
                    let soonest = table.values.min()!
                    if table[id] != soonest || soonest > now { mismatches += 1 }
                    table[id] = nil
                    stale.append(handles.removeValue(forKey: id)!)
                }
                if table.values.contains(where: { $0 <= now }) { mismatches += 1 }
            default:
                if let handle = stale.randomElement(using: &random) {
                    if heap.remove(handle) != nil || heap.move(handle, to: 0) { mismatches += 1 }
                }
            }
            if heap.count != table.count || heap.earliest != table.values.min() { mismatches += 1 }
        }
        #expect(mismatches == 0)
        #expect(nextID > 5_000, "the run armed timers")
    }
}
