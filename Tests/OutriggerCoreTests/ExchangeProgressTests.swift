@testable import OutriggerCore
import Testing

@Suite("Exchange progress: each way, and the one end")
struct ExchangeProgressTests {
    @Test func anExchangeEndsOnceAndTheConnectionGoesOnAsTheRequestSays() {
        var progress = ExchangeProgress()
        #expect(!progress.requestComplete && !progress.responseStarted && !progress.ended)
        #expect(progress.afterResponse == .discardRestOfRequest, "answered before the request's end: the rest is dropped")
        progress.responseCommitted()
        progress.requestEnded()
        #expect(progress.requestComplete && progress.responseStarted)
        #expect(progress.afterResponse == .nextRequest)
        let (first, second) = (progress.end(), progress.end())
        #expect(first && !second, "the gauges and the endpoint's load are let go once")
        #expect(progress.ended)
    }
}
