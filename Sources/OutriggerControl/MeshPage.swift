import OutriggerProxy

/// The control plane's `/mesh`: one self-contained page that polls `/status` every second and shows the mesh as the
/// control plane sees it — its services and how many of their sidecars are SYNCED, STALE or NACKED, every sidecar
/// with the versions it was sent and ACKed and its last refusal, and how fast recent pushes converged.
enum MeshPage {
    static let html = AdminPage.html(
        title: "Outrigger mesh", dataPath: "/status", unreachable: "control plane unreachable",
        style: #"""
          .SYNCED { color: #1f7a45; font-weight: 600; } .STALE { color: #b26a00; font-weight: 600; } .NACKED { color: #c62828; font-weight: 600; }
          .nack { color: #c62828; font-size: 12px; }
          rect { fill: #2f6fdb; }
        """#,
        header: #"""
          <span><b id="service-count">…</b> services</span>
          <span><b id="sidecar-count">…</b> sidecars</span>
          <span id="counters">…</span>
        """#,
        main: #"""
          <section><h2>Services</h2>
            <table id="services"><thead><tr><th>service</th><th>sidecars</th><th>SYNCED</th><th>STALE</th><th>NACKED</th></tr></thead><tbody></tbody></table>
          </section>
          <section><h2>Sidecars</h2>
            <table id="sidecars"><thead><tr><th>node</th><th>service</th><th>zone</th><th>connected since</th><th>sync</th><th>listeners</th><th>routes</th><th>clusters</th><th>endpoints</th></tr></thead><tbody></tbody></table>
          </section>
          <section><h2>Convergence of recent pushes (a mesh change to each sidecar's answer)</h2>
            <div id="convergence">…</div>
            <svg id="convergence-chart" viewBox="0 0 600 90" preserveAspectRatio="none"></svg>
          </section>
        """#,
        script: #"""
        function ms(value) { return value === null || value === undefined ? "–" : value.toFixed(1) + " ms"; }
        function version(status) {
          if (!status) return "–";
          const sent = status.sent ? status.sent.slice(0, 8) : "–", acked = status.acked ? status.acked.slice(0, 8) : "–";
          return sent === acked ? sent : acked + " → " + sent;
        }

        function update(data) {
          document.getElementById("service-count").textContent = data.services.length;
          document.getElementById("sidecar-count").textContent = data.sidecars.length;
          const c = data.counters;
          document.getElementById("counters").textContent = `${c.pushes} pushes · ${c.acks} ACKs · ${c.nacks} NACKs · ${c.meshRejected} mesh edits refused`;
          const byService = {};
          for (const name of data.services) byService[name] = { sidecars: 0, SYNCED: 0, STALE: 0, NACKED: 0 };
          for (const s of data.sidecars) {
            const entry = byService[s.service] = byService[s.service] || { sidecars: 0, SYNCED: 0, STALE: 0, NACKED: 0 };
            entry.sidecars += 1;
            entry[s.sync] += 1;
          }
          const services = document.querySelector("#services tbody");
          services.replaceChildren();
          for (const [name, entry] of Object.entries(byService).sort()) {
            const row = services.insertRow();
            row.dataset.service = name;
            cell(row, name);
            cell(row, String(entry.sidecars), "sidecars");
            cell(row, String(entry.SYNCED), entry.SYNCED ? "SYNCED" : "");
            cell(row, String(entry.STALE), entry.STALE ? "STALE" : "");
            cell(row, String(entry.NACKED), entry.NACKED ? "NACKED" : "");
          }
          const sidecars = document.querySelector("#sidecars tbody");
          sidecars.replaceChildren();
          for (const s of [...data.sidecars].sort((a, b) => a.node.localeCompare(b.node))) {
            const row = sidecars.insertRow();
            row.dataset.node = s.node;
            cell(row, s.node);
            cell(row, s.service);
            cell(row, s.zone === null ? "–" : s.zone);
            cell(row, new Date(s.connectedSince).toLocaleTimeString());
            const sync = cell(row, s.sync + (s.draining ? " (draining)" : ""), s.sync);
            sync.dataset.sync = s.sync;
            for (const type of ["Listener", "RouteConfiguration", "Cluster", "ClusterLoadAssignment"]) {
              const status = s.types[type];
              const td = cell(row, version(status));
              if (status && status.nack) {
                const nack = document.createElement("div");
                nack.className = "nack";
                nack.textContent = "NACK: " + status.nack;
                td.appendChild(nack);
              }
            }
          }
          const v = data.convergence;
          document.getElementById("convergence").textContent =
            `${v.count} answers · p50 ${ms(v.p50Ms)} · p99 ${ms(v.p99Ms)} · max ${ms(v.maxMs)} (last 1,000)`;
          const chart = document.getElementById("convergence-chart");
          chart.replaceChildren();
          const max = Math.max(...v.recentMs, 1);
          v.recentMs.forEach((value, index) => {
            const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
            const height = Math.max(value / max * 86, 1);
            bar.setAttribute("x", String(index * 10));
            bar.setAttribute("width", "8");
            bar.setAttribute("y", String(88 - height));
            bar.setAttribute("height", String(height));
            chart.appendChild(bar);
          });
        }
        """#
    )
}
