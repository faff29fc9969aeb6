/// The deadlines of one event loop's timers, in a binary min-heap whose entries know where they sit: arming,
/// moving and cancelling a timer cost O(log n) with no search (NIO's cancel scans the loop's whole task queue
/// for the task) and, once the heap has grown to the most timers ever armed at once, no allocation. The shell
/// keeps a single event-loop timer at `earliest` and pops what is due when it fires.
///
/// A timer is known by its `Handle`. Once its timer fired or was removed, a handle is stale: moving or removing
/// it changes nothing, even after its slot was reused by another timer. Times are uptime nanoseconds.
///
/// Inlinable: it is generic, and a proxy's loop arms and cancels one per request; unspecialised across the module
/// boundary, every slot access went through the payload's value witnesses.
public struct DeadlineHeap<Payload> {
    public struct Handle: Equatable, Sendable {
        @usableFromInline let slot: Int32
        @usableFromInline let generation: UInt32

        @inlinable init(slot: Int32, generation: UInt32) {
            self.slot = slot
            self.generation = generation
        }
    }

    @usableFromInline
    struct Slot {
        /// Bumped when the slot is freed: every handle to its last timer goes stale.
        @usableFromInline var generation: UInt32
        /// Where the slot's entry sits in `entries` (meaningless while the slot is free).
        @usableFromInline var position: Int
        @usableFromInline var payload: Payload?

        @inlinable init(generation: UInt32, position: Int, payload: Payload?) {
            self.generation = generation
            self.position = position
            self.payload = payload
        }
    }

    @usableFromInline
    struct Entry {
        @usableFromInline var deadline: UInt64
        @usableFromInline var slot: Int32

        @inlinable init(deadline: UInt64, slot: Int32) {
            self.deadline = deadline
            self.slot = slot
        }
    }

    /// Heap-ordered by deadline; the deadline is kept here so that sifting compares without an indirection.
    @usableFromInline var entries: [Entry] = []
    @usableFromInline var slots: [Slot] = []
    @usableFromInline var freeSlots: [Int32] = []

    @inlinable public init() {}

    @inlinable public var count: Int { entries.count }
    @inlinable public var isEmpty: Bool { entries.isEmpty }

    /// The soonest deadline armed, if any.
    @inlinable public var earliest: UInt64? { entries.first?.deadline }

    /// Arms a timer for `payload` at `deadline`.
    @inlinable public mutating func insert(_ payload: Payload, at deadline: UInt64) -> Handle {
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
            slots[Int(slot)].payload = payload
        } else {
            slot = Int32(slots.count)
            slots.append(Slot(generation: 0, position: 0, payload: payload))
        }
        entries.append(Entry(deadline: deadline, slot: slot))
        siftUp(from: entries.count - 1)
        return Handle(slot: slot, generation: slots[Int(slot)].generation)
    }

    /// When the handle's timer is due; nil if the handle is stale.
    @inlinable public func deadline(of handle: Handle) -> UInt64? {
        guard isLive(handle) else { return nil }
        return entries[slots[Int(handle.slot)].position].deadline
    }

    /// Moves the handle's timer to `deadline`, sooner or later; false (and nothing changes) if the handle is stale.
    @inlinable public mutating func move(_ handle: Handle, to deadline: UInt64) -> Bool {
        guard isLive(handle) else { return false }
        let position = slots[Int(handle.slot)].position
        entries[position].deadline = deadline
        restoreOrder(at: position)
        return true
    }

    /// Disarms the handle's timer and gives back its payload; nil if the handle is stale.
    @inlinable @discardableResult
    public mutating func remove(_ handle: Handle) -> Payload? {
        guard isLive(handle) else { return nil }
        return removeEntry(at: slots[Int(handle.slot)].position)
    }

    /// The payload of the soonest timer due at `now`, disarmed; nil when none is due.
    @inlinable public mutating func popDue(now: UInt64) -> Payload? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        return removeEntry(at: 0)
    }

    @inlinable func isLive(_ handle: Handle) -> Bool {
        Int(handle.slot) < slots.count && slots[Int(handle.slot)].generation == handle.generation
    }

    @inlinable mutating func removeEntry(at position: Int) -> Payload? {
        let slot = Int(entries[position].slot)
        let last = entries.removeLast()
        if position < entries.count {
            entries[position] = last
            slots[Int(last.slot)].position = position
            restoreOrder(at: position)
        }
        let payload = slots[slot].payload
        slots[slot].payload = nil
        slots[slot].generation &+= 1
        freeSlots.append(Int32(slot))
        return payload
    }

    /// The entry at `position` changed its deadline (or took another's place): it goes up or down to where it belongs.
    @inlinable mutating func restoreOrder(at position: Int) {
        if position > 0, entries[position].deadline < entries[(position - 1) / 2].deadline {
            siftUp(from: position)
        } else {
            siftDown(from: position)
        }
    }

    @inlinable mutating func siftUp(from start: Int) {
        let entry = entries[start]
        var position = start
        while position > 0 {
            let parent = (position - 1) / 2
            guard entry.deadline < entries[parent].deadline else { break }
            place(entries[parent], at: position)
            position = parent
        }
        place(entry, at: position)
    }

    @inlinable mutating func siftDown(from start: Int) {
        let entry = entries[start]
        var position = start
        while true {
            var child = 2 * position + 1
            guard child < entries.count else { break }
            if child + 1 < entries.count, entries[child + 1].deadline < entries[child].deadline { child += 1 }
            guard entries[child].deadline < entry.deadline else { break }
            place(entries[child], at: position)
            position = child
        }
        place(entry, at: position)
    }

    @inlinable mutating func place(_ entry: Entry, at position: Int) {
        entries[position] = entry
        slots[Int(entry.slot)].position = position
    }
}
