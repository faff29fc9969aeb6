/// The admin's `/dashboard`: one self-contained page (no CDN, no asset files) that polls `/dashboard/data` every
/// second and draws, per cluster and per route, requests per second, success rate and p50/p99 over the last five
/// minutes (the quantiles from the Prometheus buckets' growth over the last 10 s, as `histogram_quantile` reads them),
/// the endpoint table (slow start ramps included), local replies by reason, the config version, the control plane's
/// status and the spans.
enum DashboardPage {
    static let html = AdminPage.html(
        title: "Outrigger sidecar", dataPath: "/dashboard/data", unreachable: "admin unreachable",
        style: #"""
          .charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
          .chart { border: 1px solid #eef0f4; border-radius: 4px; padding: 6px; }
          .chart h3 { font-size: 13px; margin: 0 0 4px; font-weight: 600; }
          polyline { fill: none; stroke-width: 1.5; }
          .rps { stroke: #2f6fdb; } .success { stroke: #1f9d55; } .p50 { stroke: #8a5cf6; } .p99 { stroke: #e0702b; }
          .legend span { margin-right: 10px; font-size: 12px; }
        """#,
        header: #"""
          <span>config version <b id="version">…</b></span>
          <span>control plane <b id="control">…</b></span>
          <span>spans <b id="spans">…</b></span>
        """#,
        main: #"""
          <section><h2>Clusters (last 10 s)</h2>
            <table id="clusters"><thead><tr><th>cluster</th><th>req/s</th><th>success</th><th>p50</th><th>p99</th><th>in flight</th><th>requests</th><th>retries</th></tr></thead><tbody></tbody></table>
          </section>
          <section><h2>Routes (last 10 s)</h2>
            <table id="routes"><thead><tr><th>listener</th><th>route</th><th>req/s</th><th>success</th><th>p50</th><th>p99</th><th>requests</th></tr></thead><tbody></tbody></table>
          </section>
          <section><h2>Last five minutes</h2><div class="charts" id="charts"></div></section>
          <section><h2>Endpoints</h2>
            <table id="endpoints"><thead><tr><th>cluster</th><th>endpoint</th><th>health</th><th>state</th><th>breaker</th><th>in flight</th><th>latency (EWMA)</th><th>weight</th><th>slow start</th><th>zone</th></tr></thead><tbody></tbody></table>
          </section>
          <section><h2>Local replies</h2>
            <table id="replies"><thead><tr><th>reason</th><th>total</th><th>per second</th></tr></thead><tbody></tbody></table>
          </section>
        """#,
        script: #"""
        const windowSeconds = 300, quantileWindow = 10;
        const history = [];  // {t, clusters: {name: {total, errors, buckets, active, retries}}, replies: {reason: n}}
        const series = {};   // "cluster NAME" or "route LISTENER/NAME" → {kind, name, points: [{t, rps, success, p50, p99}]}
        const colors = { rps: "#2f6fdb", success: "#1f9d55", p50: "#8a5cf6", p99: "#e0702b" };

        function text(value) { return value === null || value === undefined || Number.isNaN(value) ? "–" : String(value); }
        function ms(seconds) { return seconds === null ? "–" : (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1) + " ms"; }

        // histogram_quantile over cumulative bucket counts (bounds in seconds, +Inf last), linear within a bucket.
        function quantile(q, bounds, counts) {
          const total = counts[counts.length - 1];
          if (!(total > 0)) return null;
          const rank = q * total;
          for (let i = 0; i < counts.length; i++) {
            if (counts[i] >= rank) {
              if (i === bounds.length) return bounds[bounds.length - 1];
              const lower = i === 0 ? 0 : bounds[i - 1], below = i === 0 ? 0 : counts[i - 1];
              const inBucket = counts[i] - below;
              return inBucket > 0 ? lower + (bounds[i] - lower) * (rank - below) / inBucket : bounds[i];
            }
          }
          return bounds[bounds.length - 1];
        }

        function summarize(data) {
          const stats = {};
          for (const c of data.stats.clusters) stats[c.name] = c;
          const clusters = {};
          for (const c of data.clusters) {
            const s = stats[c.name];
            if (!s) continue;
            const responses = Object.values(s.responses).reduce((a, b) => a + b, 0);
            clusters[c.name] = {
              total: responses + s.request_failures, errors: s.responses["5xx"] + s.request_failures,
              buckets: data.latency.clusters[c.name] || [], active: s.requests_active, retries: s.retries, requests: responses,
            };
          }
          const routes = {};
          for (const r of data.routes) routes[r.listener + "/" + r.name] = { listener: r.listener, name: r.name, buckets: r.buckets, errors: r.errors };
          return { t: data.now / 1000, clusters, routes, replies: data.stats.local_replies };
        }

        function update(data) {
          const now = summarize(data);
          history.push(now);
          while (history.length > quantileWindow + 1) history.shift();
          const previous = history.length > 1 ? history[history.length - 2] : null;
          const oldest = history[0];
          const bounds = data.latency.bounds;
          const body = document.querySelector("#clusters tbody");
          body.replaceChildren();
          for (const [name, c] of Object.entries(now.clusters)) {
            const before = previous && previous.clusters[name];
            const dt = previous ? Math.max(now.t - previous.t, 0.001) : null;
            const rps = before ? (c.total - before.total) / dt : null;
            const old = oldest.clusters[name];
            const windowTotal = old ? c.total - old.total : 0;
            const success = old && windowTotal > 0 ? 1 - (c.errors - old.errors) / windowTotal : null;
            const delta = old && old.buckets.length === c.buckets.length ? c.buckets.map((n, i) => n - old.buckets[i]) : [];
            const p50 = delta.length ? quantile(0.5, bounds, delta) : null, p99 = delta.length ? quantile(0.99, bounds, delta) : null;
            remember("cluster", name, { t: now.t, rps, success, p50, p99 });
            const row = body.insertRow();
            row.dataset.cluster = name;
            cell(row, name);
            cell(row, rps === null ? "–" : rps.toFixed(1), "rps");
            successCell(row, success);
            cell(row, ms(p50), "p50");
            cell(row, ms(p99), "p99");
            cell(row, text(c.active));
            cell(row, text(c.requests), "total");
            cell(row, text(c.retries));
          }
          drawRoutes(now, previous, oldest, bounds);
          drawCharts();
          drawEndpoints(data.clusters);
          drawReplies(now, previous);
          document.getElementById("version").textContent = data.version;
          const cp = data.controlPlane;
          const control = document.getElementById("control");
          control.textContent = !cp ? "none (static config)" : !cp.connected ? "STALE (disconnected)" : cp.lastNack ? "NACKED" : "SYNCED";
          control.className = !cp ? "" : !cp.connected || cp.lastNack ? "bad" : "ok";
          const t = data.tracing;
          document.getElementById("spans").textContent = `${t.recorded} recorded, ${t.exported} exported, ${t.dropped + t.failed} lost`;
        }

        // One point of a cluster's or a route's charts; points older than the window go.
        function remember(kind, name, point) {
          const key = kind + " " + name;
          const entry = series[key] = series[key] || { kind, name, points: [] };
          entry.points.push(point);
          while (entry.points.length && entry.points[0].t < point.t - windowSeconds) entry.points.shift();
        }

        function successCell(row, success) {
          cell(row, success === null ? "–" : (success * 100).toFixed(2) + " %",
               "success " + (success === null ? "" : success < 0.95 ? "bad" : success < 0.99 ? "warn" : "ok"));
        }

        // A route's requests are its histogram's count (the +Inf bucket): its rate, its success rate (its 5xx answers
        // among them) and its quantiles over the window.
        function drawRoutes(now, previous, oldest, bounds) {
          const body = document.querySelector("#routes tbody");
          body.replaceChildren();
          for (const [key, r] of Object.entries(now.routes)) {
            const count = r.buckets[r.buckets.length - 1];
            const before = previous && previous.routes[key], old = oldest.routes[key];
            const rps = before ? (count - before.buckets[before.buckets.length - 1]) / Math.max(now.t - previous.t, 0.001) : null;
            const delta = old && old.buckets.length === r.buckets.length ? r.buckets.map((n, i) => n - old.buckets[i]) : [];
            const windowTotal = delta.length ? delta[delta.length - 1] : 0;
            const success = old && windowTotal > 0 ? 1 - (r.errors - old.errors) / windowTotal : null;
            const p50 = delta.length ? quantile(0.5, bounds, delta) : null, p99 = delta.length ? quantile(0.99, bounds, delta) : null;
            remember("route", key, { t: now.t, rps, success, p50, p99 });
            const row = body.insertRow();
            row.dataset.route = r.name;
            cell(row, r.listener);
            cell(row, r.name);
            cell(row, rps === null ? "–" : rps.toFixed(1), "rps");
            successCell(row, success);
            cell(row, ms(p50), "p50");
            cell(row, ms(p99), "p99");
            cell(row, String(count), "total");
          }
        }

        function chart(entry, title, lines) {
          const points = entry.points, name = entry.name;
          const wrapper = document.createElement("div");
          wrapper.className = "chart";
          const heading = document.createElement("h3");
          const legend = document.createElement("div");
          legend.className = "legend";
          const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
          svg.setAttribute("viewBox", "0 0 300 90");
          svg.setAttribute("preserveAspectRatio", "none");
          svg.dataset[entry.kind] = name;
          svg.dataset.chart = title;
          const end = points.length ? points[points.length - 1].t : 0;
          // The width spans what there is, from 30 s up to the five minutes kept.
          const span = Math.min(windowSeconds, Math.max(30, points.length ? end - points[0].t : 0));
          heading.textContent = `${entry.kind} ${name} · ${title} · last ${Math.round(span)} s`;
          let max = 0;
          for (const line of lines) for (const p of points) if (p[line.key] !== null) max = Math.max(max, p[line.key]);
          if (lines[0].key === "success") max = 1;
          max = max > 0 ? max * 1.1 : 1;
          for (const line of lines) {
            const coordinates = points.filter(p => p[line.key] !== null)
              .map(p => `${(300 - (end - p.t) * 300 / span).toFixed(1)},${(88 - p[line.key] / max * 86).toFixed(1)}`);
            const polyline = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
            polyline.setAttribute("class", line.key);
            polyline.setAttribute("points", coordinates.join(" "));
            svg.appendChild(polyline);
            const last = points.length ? points[points.length - 1][line.key] : null;
            const label = document.createElement("span");
            label.className = line.key;
            label.style.color = colors[line.key];
            label.textContent = `${line.label}: ${last === null ? "–" : line.format(last)}`;
            legend.appendChild(label);
          }
          wrapper.append(heading, svg, legend);
          return wrapper;
        }

        function drawCharts() {
          const charts = document.getElementById("charts");
          charts.replaceChildren();
          for (const entry of Object.values(series)) {
            charts.appendChild(chart(entry, "requests/s", [{ key: "rps", label: "req/s", format: v => v.toFixed(1) }]));
            charts.appendChild(chart(entry, "success rate", [{ key: "success", label: "success", format: v => (v * 100).toFixed(2) + " %" }]));
            charts.appendChild(chart(entry, "latency", [{ key: "p50", label: "p50", format: ms }, { key: "p99", label: "p99", format: ms }]));
          }
        }

        function drawEndpoints(clusters) {
          const body = document.querySelector("#endpoints tbody");
          body.replaceChildren();
          for (const c of clusters) {
            for (const e of c.endpoints) {
              const row = body.insertRow();
              row.dataset.cluster = c.name;
              cell(row, c.name);
              cell(row, e.address);
              cell(row, e.health, e.health === "unhealthy" ? "bad" : "");
              const state = e.ejected ? "ejected" : e.draining ? "draining" : e.eligible ? "serving" : "not eligible";
              cell(row, state, state === "serving" ? "ok" : "warn");
              cell(row, e.breaker, e.breaker === "closed" ? "" : "bad");
              cell(row, text(e.activeRequests));
              cell(row, e.latencyEstimateMs === null ? "–" : e.latencyEstimateMs.toFixed(2) + " ms");
              cell(row, text(e.weight));
              cell(row, e.slowStartPercent === null || e.slowStartPercent === undefined ? "–" : `ramping, ${e.slowStartPercent} %`,
                   "slow-start" + (e.slowStartPercent === null || e.slowStartPercent === undefined ? "" : " warn"));
              cell(row, text(e.zone));
            }
          }
        }

        function drawReplies(now, previous) {
          const body = document.querySelector("#replies tbody");
          body.replaceChildren();
          const reasons = Object.entries(now.replies).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
          for (const [reason, count] of reasons) {
            const row = body.insertRow();
            row.dataset.reason = reason;
            cell(row, reason);
            cell(row, String(count), "count");
            const rate = previous ? (count - (previous.replies[reason] || 0)) / Math.max(now.t - previous.t, 0.001) : null;
            cell(row, rate === null ? "–" : rate.toFixed(1));
          }
          if (!reasons.length) cell(body.insertRow(), "none");
        }
        """#
    )
}
