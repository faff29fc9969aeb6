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
        #expect(entries.map(\.metadata.weight) == [1, 3, 1])
        #expect(try EndpointsFile.parse("", file: "empty").isEmpty, "an empty file is an empty cluster, not an error")
    }

    @Test func badLinesAreReportedWithTheirPosition() {
        do {
            _ = try EndpointsFile.parse("10.0.0.5:8080\n  nowhere\n10.0.0.7:80 weight=0\n10.0.0.8:80 wieght=2\n", file: "e.txt")
            Issue.record("expected errors")
        } catch {
            #expect(error.issues.map(\.description) == [
                "e.txt:2:3: expected HOST:PORT such as 10.0.0.5:8080, found 'nowhere'",
                "e.txt:3:13: expected weight=N (1...1000000), zone=NAME or priority=P (0...127) after the endpoint, found 'weight=0'",
                "e.txt:4:13: expected weight=N (1...1000000), zone=NAME or priority=P (0...127) after the endpoint, found 'wieght=2'",
            ])
        }
    }

    @Test func fileEndpointsJoinTheConfiguredOnes() {
        let cluster = ClusterConfig(name: "c", endpoints: [HostPort(host: "10.0.0.1", port: 80)])
        let merged = cluster.adding([(HostPort(host: "10.0.0.1", port: 80), EndpointMetadata(weight: 5)),
                                     (HostPort(host: "10.0.0.2", port: 80), EndpointMetadata(weight: 2))])
        #expect(merged.endpoints == [HostPort(host: "10.0.0.1", port: 80), HostPort(host: "10.0.0.2", port: 80)])
        #expect(merged.endpointMetadata == [HostPort(host: "10.0.0.2", port: 80): EndpointMetadata(weight: 2)], "a duplicate keeps the configured entry")
    }

    @Test func linesCarryZoneAndPriority() throws {
        let entries = try EndpointsFile.parse("10.0.0.5:80 zone=us-east-1a priority=1 weight=2\n10.0.0.6:80\n", file: "e.txt")
        #expect(entries.map(\.metadata) == [EndpointMetadata(weight: 2, zone: "us-east-1a", priority: 1), EndpointMetadata()])
        #expect(throws: ConfigErrors.self) { try EndpointsFile.parse("10.0.0.5:80 priority=200", file: "e.txt") }
    }

    @Test func yamlFilesListEndpointsAsClustersDo() throws {
        let entries = try EndpointsFile.parse("""
        # written by a deploy tool
        - 10.0.0.5:8080
        - {address: 10.0.0.6:8080, weight: 3, zone: b, priority: 1}
        """, file: "users.yaml")
        #expect(entries.map(\.endpoint) == [HostPort(host: "10.0.0.5", port: 8080), HostPort(host: "10.0.0.6", port: 8080)])
        #expect(entries[1].metadata == EndpointMetadata(weight: 3, zone: "b", priority: 1))
        let keyed = try EndpointsFile.parse("endpoints:\n  - 10.0.0.7:80\n", file: "users.yml")
        #expect(keyed.map(\.endpoint) == [HostPort(host: "10.0.0.7", port: 80)])
        #expect(try EndpointsFile.parse("", file: "empty.yaml").isEmpty)
        do {
            _ = try EndpointsFile.parse("- 10.0.0.5:8080\n- {address: 10.0.0.6:8080, wieght: 3}\n", file: "users.yaml")
            Issue.record("expected errors")
        } catch {
            #expect(error.issues.map(\.description) == [
                "users.yaml:2:28: [1].wieght: unknown key 'wieght'; did you mean 'weight'?",
            ])
        }
    }
}
