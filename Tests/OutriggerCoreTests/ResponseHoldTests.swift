import NIOCore
import NIOHTTP1
@testable import OutriggerCore
import Testing

@Suite("Response hold: a gRPC answer kept back until its trailers")
struct ResponseHoldTests {
    static let head = HTTPResponseHead(version: .http2, status: .ok, headers: ["content-type": "application/grpc"])

    static func texts(_ body: [ByteBuffer]?) -> [String]? { body?.map { String(buffer: $0) } }

    @Test func anAnswerIsHeldWithinTheLimitAndLetGoInOrder() {
        var hold = ResponseHold(limit: 8)
        let nothing = hold.release()
        #expect(!hold.isHolding && nothing == nil)
        hold.hold(Self.head)
        #expect(hold.isHolding)
        let (first, second, third) = (hold.append(ByteBuffer(string: "abcd")), hold.append(ByteBuffer(string: "efgh")),
                                      hold.append(ByteBuffer(string: "i")))
        #expect(first && second, "up to the limit itself")
        #expect(!third, "past it: let it go now")
        let released = hold.release()
        #expect(released?.head == Self.head && Self.texts(released?.body) == ["abcd", "efgh", "i"])
        let again = hold.release()
        #expect(!hold.isHolding && again == nil, "let go once")
    }

    @Test func aRetryThrowsTheHeldAnswerAwayAndTheNextStartsAfresh() {
        var hold = ResponseHold(limit: 4)
        hold.hold(Self.head)
        _ = hold.append(ByteBuffer(string: "abc"))
        hold.drop()
        #expect(!hold.isHolding)
        hold.hold(Self.head)
        let fits = hold.append(ByteBuffer(string: "abcd"))
        #expect(fits, "the dropped answer's bytes no longer count")
        let released = hold.release()
        #expect(Self.texts(released?.body) == ["abcd"])
    }
}
