import Foundation

/// A transaction's operations, built from our keys.
extension Etcdserverpb_RequestOp {
    public static func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) -> Etcdserverpb_RequestOp {
        var put = Etcdserverpb_PutRequest()
        put.key = Data(key.utf8)
        put.value = Data(value)
        put.lease = lease
        var operation = Etcdserverpb_RequestOp()
        operation.requestPut = put
        return operation
    }

    public static func delete(_ range: EtcdKeyRange) -> Etcdserverpb_RequestOp {
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data(range.key)
        delete.rangeEnd = Data(range.end)
        var operation = Etcdserverpb_RequestOp()
        operation.requestDeleteRange = delete
        return operation
    }
}
