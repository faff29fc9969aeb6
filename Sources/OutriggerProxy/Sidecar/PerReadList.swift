/// What a connection gathers while it handles a read (streams opened, streams handed parts), taken whole when the read
/// ends. Taking it swaps in the storage given back last time, so a read allocates no array; what is appended while the
/// taken elements are handled (their handling may come back to the connection) waits for the next take.
struct PerReadList<Element> {
    private var gathering: [Element] = []
    /// The storage of the last list taken, empty, given back once its elements were handled.
    private var spare: [Element] = []

    var isEmpty: Bool { gathering.isEmpty }

    mutating func append(_ element: Element) {
        gathering.append(element)
    }

    /// Everything gathered, in order; the list starts again empty.
    mutating func take() -> [Element] {
        var taken: [Element] = []
        swap(&taken, &spare)
        swap(&taken, &gathering)
        return taken
    }

    /// A taken list whose elements were handled: its storage serves the next take.
    mutating func giveBack(_ taken: consuming [Element]) {
        var storage = taken
        storage.removeAll(keepingCapacity: true)
        spare = storage
    }
}
