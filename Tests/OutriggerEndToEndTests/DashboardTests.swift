import Foundation
import OutriggerConfig
import OutriggerControl
import OutriggerProxy
import Testing

/// The admin's `/dashboard` and the control plane's `/mesh` in a real browser: headless Chromium driven by Playwright
/// (`Scripts/dashboard_check.py` while traffic runs through the sidecar, `Scripts/mesh_check.py`).
@Suite("Dashboard and mesh view, in a browser")
struct DashboardTests {
    @Test func theDashboardShowsTheNumbersMovingUnderLoad() async throws {
        try await withHarness(echoes: 2) { endpoints in
            // A slow start longer than the test: both endpoints are still ramping up while the page is looked at.
            Harness.config(routes: [RouteConfig(destination: .cluster("users"))],
                           clusters: [ClusterConfig(name: "users", endpoints: endpoints,
                                                    loadBalancer: LoadBalancerConfig(slowStart: .init(window: .seconds(3600))))])
        } _: { (harness: Harness) async throws in
            #expect(try await fetch(harness.url + "/x", ["-H", "Host: bad host"]).status == 400)
            let page = try await fetch(harness.adminURL + "/dashboard")
            #expect(page.status == 200 && page.headers["content-type"] == "text/html; charset=utf-8")
            #expect(!page.body.contains("src=") && !page.body.contains("<link") && !page.body.contains("https://"),
                    "self-contained: no script, style or font loaded from elsewhere")

            let screenshot = FileManager.default.temporaryDirectory.appendingPathComponent("dashboard-\(UUID().uuidString).png")
            defer { try? FileManager.default.removeItem(at: screenshot) }
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/dashboard_check.py").path
            let check = try await run("python3", [script, harness.adminURL, harness.url, "users", "2", screenshot.path])
            #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
            let seen = try #require(check.stdout.split(separator: "\n").first { $0.hasPrefix("ok ") }.flatMap {
                try JSONSerialization.jsonObject(with: Data($0.dropFirst(3).utf8)) as? [String: Any]
            })
            #expect((seen["total"] as? Int ?? 0) > (seen["total_first"] as? Int ?? 0), "the numbers move")
            #expect((seen["rps"] as? Double ?? 0) > 0)
            #expect(seen["success"] as? String == "100.00 %")
            #expect((seen["replies"] as? [String: Int])?["invalid_host"] == 1)
            #expect(seen["control"] as? String == "none (static config)" && seen["version"] as? String == "1")
            #expect(seen["charts"] as? Int == 3, "requests/s, success rate and latency")
            #expect(seen["route_charts"] as? Int == 3, "the same for the one route")
            let route = try #require((seen["routes"] as? [String: [String: Any]])?["all/0"], "\(seen)")
            #expect((route["total"] as? Int ?? 0) > 0 && (route["p99"] as? String)?.hasSuffix(" ms") == true, "\(route)")
            #expect(route["success"] as? String == "100.00 %", "\(route)")
            let slowStart = try #require(seen["slow_start"] as? [String])
            #expect(slowStart.count == 2 && slowStart.allSatisfy { $0.hasPrefix("ramping, ") && $0.hasSuffix(" %") }, "\(slowStart)")
            let png = try Data(contentsOf: screenshot)
            #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47]) && png.count > 10_000, "a screenshot was saved")
        }
    }

    /// The page's data says what the page draws from: the running clusters, their cumulative latency buckets, the
    /// version and the control plane (none here).
    @Test func theDashboardDataHasWhatThePageDraws() async throws {
        try await withHarness(echoes: 1) { harness in
            #expect(try await fetch(harness.url + "/").status == 200)
            let body = try await fetch(harness.adminURL + "/dashboard/data").body
            let data = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
            let latency = try #require(data["latency"] as? [String: Any])
            let bounds = try #require(latency["bounds"] as? [Double])
            let buckets = try #require((latency["clusters"] as? [String: [Int]])?.values.first)
            #expect(buckets.count == bounds.count + 1 && buckets.last == 1, "cumulative, +Inf last: one request")
            #expect((data["clusters"] as? [[String: Any]])?.first?["endpoints"] != nil)
            #expect(data["version"] as? Int == 1 && data["controlPlane"] is NSNull)
            #expect((data["now"] as? Int ?? 0) > 1_700_000_000_000)
        }
    }

    /// The control plane's `/mesh` in a browser: a sidecar shows SYNCED, then NACKED with its refusal once a push it
    /// refuses arrives, and the convergence of the pushes is drawn.
    @Test func theMeshViewFollowsASidecarFromSyncedToNacked() async throws {
        let mesh = try await MeshHarness.start(echoes: 2) { ControlPlaneTests.mesh($0) }
        let admin = try await mesh.plane.bindAdmin(host: "127.0.0.1", port: 0)
        let screenshot = FileManager.default.temporaryDirectory.appendingPathComponent("mesh-\(UUID().uuidString).png")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/mesh_check.py").path
        let browser = try ChildProcess(try which("python3"), [script, "http://127.0.0.1:\(admin.localAddress!.port!)", "web-1", "web", screenshot.path])
        do {
            let page = try await fetch("http://127.0.0.1:\(admin.localAddress!.port!)/mesh")
            #expect(page.status == 200 && page.body.contains("<title>Outrigger mesh</title>") && !page.body.contains("src="))
            try await browser.waitForOutput(containing: "saw SYNCED")
            var bad = ControlPlaneTests.mesh(mesh.echoes.map { HostPort(host: "127.0.0.1", port: $0.localAddress.port!) })
            bad.services[1].cluster.outlierDetection = OutlierDetectionConfig()
            bad.services[1].cluster.outlierDetection?.maxEjectionPercent = 150
            mesh.plane.apply(bad)
            let status = await browser.waitForExit()
            #expect(status == 0, "\(browser.text)")
            let seen = try #require(browser.text.split(separator: "\n").first { $0.hasPrefix("ok ") }.flatMap {
                try JSONSerialization.jsonObject(with: Data($0.dropFirst(3).utf8)) as? [String: Any]
            })
            let synced = try #require(seen["synced"] as? [String: Any])
            #expect(synced["services"] as? String == "1", "web has one sidecar")
            #expect((synced["bars"] as? Int ?? 0) > 0 && (synced["convergence"] as? String)?.contains("p99") == true, "\(synced)")
            #expect((seen["nack"] as? String)?.contains("maxEjectionPercent") == true, "\(seen)")
            #expect(seen["nacked"] as? String == "1")
            #expect((try? Data(contentsOf: screenshot).count) ?? 0 > 10_000)
        } catch {
            browser.kill()
            try? await admin.close()
            try? FileManager.default.removeItem(at: screenshot)
            await mesh.stop()
            throw error
        }
        try? await admin.close()
        try? FileManager.default.removeItem(at: screenshot)
        await mesh.stop()
    }
}
