import NIOCore
import NIOHPACK
import NIOHTTP1
import OutriggerCore

/// What a HEADERS frame carries, as the stream handed it to the codec: an HTTP/1-shaped head or trailers, encoded
/// straight into the frame when it goes (`HPACKBlockEncoder+Heads`), or a block in HTTP/2's shape already (a frame
/// written down the pipeline).
///
/// A request's case is boxed: its appended fields are ~110 bytes, and unboxed they made every case, and every frame
/// the codec holds (`HTTP2Codec.Held`), that large, copied whole with each pass (`memcpy`, 4 a response on h2c).
enum HTTP2HeaderFields {
    indirect case request(HTTPRequestHead, scheme: String, appending: AppendedOwnFields = AppendedOwnFields())
    case response(HTTPResponseHead, appending: AppendedResponseFields = AppendedResponseFields())
    case trailers(HTTPHeaders)
    case block(HPACKHeaders)

    /// A HEAD request: its response has no body, whatever its fields say.
    var isHeadRequest: Bool {
        switch self {
        case .request(let head, _, _): head.method.isHEAD
        case .block(let block): block.first(name: ":method") == "HEAD"
        case .response, .trailers: false
        }
    }

    func encode(with encoder: inout HPACKBlockEncoder, into buffer: inout ByteBuffer) {
        switch self {
        case let .request(head, scheme, own): encoder.encode(request: head, scheme: scheme, appending: own, into: &buffer)
        case let .response(head, own): encoder.encode(response: head, appending: own, into: &buffer)
        case let .trailers(fields): encoder.encode(fields: fields, into: &buffer)
        case let .block(block):
            for (name, value, indexing) in block {
                encoder.encode(name: name, value: value, indexing: HPACKBlockEncoder.Indexing(indexing), into: &buffer)
            }
        }
    }
}

extension HPACKBlockEncoder.Indexing {
    init(_ indexing: HPACKIndexing) {
        switch indexing {
        case .indexable: self = .indexable
        case .nonIndexable: self = .nonIndexable
        case .neverIndexed: self = .neverIndexed
        }
    }
}
