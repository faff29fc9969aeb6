@testable import OutriggerControl
@testable import OutriggerEtcd
import Testing

/// etcd's key ranges, and the names a mesh's files are kept under in etcd.
@Suite("etcd keys")
struct EtcdKeysTests {
    @Test func aPrefixRangeEndsAtThePrefixWithItsLastByteRaised() {
        #expect(EtcdKeyRange.prefix("/outrigger/mesh/") == EtcdKeyRange(key: Array("/outrigger/mesh/".utf8), end: Array("/outrigger/mesh0".utf8)))
        #expect(EtcdKeyRange.prefix("a\u{7f}").end == [0x61, 0x80])
        // Trailing 0xff bytes cannot be raised: the end is the byte before them, raised; none left: every key on.
        #expect(EtcdKeyRange.prefixEnd([0x01, 0xff]) == [0x02])
        #expect(EtcdKeyRange.prefixEnd([0xff, 0xff]) == [0])
        #expect(EtcdKeyRange.prefix("").end == [0])
        #expect(EtcdKeyRange.key("/k").end.isEmpty)
    }

    @Test func aPageContinuesRightAfterTheLastKeyItHeld() {
        #expect(EtcdKeyRange.prefix("/a/").after(Array("/a/b".utf8)) == EtcdKeyRange(key: Array("/a/b\0".utf8), end: Array("/a0".utf8)))
    }

    @Test func aMeshFileIsKeptByItsNameWithinWhatWasApplied() {
        #expect(EtcdMeshStore.storedName(of: "/etc/mesh/mesh.yaml", appliedAs: "/etc/mesh/mesh.yaml") == "mesh.yaml")
        #expect(EtcdMeshStore.storedName(of: "/etc/mesh/a/users.yaml", appliedAs: "/etc/mesh") == "a/users.yaml")
        #expect(EtcdMeshStore.storedName(of: "/etc/mesh/users.yaml", appliedAs: "/etc/mesh/") == "users.yaml")
        #expect(EtcdMeshStore.storedName(of: "mesh.yaml", appliedAs: "mesh.yaml") == "mesh.yaml")
    }
}
