import OutriggerConfig
import Testing

@Suite("Endpoints files")
struct EndpointsFileTests {
    @Test func oneEndpointPerLineWithOptionalWeight() throws {
        let entries = try EndpointsFile.parse("""
        # the users service
        10.0.0.5:8080
          10.0.0.6:8080 weight=3   # bigger box

        users.internal:9090
        """, file: "users.endpoints")
        #expect(entries.map(\.endpoint) == [HostPort(host: "10.0.0.5", port: 8080), HostPort(host: "10.0.0.6", port: 8080),
                                            HostPort(host: "users.internal", port: 9090)])
        #expect(entries.map(\.weight) == [1, 3, 1])
        #expect(try EndpointsFile.parse("", file: "empty").isEmpty, "an empty file is an empty cluster, not an error")
    }

    @Test func badLinesAreReportedWithTheirPosition() {
        do {
            _ = try EndpointsFile.parse("10.0.0.5:8080\n  nowhere\n10.0.0.7:80 weight=0\n10.0.0.8:80 wieght=2\n", file: "e.txt")
            Issue.record("expected errors")
        } catch {
            #expect(error.issues.map(\.description) == [
                "e.txt:2:3: expected HOST:PORT such as 10.0.0.5:8080, found 'nowhere'",
                "e.txt:3:1: expected weight=N with N in 1...1000000 after the endpoint, found 'weight=0'",
                "e.txt:4:1: expected weight=N with N in 1...1000000 after the endpoint, found 'wieght=2'",
            ])
        }
    }

    @Test func fileEndpointsJoinTheConfiguredOnes() {
        let cluster = ClusterConfig(name: "c", endpoints: [HostPort(host: "10.0.0.1", port: 80)])
        let merged = cluster.adding([(HostPort(host: "10.0.0.1", port: 80), 5), (HostPort(host: "10.0.0.2", port: 80), 2)])
        #expect(merged.endpoints == [HostPort(host: "10.0.0.1", port: 80), HostPort(host: "10.0.0.2", port: 80)])
        #expect(merged.endpointWeights == [HostPort(host: "10.0.0.2", port: 80): 2], "a duplicate keeps the configured entry")
    }
}
