#!/usr/bin/env python3
"""make bench / make bench-quick: Outrigger against HAProxy and nginx, same machine, same run.

Upstreams: the built-in echo server (1 event loop) and nginx serving a static response (1 worker).
Targets: direct to the upstream, Outrigger with 1 event loop, Outrigger with its default (one per core),
HAProxy (nbthread 1) and nginx (worker_processes 1, upstream keepalive). Every run of every kind is
interleaved across the targets, round after round, so drift of the machine hits all of them alike.

1. Max throughput, closed loop: HTTP/1.1 with wrk, HTTP/2 (h2c) with h2load; HTTP/1.1 also to the nginx
   static upstream, so the echo server cannot be what limits the proxies; HTTP/1.1 and h2c to the echo over
   HTTP/2 (the gRPC path; Outrigger and HAProxy, nginx has no HTTP/2 upstreams).
2. Latency at fixed rates, open loop (outrigger bench, coordinated-omission corrected): 1,000 req/s and
   50 % and 75 % of the slowest proxy's max throughput, HTTP/1.1 and h2c; added latency = target - direct.
3. For each run, CPU seconds per 10,000 requests of the target's processes; peak RSS of each at the end.

Medians over the rounds are reported. Writes benchmarks/results/<timestamp>.json, .md and .svg.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".build" / "release" / "outrigger"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROXIES = ["outrigger-1", "outrigger-default", "haproxy", "nginx"]
PROTOCOLS = ["http1", "h2c"]


def log(message):
    print(message, file=sys.stderr, flush=True)


_ports_given = set()


def free_port():
    """A port free now, and not one given before: the kernel may hand a closed probe's port out again, and two roles
    given the same port failed the run (HAProxy could not bind one outrigger-1 listened on)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port


def wait_for_port(port, process, name):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"bench: {name} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {name} is not listening on port {port}")


def find_tool(name):
    for directory in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    sys.exit(f"bench: {name} is missing (scripts/install-deps.sh --bench installs it)")


# Executables run from copies in the run's directory, so that each measured proxy runs from a file no other process
# of the run uses: processes run from one file share its page cache, and the kernel maps cached pages around each
# page a process first touches. Run from the sidecar's own file, the echo upstream put ~1 MiB more into the sidecar's
# RSS (measured); the same holds for the second Outrigger and the nginx serving the static upstream.
COPIES = {"fixture": "outrigger-fixture",  # the echo upstream, the trace sink and the open-loop client
          "outrigger-default": "outrigger-default", "nginx-static": "nginx-static"}


def copy_path(work, role):
    return work / COPIES[role]


def read_from_disk_when_started(executables):
    """Drops each executable's pages from the page cache, so that its first run reads it from disk as a deployed
    binary's does. A binary just written (the release link, a copy) sits in the cache in the write path's large folios,
    and the kernel then maps more of it around each page first run: Outrigger's file-backed RSS at start was 15.5 MiB
    just after its link and 14.3 MiB read from disk, the same binary. Done for every executable the run starts."""
    for path in executables:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # only clean pages leave the cache
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Service:
    """A started process and its children: CPU time and peak resident memory read from /proc."""

    def __init__(self, name, argv, work):
        self.name = name
        self.log_path = work / f"{name}.log"
        self.process = subprocess.Popen(argv, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def pids(self):
        family, frontier = [self.process.pid], [self.process.pid]
        while frontier:
            parent, frontier = frontier, []
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    except (OSError, IndexError, ValueError):
                        continue
                    if ppid in parent and int(entry.name) not in family:
                        family.append(int(entry.name))
                        frontier.append(int(entry.name))
        return family

    def cpu_seconds(self):
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return total / CLOCK_TICKS

    def memory_kib(self, field):
        """A /proc/PID/status field (VmHWM: peak resident; RssAnon: resident heap and stacks, no code) summed."""
        total = 0
        for pid in self.pids():
            try:
                match = re.search(field + r":\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
                total += int(match.group(1)) if match else 0
            except OSError:
                pass
        return total

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def nginx_config(work, name, body):
    return f"""worker_processes 1;
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path {work}/{name}-body;
  proxy_temp_path {work}/{name}-proxy;
  fastcgi_temp_path {work}/{name}-fastcgi;
  uwsgi_temp_path {work}/{name}-uwsgi;
  scgi_temp_path {work}/{name}-scgi;
{body}
}}
"""


class Lab:
    """The upstreams and the proxies, started once for the whole run."""

    def __init__(self, work, body_bytes, nginx, haproxy):
        self.work = work
        self.services = {}
        ports = {key: free_port() for key in [
            "echo", "static", "o1", "o1_static", "od", "od_static", "ha_h1", "ha_h2", "ha_static",
            "ng_h1", "ng_h2", "ng_static", "o1_admin", "od_admin", "o1_h2up", "od_h2up", "ha_h2up", "ha_h2up_h2",
            "o1_untraced", "o1_traced", "trace_sink"]}
        self.ports = ports
        self.start("echo", [str(copy_path(work, "fixture")), "echo", "--listen", f"127.0.0.1:{ports['echo']}", "--threads", "1",
                            "--name", "upstream"], ports["echo"])
        static_body = "x" * body_bytes
        (work / "static.conf").write_text(nginx_config(work, "static", f"""
  server {{ listen 127.0.0.1:{ports['static']}; location / {{ return 200 "{static_body}"; }} }}"""))
        self.start("nginx-static", [str(copy_path(work, "nginx-static")), "-p", str(work), "-c", str(work / "static.conf"), "-e",
                                    str(work / "static.stderr.log")], ports["static"])
        # Where outrigger-1 sends its spans: a collector of its own (an echo that takes the POSTs), not the upstream.
        self.start("trace-sink", [str(copy_path(work, "fixture")), "echo", "--listen", f"127.0.0.1:{ports['trace_sink']}", "--threads", "1",
                                  "--name", "sink"], ports["trace_sink"])
        # outrigger-1 also has the echo behind listeners that differ only in tracing: off, and every request sampled
        # (its own listeners trace at the default 1 %); spans go to the sink.
        tracing_listeners = f"""
  - name: echo-untraced
    address: 127.0.0.1:{ports['o1_untraced']}
    tracing: {{mode: forward}}
    routes: [{{cluster: echo}}]
  - name: echo-traced
    address: 127.0.0.1:{ports['o1_traced']}
    tracing: {{sampleRatio: 1}}
    routes: [{{cluster: echo}}]
traceExport: {{endpoint: 'http://127.0.0.1:{ports['trace_sink']}/bench?size=0', maxQueuedSpans: 65536}}"""
        for name, concurrency, port, static, admin, h2up in [("outrigger-1", "concurrency: 1", "o1", "o1_static", "o1_admin", "o1_h2up"),
                                                             ("outrigger-default", "", "od", "od_static", "od_admin", "od_h2up")]:
            config = work / f"{name}.yaml"
            config.write_text(f"""{concurrency}
admin: {{address: 127.0.0.1:{ports[admin]}}}
listeners:
  - name: echo
    address: 127.0.0.1:{ports[port]}
    routes: [{{cluster: echo}}]
  - name: static
    address: 127.0.0.1:{ports[static]}
    routes: [{{cluster: static}}]
  - name: echo-over-http2
    address: 127.0.0.1:{ports[h2up]}
    routes: [{{cluster: echo-http2}}]
clusters:
  - name: echo
    endpoints: [127.0.0.1:{ports['echo']}]
  - name: static
    endpoints: [127.0.0.1:{ports['static']}]
  - name: echo-http2
    protocol: http2
    endpoints: [127.0.0.1:{ports['echo']}]
""".replace("clusters:", (tracing_listeners.lstrip("\n") + "\nclusters:") if name == "outrigger-1" else "clusters:"))
            extra = [ports["o1_untraced"], ports["o1_traced"]] if name == "outrigger-1" else []
            executable = BINARY if name == "outrigger-1" else copy_path(work, "outrigger-default")
            self.start(name, [str(executable), "proxy", "--config", str(config), "--log-level", "warning"], ports[port], ports[static], ports[h2up], *extra)
        (work / "haproxy.cfg").write_text(f"""global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend echo
  bind 127.0.0.1:{ports['ha_h1']}
  bind 127.0.0.1:{ports['ha_h2']} proto h2
  default_backend echo
frontend static
  bind 127.0.0.1:{ports['ha_static']}
  default_backend static
frontend echo-over-http2
  bind 127.0.0.1:{ports['ha_h2up']}
  bind 127.0.0.1:{ports['ha_h2up_h2']} proto h2
  default_backend echo-http2
backend echo
  server upstream 127.0.0.1:{ports['echo']}
backend echo-http2
  server upstream 127.0.0.1:{ports['echo']} proto h2
backend static
  server upstream 127.0.0.1:{ports['static']}
""")
        self.start("haproxy", [haproxy, "-f", str(work / "haproxy.cfg"), "-db"], ports["ha_h1"], ports["ha_h2"], ports["ha_static"],
                   ports["ha_h2up"], ports["ha_h2up_h2"])
        proxy_location = """location / {{ proxy_pass http://{0}; proxy_http_version 1.1; proxy_set_header Connection ""; }}"""
        (work / "nginx.conf").write_text(nginx_config(work, "nginx", f"""
  upstream echo {{ server 127.0.0.1:{ports['echo']}; keepalive 128; keepalive_requests 10000000; }}
  upstream static {{ server 127.0.0.1:{ports['static']}; keepalive 128; keepalive_requests 10000000; }}
  server {{ listen 127.0.0.1:{ports['ng_h1']}; {proxy_location.format('echo')} }}
  server {{ listen 127.0.0.1:{ports['ng_h2']} http2; {proxy_location.format('echo')} }}
  server {{ listen 127.0.0.1:{ports['ng_static']}; {proxy_location.format('static')} }}"""))
        self.start("nginx", [nginx, "-p", str(work), "-c", str(work / "nginx.conf"), "-e",
                             str(work / "nginx.stderr.log")], ports["ng_h1"], ports["ng_h2"], ports["ng_static"])
        # Where each target listens, per kind of run, and whose CPU the run is charged to.
        # `*-h2up`: the same echo reached over HTTP/2 (the gRPC path); nginx proxies to HTTP/1.1 upstreams only.
        self.targets = {
            "direct": {"http1": ports["echo"], "h2c": ports["echo"], "static": ports["static"], "http1-h2up": ports["echo"],
                       "h2c-h2up": ports["echo"], "service": "echo", "static_service": "nginx-static"},
            "outrigger-1": {"http1": ports["o1"], "h2c": ports["o1"], "static": ports["o1_static"], "http1-h2up": ports["o1_h2up"],
                            "h2c-h2up": ports["o1_h2up"], "service": "outrigger-1", "static_service": "outrigger-1"},
            "outrigger-default": {"http1": ports["od"], "h2c": ports["od"], "static": ports["od_static"], "http1-h2up": ports["od_h2up"],
                                  "h2c-h2up": ports["od_h2up"], "service": "outrigger-default", "static_service": "outrigger-default"},
            "haproxy": {"http1": ports["ha_h1"], "h2c": ports["ha_h2"], "static": ports["ha_static"], "http1-h2up": ports["ha_h2up"],
                        "h2c-h2up": ports["ha_h2up_h2"], "service": "haproxy", "static_service": "haproxy"},
            "nginx": {"http1": ports["ng_h1"], "h2c": ports["ng_h2"], "static": ports["ng_static"], "service": "nginx", "static_service": "nginx"},
        }

    def start(self, name, argv, *ports):
        service = Service(name, argv, self.work)
        self.services[name] = service
        for port in ports:
            wait_for_port(port, service.process, name)

    def stop(self):
        for service in reversed(list(self.services.values())):
            service.stop()


def run_tool(argv, timeout):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {(result.stderr + result.stdout).strip()[-500:]} ({' '.join(argv)})")
    return result.stdout


def milliseconds(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk_run(url, connections, seconds):
    out = run_tool(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url], seconds + 30)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "completed": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50_ms": milliseconds(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)),
        "p99_ms": milliseconds(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)),
        "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
    }


def h2load_run(url, connections, streams, seconds, work):
    log_file = work / "h2load.log"
    out = run_tool(["h2load", f"-c{connections}", f"-m{streams}", "-D", f"{seconds:g}", f"--log-file={log_file}", url],
                   seconds + 30)
    times = sorted(int(line.split("\t")[2]) / 1000 for line in log_file.read_text().splitlines() if line.strip())
    percentile = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))] if times else 0.0
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    return {
        "rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1)),
        "completed": int(done.group(2)),
        "p50_ms": percentile(50), "p99_ms": percentile(99),
        "errors": int(done.group(3)) + int(done.group(4)),
    }


def open_loop_run(url, protocol, rate, seconds, warmup, work):
    report = work / "open-loop.json"
    shape = ["-c", "2", "--http2", "-m", "64"] if protocol == "h2c" else ["-c", "64"]
    run_tool([str(copy_path(work, "fixture")), "bench", url, "--rate", str(rate), *shape, "--duration", f"{seconds:g}s",
              "--warmup", f"{warmup}s", "--json", str(report)], seconds + warmup + 30)
    r = json.loads(report.read_text())
    latency = r["latencyMilliseconds"]
    return {"rps": r["achievedRate"], "completed": r["completed"], "errors": r["failed"],
            **{f"{key}_ms": latency[key] for key in ("min", "p50", "p90", "p99", "p99.9", "max")}}


def measured(lab, target, run, service_key="service"):
    """Runs one load and charges the CPU the target's processes used meanwhile."""
    service = lab.services[lab.targets[target][service_key]]
    before = service.cpu_seconds()
    result = run()
    used = service.cpu_seconds() - before
    result["cpu_s_per_10k"] = used / result["completed"] * 10_000 if result["completed"] else None
    return result


def closed_loop_ours(url, protocol, connections, streams, seconds, work):
    report = work / "closed-loop.json"
    shape = ["-c", str(connections)] + (["--http2", "-m", str(streams)] if protocol == "h2c" else [])
    run_tool([str(BINARY), "bench", url, "--max", *shape, "--duration", f"{seconds:g}s", "--warmup", "1s",
              "--json", str(report)], seconds + 40)
    r = json.loads(report.read_text())
    return {"rps": r["achievedRate"], "completed": r["completed"], "errors": r["failed"],
            "p50_ms": r["latencyMilliseconds"]["p50"], "p99_ms": r["latencyMilliseconds"]["p99"]}


def validate(args, rounds, seconds):
    """outrigger bench against wrk and h2load at the same closed-loop load on the echo server, alternating;
    prints each tool's runs, its spread across runs (the noise) and the difference between the tools."""
    work = Path(tempfile.mkdtemp(prefix="outrigger-bench-validate-"))
    port = free_port()
    echo = Service("echo", [str(BINARY), "echo", "--listen", f"127.0.0.1:{port}", "--threads", "1"], work)
    wait_for_port(port, echo.process, "echo")
    url = f"http://127.0.0.1:{port}/bench?size={args.body}"
    runs = {"wrk": [], "outrigger bench (HTTP/1.1)": [], "h2load": [], "outrigger bench (h2c)": []}
    try:
        for _ in range(rounds):
            runs["wrk"].append(wrk_run(url, args.connections, seconds))
            runs["outrigger bench (HTTP/1.1)"].append(closed_loop_ours(url, "http1", args.connections, 1, seconds, work))
            runs["h2load"].append(h2load_run(url, args.h2_connections, args.h2_streams, seconds, work))
            runs["outrigger bench (h2c)"].append(closed_loop_ours(url, "h2c", args.h2_connections, args.h2_streams, seconds, work))
    finally:
        echo.stop()
    lines = [f"# outrigger bench vs wrk and h2load, closed loop on the echo server, {rounds} alternating runs of {seconds:g} s", "",
             f"HTTP/1.1: {args.connections} connections; h2c: {args.h2_connections} connections x {args.h2_streams} streams.", "",
             "| tool | req/s runs | median | spread | p50 ms (median) | p99 ms (median) |", "|---|---|---|---|---|---|"]
    for tool, results in runs.items():
        rates = [r["rps"] for r in results]
        median = statistics.median(rates)
        lines.append(f"| {tool} | {' / '.join(f'{x:,.0f}' for x in rates)} | {median:,.0f} | "
                     f"{(max(rates) - min(rates)) / median * 100:.1f} % | {statistics.median(r['p50_ms'] for r in results):.2f} | "
                     f"{statistics.median(r['p99_ms'] for r in results):.2f} |")
    for ours, theirs in (("outrigger bench (HTTP/1.1)", "wrk"), ("outrigger bench (h2c)", "h2load")):
        a, b = (statistics.median(r["rps"] for r in runs[t]) for t in (ours, theirs))
        lines.append(f"\n{ours} / {theirs}: {a / b:.3f}")
    print("\n".join(lines))


def median_of(runs):
    merged = {"runs": runs}
    for key in runs[0]:
        values = [run[key] for run in runs if run[key] is not None]
        merged[key] = statistics.median(values) if values else None
    merged["errors"] = sum(run["errors"] for run in runs)
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round, short runs, no default-concurrency Outrigger or static upstream (under 2 minutes)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="HTTP/1.1 connections of the closed-loop runs")
    parser.add_argument("--h2-connections", type=int, default=8)
    parser.add_argument("--h2-streams", type=int, default=16)
    parser.add_argument("--body", type=int, default=128, help="response body bytes")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--validate", action="store_true", help="only compare outrigger bench with wrk and h2load (closed loop, echo server)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2 if args.quick else 8)
    if args.validate:
        return validate(args, args.rounds or 5, args.seconds or 5)
    warmup = 0.5 if args.quick else 1
    if not BINARY.exists():
        sys.exit("bench: build first: make release")
    for tool in ("wrk", "h2load"):
        find_tool(tool)
    targets = ["direct", "outrigger-1", "haproxy", "nginx"] if args.quick else ["direct", *PROXIES]
    proxies = [t for t in targets if t != "direct"]

    work = Path(tempfile.mkdtemp(prefix="outrigger-bench-"))
    os.chmod(work, 0o755)  # nginx workers run as another user
    nginx, haproxy = find_tool("nginx"), find_tool("haproxy")
    path = f"/bench?size={args.body}"
    lab = None
    url = lambda target, kind: f"http://127.0.0.1:{lab.targets[target][kind]}{path if kind != 'static' else '/'}"
    started = time.monotonic()
    try:
        for role, source in (("fixture", BINARY), ("outrigger-default", BINARY), ("nginx-static", nginx)):
            shutil.copyfile(source, copy_path(work, role))
            os.chmod(copy_path(work, role), 0o755)
        read_from_disk_when_started([BINARY, nginx, haproxy, *(copy_path(work, role) for role in COPIES)])
        lab = Lab(work, args.body, nginx, haproxy)
        for target in targets:  # warm every path: connections, pools, caches
            wrk_run(url(target, "http1"), 4, 1)
            h2load_run(url(target, "h2c"), 1, 4, 1, work)
            if "http1-h2up" in lab.targets[target]:
                wrk_run(url(target, "http1-h2up"), 4, 1)
                h2load_run(url(target, "h2c-h2up"), 1, 4, 1, work)
        log(f"bench: {rounds} round(s) x {seconds:g} s per run; targets: {', '.join(targets)}")

        kinds = ["http1", "h2c"] + ([] if args.quick else ["http1-static", "http1-h2up", "h2c-h2up"])
        # Every target runs every kind but the HTTP/2-upstream ones, which nginx has not.
        closed = {kind: {t: [] for t in targets if not kind.endswith("-h2up") or kind in lab.targets[t]} for kind in kinds}
        for round_index in range(1, rounds + 1):
            for target in targets:
                closed["http1"][target].append(measured(lab, target, lambda: wrk_run(url(target, "http1"), args.connections, seconds)))
                closed["h2c"][target].append(measured(lab, target, lambda: h2load_run(url(target, "h2c"), args.h2_connections, args.h2_streams, seconds, work)))
                if "http1-static" in closed:
                    closed["http1-static"][target].append(measured(
                        lab, target, lambda: wrk_run(url(target, "static"), args.connections, seconds), "static_service"))
                if target in closed.get("http1-h2up", {}):
                    closed["http1-h2up"][target].append(measured(lab, target, lambda: wrk_run(url(target, "http1-h2up"), args.connections, seconds)))
                    closed["h2c-h2up"][target].append(measured(
                        lab, target, lambda: h2load_run(url(target, "h2c-h2up"), args.h2_connections, args.h2_streams, seconds, work)))
                log(f"  round {round_index} max {target}: http1 {closed['http1'][target][-1]['rps']:,.0f}, h2c {closed['h2c'][target][-1]['rps']:,.0f} req/s")
        max_throughput = {kind: {t: median_of(runs) for t, runs in per.items()} for kind, per in closed.items()}

        # Tracing's cost: outrigger-1 through listeners that differ only in tracing, interleaved (the order turns each
        # round), CPU of the whole process (the exporter's thread included). At least five rounds: the change against
        # off is the median of each round's own ratio, which cancels the machine's drift from minute to minute.
        tracing_cost = {}
        if not args.quick:
            variants = {"off (forward)": "o1_untraced", "1 % (the default)": "o1", "100 %, exported": "o1_traced"}
            runs = {kind: {v: [] for v in variants} for kind in PROTOCOLS}
            for round_index in range(1, max(rounds, 5) + 1):
                order = list(variants.items())
                shift = (round_index - 1) % len(order)
                for variant, port_key in order[shift:] + order[:shift]:
                    traced_url = f"http://127.0.0.1:{lab.ports[port_key]}{path}"
                    runs["http1"][variant].append(measured(lab, "outrigger-1", lambda: wrk_run(traced_url, args.connections, seconds)))
                    runs["h2c"][variant].append(measured(
                        lab, "outrigger-1", lambda: h2load_run(traced_url, args.h2_connections, args.h2_streams, seconds, work)))
                log(f"  round {round_index} tracing: " + ", ".join(f"{v} {runs['http1'][v][-1]['rps']:,.0f}" for v in variants) + " req/s (HTTP/1.1)")
            tracing_cost = {kind: {v: median_of(r) for v, r in per.items()} for kind, per in runs.items()}
            for kind, per in runs.items():
                for variant, variant_runs in per.items():
                    tracing_cost[kind][variant]["vs_off"] = statistics.median(
                        run["rps"] / off_run["rps"] - 1 for run, off_run in zip(variant_runs, per["off (forward)"]))

        rates = {}
        for protocol in PROTOCOLS:
            slowest = min(max_throughput[protocol][p]["rps"] for p in proxies)
            rates[protocol] = [1000, int(slowest * 0.5 // 100 * 100), int(slowest * 0.75 // 100 * 100)]
        fixed = {p: {str(r): {t: [] for t in targets} for r in rates[p]} for p in PROTOCOLS}
        for round_index in range(1, rounds + 1):
            for protocol in PROTOCOLS:
                for rate in rates[protocol]:
                    for target in targets:
                        fixed[protocol][str(rate)][target].append(measured(
                            lab, target, lambda: open_loop_run(url(target, protocol), protocol, rate, seconds, warmup, work)))
                    log(f"  round {round_index} {protocol} at {rate:,} req/s: p99 " + ", ".join(
                        f"{t} {fixed[protocol][str(rate)][t][-1]['p99_ms']:.2f}" for t in targets) + " ms")
        fixed_rate = {p: {r: {t: median_of(runs) for t, runs in per.items()} for r, per in by_rate.items()} for p, by_rate in fixed.items()}
        for protocol in PROTOCOLS:
            for rate, per in fixed_rate[protocol].items():
                for target, result in per.items():
                    for key in ("p50", "p90", "p99", "p99.9"):
                        result[f"added_{key}_ms"] = result[f"{key}_ms"] - per["direct"][f"{key}_ms"]
        peak_rss = {t: lab.services[lab.targets[t]["service"]].memory_kib("VmHWM") for t in proxies}
        anonymous_rss = {t: lab.services[lab.targets[t]["service"]].memory_kib("RssAnon") for t in proxies}
    finally:
        if lab:
            lab.stop()
        for role in COPIES:  # the logs stay in `work`; the copies (190 MB each of ours) go
            copy_path(work, role).unlink(missing_ok=True)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report = {
        "timestamp": stamp, "quick": args.quick, "elapsed_s": round(time.monotonic() - started),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
        "settings": {"rounds": rounds, "seconds_per_run": seconds, "wrk_connections": args.connections,
                     "h2load_connections": args.h2_connections, "h2load_streams": args.h2_streams,
                     "open_loop_http1_connections": 64, "open_loop_h2c": "2 connections x 64 streams",
                     "response_body_bytes": args.body, "rates": rates},
        "max_throughput": max_throughput, "tracing_cost": tracing_cost, "fixed_rate": fixed_rate, "peak_rss_kib": peak_rss,
        "anonymous_rss_kib_at_end": anonymous_rss,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.json").write_text(json.dumps(report, indent=2))
    markdown = render_markdown(report, targets, proxies)
    (out / f"{stamp}.md").write_text(markdown)
    (out / f"{stamp}.svg").write_text(render_svg(report, targets))
    print(markdown)
    log(f"bench: wrote {out}/{stamp}.json, .md and .svg ({report['elapsed_s']} s)")


def ratio(value, reference):
    return f"{value / reference:.2f}x" if value and reference else ""


def render_markdown(report, targets, proxies):
    s = report["settings"]
    lines = [f"# make bench{' (quick)' if report['quick'] else ''}, {report['timestamp']}", "",
             f"{report['machine']['cores']} cores, {report['machine']['platform']}. Medians of {s['rounds']} interleaved "
             f"round(s), {s['seconds_per_run']:g} s per run, {s['response_body_bytes']}-byte responses. "
             "Outrigger-1, HAProxy and nginx use one worker each; outrigger-default one event loop per core.", ""]
    titles = {"http1": f"HTTP/1.1, wrk -c{s['wrk_connections']}, echo upstream",
              "h2c": f"h2c, h2load -c{s['h2load_connections']} -m{s['h2load_streams']}, echo upstream",
              "http1-static": f"HTTP/1.1, wrk -c{s['wrk_connections']}, nginx static upstream",
              "http1-h2up": f"HTTP/1.1 to an HTTP/2 upstream, wrk -c{s['wrk_connections']}, echo upstream over h2c (direct: the echo over HTTP/1.1)",
              "h2c-h2up": f"h2c to an HTTP/2 upstream (the gRPC path), h2load -c{s['h2load_connections']} -m{s['h2load_streams']}, echo upstream over h2c"}
    lines += ["## Max throughput (closed loop)", ""]
    for kind, per in report["max_throughput"].items():
        lines += [f"### {titles[kind]}", "", "| target | req/s | runs | p50 ms | p99 ms | CPU s / 10k req | vs HAProxy | vs nginx | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in per:
            r = per[t]
            cpu = f"{r['cpu_s_per_10k']:.3f}" if r["cpu_s_per_10k"] is not None else ""
            runs = " / ".join(f"{x['rps']:,.0f}" for x in r["runs"])
            against = lambda other: "" if t == "direct" or other not in per else ratio(r["rps"], per[other]["rps"])
            lines.append(f"| {t} | {r['rps']:,.0f} | {runs} | {r['p50_ms']:.2f} | "
                         f"{r['p99_ms']:.2f} | {cpu} | {against('haproxy')} | {against('nginx')} | {r['errors']} |")
        lines.append("")
    if report.get("tracing_cost"):
        lines += ["## Tracing's cost (outrigger-1, closed loop)", "",
                  "The same process through listeners that differ only in tracing: off (`mode: forward`), the default "
                  "(participate, 1 % of traces sampled at their root) and every request sampled with its spans exported "
                  "(OTLP to a collector on the same machine). CPU is the whole process's, the exporter's thread included. "
                  "\"vs off\" is the median of each round's ratio to that round's off run.", "",
                  "| tracing | HTTP/1.1 req/s | vs off | CPU s / 10k | h2c req/s | vs off | CPU s / 10k |", "|---|---|---|---|---|---|---|"]
        cost = report["tracing_cost"]
        off = "off (forward)"
        for variant in cost["http1"]:
            h1, h2 = cost["http1"][variant], cost["h2c"][variant]
            change = lambda r, kind: "" if variant == off else f"{r['vs_off'] * 100:+.1f} %"
            lines.append(f"| {variant} | {h1['rps']:,.0f} | {change(h1, 'http1')} | {h1['cpu_s_per_10k']:.3f} | "
                         f"{h2['rps']:,.0f} | {change(h2, 'h2c')} | {h2['cpu_s_per_10k']:.3f} |")
        lines.append("")
    lines += ["## Latency at fixed rates (open loop, coordinated-omission corrected)", "",
              "Added = the target's percentile minus direct's, same rate. CPU of the target's processes per 10,000 requests.", ""]
    for protocol, by_rate in report["fixed_rate"].items():
        for rate, per in by_rate.items():
            lines += [f"### {protocol} at {int(rate):,} req/s", "",
                      "| target | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | added p50 | added p99 | added p99.9 | CPU s / 10k | errors |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for t in targets:
                r = per[t]
                added = "| | |" if t == "direct" else f"{r['added_p50_ms']:+.3f} | {r['added_p99_ms']:+.3f} | {r['added_p99.9_ms']:+.3f} |"
                lines.append(f"| {t} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
                             f"{r['p99.9_ms']:.3f} | {r['max_ms']:.2f} | {added} {r['cpu_s_per_10k']:.3f} | {r['errors']} |")
            lines.append("")
    lines += ["## Memory (all of the proxy's processes, after every run)", "",
              "Peak RSS (VmHWM) includes the pages of code mapped from the binary and shared libraries; anonymous RSS "
              "(RssAnon, at the end) is heap, stacks and buffers only.", "",
              "| proxy | peak RSS MiB | anonymous RSS MiB |", "|---|---|---|"]
    lines += [f"| {p} | {report['peak_rss_kib'][p] / 1024:.1f} | {report['anonymous_rss_kib_at_end'][p] / 1024:.1f} |" for p in proxies]
    h1, rss = report["max_throughput"]["http1"], report["peak_rss_kib"]["outrigger-1"] / 1024
    at1000 = report["fixed_rate"]["http1"]["1000"]
    lines += ["", "## Targets (one worker each)", "", "| goal | measured | met |", "|---|---|---|",
              f"| HTTP/1.1 max ≥ HAProxy | {h1['outrigger-1']['rps']:,.0f} vs {h1['haproxy']['rps']:,.0f} | {'yes' if h1['outrigger-1']['rps'] >= h1['haproxy']['rps'] else 'no'} |",
              f"| HTTP/1.1 max ≥ nginx | {h1['outrigger-1']['rps']:,.0f} vs {h1['nginx']['rps']:,.0f} | {'yes' if h1['outrigger-1']['rps'] >= h1['nginx']['rps'] else 'no'} |",
              f"| added p99 at 1,000 req/s ≤ HAProxy | {at1000['outrigger-1']['added_p99_ms']:+.3f} vs {at1000['haproxy']['added_p99_ms']:+.3f} ms | "
              f"{'yes' if at1000['outrigger-1']['added_p99_ms'] <= at1000['haproxy']['added_p99_ms'] else 'no'} |",
              f"| peak RSS ≤ 20 MiB | {rss:.1f} MiB | {'yes' if rss <= 20 else 'no'} |", ""]
    return "\n".join(lines)


def render_svg(report, targets):
    """Latency by percentile, one panel per protocol and rate, one line per target (log-log, like HdrHistogram plots)."""
    import math
    colors = {"direct": "#888888", "outrigger-1": "#d62728", "outrigger-default": "#ff9896", "haproxy": "#1f77b4", "nginx": "#2ca02c"}
    points = [("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 99.99)]
    panels = [(p, r, per) for p, by_rate in report["fixed_rate"].items() for r, per in by_rate.items()]
    columns, width, height, margin = 3, 330, 250, 50
    rows = math.ceil(len(panels) / columns)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{columns * width}" height="{rows * height + 60}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="18" font-size="14">Outrigger make bench {report["timestamp"]}: latency by percentile at fixed rates (open loop; lower is better)</text>']
    for x, t in enumerate(targets):
        svg.append(f'<rect x="{10 + x * 150}" y="28" width="12" height="4" fill="{colors[t]}"/><text x="{26 + x * 150}" y="34">{t}</text>')
    xpos = lambda p: math.log10(1 / (1 - p / 100))  # 50 → 0.3, 99.99 → 4
    for index, (protocol, rate, per) in enumerate(panels):
        ox, oy = (index % columns) * width + margin, (index // columns) * height + 60
        pw, ph = width - margin - 15, height - 60
        values = [per[t][f"{k}_ms"] for t in targets for k, _ in points if per[t][f"{k}_ms"] > 0]
        low, high = math.log10(min(values)), math.log10(max(values))
        if high - low < 0.5:
            high = low + 0.5
        ypos = lambda v: oy + ph - (math.log10(max(v, 10 ** low)) - low) / (high - low) * ph
        xs = lambda p: ox + (xpos(p) - xpos(50)) / (xpos(99.99) - xpos(50)) * pw
        svg.append(f'<text x="{ox}" y="{oy - 6}" font-size="12">{protocol} at {int(rate):,} req/s</text>')
        svg.append(f'<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>')
        for label, p in points:
            svg.append(f'<text x="{xs(p) - 10:.1f}" y="{oy + ph + 14}">{label}</text>')
            svg.append(f'<line x1="{xs(p):.1f}" y1="{oy}" x2="{xs(p):.1f}" y2="{oy + ph}" stroke="#eee"/>')
        for tick in range(math.floor(low), math.ceil(high) + 1):
            for mantissa in (1, 2, 5):
                value = mantissa * 10 ** tick
                if 10 ** low <= value <= 10 ** high:
                    svg.append(f'<text x="{ox - 4}" y="{ypos(value) + 4:.1f}" text-anchor="end">{value:g}</text>')
                    svg.append(f'<line x1="{ox}" y1="{ypos(value):.1f}" x2="{ox + pw}" y2="{ypos(value):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{ox - 38}" y="{oy + ph / 2}" transform="rotate(-90 {ox - 38} {oy + ph / 2})">ms</text>')
        for t in targets:
            line = " ".join(f"{xs(p):.1f},{ypos(per[t][f'{k}_ms']):.1f}" for k, p in points)
            svg.append(f'<polyline points="{line}" fill="none" stroke="{colors[t]}" stroke-width="2"/>')
    svg.append("</svg>")
    return "\n".join(svg)


if __name__ == "__main__":
    main()
