#!/usr/bin/env python3
"""make soak: the connection-level defences measured on the release build, four figures.

1. Idle connections at the limit: a listener with maxConnections N gets N + 200 keep-alive connections that
   each made one request and then sit idle; the ones over the limit are closed at accept, the admin keeps
   answering (its latency is measured), and the proxy's memory per idle connection is reported.
2. Slow readers: 500 clients ask for 4 MiB and stop reading; memory per stalled client while they hold, and
   what is left once sendTimeout has cut them.
3. Rapid reset across reconnects: 200 connections x 199 HEADERS+RST_STREAM pairs from 127.0.0.2 (each under
   the per-connection limit of 200); how many requests reach the upstream per 1,000 resets, how many
   connections were refused, and the latency of another client (127.0.0.1) meanwhile.
4. Soak: open loop at half the maximum rate for --minutes (10 by default), the proxy's resident memory sampled
   every 5 s; growth after the first minute, and every failed request.

Writes benchmarks/results/soak-<timestamp>.json and .md.
"""
import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BINARY, ROOT, Service, free_port, log, wait_for_port  # noqa: E402

RESET_SCRIPT = ROOT / "Tests" / "OutriggerEndToEndTests" / "Scripts" / "h2_rapid_reset.py"


class CountingUpstream:
    """An HTTP/1.1 upstream that counts the request heads it receives and answers each with 200."""

    def __init__(self):
        self.port = free_port()
        self.requests = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self):
        await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader, writer):
        self.connections += 1
        buffered = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buffered += data
                while b"\r\n\r\n" in buffered:
                    _, buffered = buffered.split(b"\r\n\r\n", 1)
                    self.requests += 1
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()


class Lab:
    """An echo upstream and one sidecar (1 event loop) with the config given, on fresh ports."""

    def __init__(self, work, listener_extra="", clusters_extra="", routes=None):
        self.work = work
        self.echo_port, self.port, self.admin_port = free_port(), free_port(), free_port()
        self.echo = Service("echo", [str(BINARY), "echo", "--listen", f"127.0.0.1:{self.echo_port}", "--threads", "1"], work)
        wait_for_port(self.echo_port, self.echo.process, "echo")
        routes = routes or "      - cluster: echo\n"
        config = work / f"sidecar-{self.port}.yaml"
        config.write_text(f"""concurrency: 1
admin: {{address: 127.0.0.1:{self.admin_port}}}
listeners:
  - name: main
    address: 127.0.0.1:{self.port}
{listener_extra}    routes:
{routes}clusters:
  - name: echo
    endpoints: [127.0.0.1:{self.echo_port}]
    pool: {{maxConnectionsPerEndpoint: 4096, maxPendingRequests: 100000}}
{clusters_extra}""")
        self.proxy = Service("proxy", [str(BINARY), "proxy", "--config", str(config)], work)
        wait_for_port(self.port, self.proxy.process, "proxy")
        wait_for_port(self.admin_port, self.proxy.process, "proxy admin")

    def rss_kib(self):
        return self.proxy.memory_kib("VmRSS")

    def stat(self, prefix):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats/prometheus", timeout=30).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    def admin_latency_ms(self, count=10):
        samples = []
        for _ in range(count):
            start = time.monotonic()
            urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/stats", timeout=30).read()
            samples.append((time.monotonic() - start) * 1000)
        return round(statistics.median(samples), 2), round(max(samples), 2)

    def stop(self):
        self.proxy.stop()
        self.echo.stop()


def raise_descriptor_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted), hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def settle(seconds=1.0):
    time.sleep(seconds)


def idle_at_limit(work, limit):
    lab = Lab(work, listener_extra=f"    maxConnections: {limit}\n")
    try:
        settle()
        before = lab.rss_kib()
        sockets, refused = [], 0
        request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        for _ in range(limit + 200):
            s = socket.create_connection(("127.0.0.1", lab.port))
            s.settimeout(10)
            try:
                s.sendall(request)
                data = s.recv(65536)
                if data.startswith(b"HTTP/1.1 200"):
                    sockets.append(s)
                    continue
            except OSError:
                pass
            refused += 1
            s.close()
        settle(2)
        held_rss = lab.rss_kib()
        admin_p50, admin_max = lab.admin_latency_ms()
        active = lab.stat('outrigger_downstream_connections_active{listener="main"}')
        over = lab.stat('outrigger_downstream_connections_closed_total{listener="main",reason="listener_limit"}')
        for s in sockets:
            s.close()
        return {"limit": limit, "held": len(sockets), "refused": refused, "active_per_admin": active,
                "closed_at_accept": over, "admin_stats_p50_ms": admin_p50, "admin_stats_max_ms": admin_max,
                "rss_before_kib": before, "rss_held_kib": held_rss,
                "kib_per_idle_connection": round((held_rss - before) / max(len(sockets), 1), 2)}
    finally:
        lab.stop()


def slow_readers(work, clients, size, send_timeout):
    lab = Lab(work, listener_extra=f"    sendTimeout: {send_timeout}s\n")
    try:
        settle()
        before = lab.rss_kib()
        sockets = []
        for _ in range(clients):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", lab.port))
            s.sendall(f"GET /?size={size} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            sockets.append(s)
        settle(min(10, send_timeout / 2))
        stalled = lab.rss_kib()
        deadline = time.monotonic() + send_timeout * 3 + 30
        while time.monotonic() < deadline and lab.stat('outrigger_downstream_connections_closed_total{listener="main",reason="send_timeout"}') < clients:
            time.sleep(1)
        cut = lab.stat('outrigger_downstream_connections_closed_total{listener="main",reason="send_timeout"}')
        settle(2)
        after = lab.rss_kib()
        for s in sockets:
            s.close()
        return {"clients": clients, "response_bytes": size, "send_timeout_s": send_timeout,
                "rss_before_kib": before, "rss_stalled_kib": stalled,
                "kib_per_stalled_client": round((stalled - before) / clients, 2),
                "cut_by_send_timeout": cut, "rss_after_cut_kib": after}
    finally:
        lab.stop()


def rapid_reset(work, connections, streams, ledger=True):
    """With the per-address ledger, and without it (every connection served: what reaches the upstream then
    is what a stream reset in the read that opened it still costs)."""
    upstream = CountingUpstream()
    routes = "      - match: {prefix: /attack}\n        cluster: counted\n      - cluster: echo\n"
    clusters = f"  - name: counted\n    endpoints: [127.0.0.1:{upstream.port}]\n"
    listener_extra = "" if ledger else "    rapidReset: {maxResetsPerAddress: 0}\n"
    lab = Lab(work, listener_extra=listener_extra, routes=routes, clusters_extra=clusters)
    try:
        settle()
        bystander = work / "bystander.json"
        seconds = 20
        other = subprocess.Popen([str(BINARY), "bench", f"http://127.0.0.1:{lab.port}/", "--rate", "200", "-c", "4",
                                  "--duration", f"{seconds}s", "--warmup", "0s", "--json", str(bystander)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        start = time.monotonic()
        result = subprocess.run([sys.executable, "-c", ATTACK, str(RESET_SCRIPT), str(lab.port), str(connections), str(streams)],
                                capture_output=True, text=True, timeout=600)
        attack_seconds = time.monotonic() - start
        other.wait(timeout=seconds + 60)
        attack = json.loads(result.stdout)
        legit = json.loads(bystander.read_text())
        resets = attack["resets"]
        return {"connections": connections, "streams_per_connection": streams, "resets_sent": attack["sent"], "resets_read": resets,
                "attack_seconds": round(attack_seconds, 1), "connections_served": attack["served"],
                "connections_refused": attack["refused"], "goaways": attack["goaways"],
                "upstream_requests": upstream.requests, "upstream_connections": upstream.connections,
                "upstream_requests_per_1000_resets": round(upstream.requests * 1000 / max(resets, 1), 2),
                "bystander": {"completed": legit["completed"], "failed": legit["failed"],
                              "p50_ms": legit["latencyMilliseconds"]["p50"], "p99_ms": legit["latencyMilliseconds"]["p99"],
                              "max_ms": legit["latencyMilliseconds"]["max"]}}
    finally:
        lab.stop()


# The attack script's connections, sent from 127.0.0.2 (the bystander is 127.0.0.1).
ATTACK = """
import runpy, sys
script, port, connections, streams = sys.argv[1:5]
sys.argv = [script, port, connections, streams, "127.0.0.2", "/attack"]
runpy.run_path(script, run_name="__main__")
"""


def soak(work, minutes):
    lab = Lab(work)
    try:
        settle()
        probe = work / "max.json"
        subprocess.run([str(BINARY), "bench", f"http://127.0.0.1:{lab.port}/", "--max", "-c", "16", "--duration", "10s",
                        "--json", str(probe)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        maximum = json.loads(probe.read_text())["achievedRate"]
        rate = int(maximum / 2)
        report = work / "soak.json"
        seconds = int(minutes * 60)
        runner = subprocess.Popen([str(BINARY), "bench", f"http://127.0.0.1:{lab.port}/", "--rate", str(rate), "-c", "32",
                                   "--duration", f"{seconds}s", "--warmup", "0s", "--json", str(report)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = []
        start = time.monotonic()
        while runner.poll() is None:
            samples.append((round(time.monotonic() - start, 1), lab.rss_kib()))
            time.sleep(5)
        r = json.loads(report.read_text())
        warm = [rss for at, rss in samples if at >= 60] or [samples[-1][1]]
        return {"max_rate": round(maximum), "rate": rate, "minutes": minutes, "completed": r["completed"],
                "failed": r["failed"], "p99_ms": r["latencyMilliseconds"]["p99"],
                "rss_after_warmup_kib": warm[0], "rss_end_kib": warm[-1], "rss_max_after_warmup_kib": max(warm),
                "growth_after_warmup_kib": warm[-1] - warm[0], "samples": samples}
    finally:
        lab.stop()


def render(report):
    i, s, k = report["idle_at_limit"], report["slow_readers"], report["soak"]

    def reset_row(name, r):
        b = r["bystander"]
        return (f"| {name} | {r['resets_sent']} resets sent on {r['connections']} connections in {r['attack_seconds']} s, {r['resets_read']} of them on "
                f"connections the sidecar served: {r['upstream_requests_per_1000_resets']} upstream requests per 1,000 of those "
                f"({r['upstream_requests']} requests, {r['upstream_connections']} upstream connections); {r['connections_served']} connections served, "
                f"{r['connections_refused']} refused; bystander at 200 req/s: {b['completed']} ok, {b['failed']} failed, p50 {b['p50_ms']} ms, "
                f"p99 {b['p99_ms']} ms, max {b['max_ms']} ms |")
    return f"""# Soak and defences — {report['time']}

Release build, 1 event loop, this machine ({report['machine']}).

| figure | result |
|---|---|
| idle connections at the limit | {i['held']} held at maxConnections {i['limit']}, {i['refused']} over it closed at accept; admin `/stats` p50 {i['admin_stats_p50_ms']} ms, max {i['admin_stats_max_ms']} ms; {i['kib_per_idle_connection']} KiB RSS per idle connection |
| slow readers | {s['clients']} clients stalled on {s['response_bytes'] // 1048576} MiB: {s['kib_per_stalled_client']} KiB RSS each; {int(s['cut_by_send_timeout'])} cut after sendTimeout {s['send_timeout_s']} s; RSS {s['rss_before_kib']} → {s['rss_stalled_kib']} → {s['rss_after_cut_kib']} KiB |
{reset_row('rapid reset', report['rapid_reset'])}
{reset_row('rapid reset, ledger off (maxResetsPerAddress: 0)', report['rapid_reset_ledger_off'])}
| soak | {k['minutes']} min at {k['rate']} req/s (half of {k['max_rate']}): {k['completed']} ok, {k['failed']} failed, p99 {k['p99_ms']} ms; RSS after the first minute {k['rss_after_warmup_kib']} KiB, at the end {k['rss_end_kib']} KiB (growth {k['growth_after_warmup_kib']} KiB, max {k['rss_max_after_warmup_kib']} KiB) |
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="length of the soak (default 10)")
    parser.add_argument("--limit", type=int, default=5000, help="maxConnections for the idle-connection figure")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit("soak: build the release binary first (make release)")
    raise_descriptor_limit(4 * args.limit + 1000)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="outrigger-soak-") as directory:
        work = Path(directory)
        report = {"time": stamp, "machine": f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores"}
        log("soak: idle connections at the limit")
        report["idle_at_limit"] = idle_at_limit(work, args.limit)
        log("soak: slow readers")
        report["slow_readers"] = slow_readers(work, 500, 4 * 1048576, 20)
        log("soak: rapid reset across reconnects")
        report["rapid_reset"] = rapid_reset(work, 200, 199)
        report["rapid_reset_ledger_off"] = rapid_reset(work, 200, 199, ledger=False)
        log(f"soak: {args.minutes} minutes at half the maximum rate")
        report["soak"] = soak(work, args.minutes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"soak-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"soak-{stamp}.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
