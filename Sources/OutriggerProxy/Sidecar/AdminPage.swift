/// The admin pages' shell (the sidecar's `/dashboard`, the control plane's `/mesh`): one self-contained document —
/// no CDN, no asset files — with the shared style and the loop that fetches `dataPath` every second and hands each
/// answer to the page's `update(data)`, then marks the header's status live.
public enum AdminPage {
    public static func html(title: String, dataPath: String, unreachable: String, style: String, header: String, main: String, script: String) -> String {
        """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>\(title)</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
          header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
          header h1 { font-size: 18px; margin: 0; }
          header span { opacity: .85; }
          main { padding: 16px 20px; }
          section { background: #fff; border: 1px solid #dfe3ea; border-radius: 6px; padding: 12px 16px; margin-bottom: 16px; }
          h2 { font-size: 15px; margin: 0 0 8px; }
          table { border-collapse: collapse; width: 100%; }
          th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f4; font-variant-numeric: tabular-nums; }
          th { font-weight: 600; color: #4a5365; }
          svg { width: 100%; height: 90px; display: block; }
          .bad { color: #c62828; font-weight: 600; } .ok { color: #1f7a45; } .warn { color: #b26a00; font-weight: 600; }
        \(style)
        </style>
        </head>
        <body>
        <header>
          <h1>\(title)</h1>
        \(header)
          <span id="status">connecting…</span>
        </header>
        <main>
        \(main)
        </main>
        <script>
        "use strict";
        function cell(row, value, className) { const td = row.insertCell(); td.textContent = value; if (className) td.className = className; return td; }
        \(script)
        async function poll() {
          const status = document.getElementById("status");
          try {
            const response = await fetch("\(dataPath)", { cache: "no-store" });
            if (!response.ok) throw new Error("HTTP " + response.status);
            update(await response.json());
            status.textContent = "live · " + new Date().toLocaleTimeString();
            status.dataset.updates = String(Number(status.dataset.updates || 0) + 1);
          } catch (error) {
            status.textContent = "\(unreachable): " + error.message;
          }
          setTimeout(poll, 1000);
        }
        poll();
        </script>
        </body>
        </html>
        """
    }
}
