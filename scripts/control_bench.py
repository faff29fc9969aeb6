#!/usr/bin/env python3
"""make bench-control: how fast outrigger control converges a mesh change on N sidecars.

For each N (100, 1,000, 5,000 by default): starts a release `outrigger control` (its own process, so its
CPU and memory are its own) and `outrigger control simulate --sidecars N`, which opens N ADS streams, one
connection each, that subscribe like sidecars, decode every resource and ACK; then edits the mesh file
(a route's weighted split moves), sends SIGHUP, and times each change from the edit to every sidecar's ACK
of the new routes (debounce included). Reports p50/p99/max per change, the control plane's CPU seconds per
change and its RSS. Writes benchmarks/results/control-<timestamp>.json and .md.

With --replicas K: K replicas (`outrigger control --store`) sharing one etcd (a single member, started here),
the simulated sidecars spread over them, each change an apply to etcd; CPU and memory are the replicas' summed.
With --rollout too, each change is a two-phase rollout (one wave): the report adds, per rollout, the time from the
request to the last sidecar's COMMIT, the mixed-generation window (first COMMIT to last), and etcd's writes and bytes.
With --failover: the time from the leader's death (SIGKILL: its lease must run out; SIGTERM: it revokes it) to the
next replica leading, for --replica-ttl-seconds 2 and 5, a few rounds each.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".build" / "release" / "outrigger"


def log(message):
    print(message, file=sys.stderr, flush=True)


def start_etcd(directory):
    etcd = subprocess.Popen(["etcd", "--name", "bench", "--data-dir", str(Path(directory) / "etcd"),
                             "--listen-client-urls", "http://127.0.0.1:0", "--advertise-client-urls", "http://127.0.0.1:0",
                             "--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0",
                             "--initial-cluster", "bench=http://127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = "serving insecure client requests on 127.0.0.1:"
    for line in etcd.stderr:
        if marker in line:
            port = int(line.split(marker, 1)[1].split(",", 1)[0])
            # Keep reading its output so it never blocks on a full pipe.
            subprocess.Popen(["cat"], stdin=etcd.stderr, stdout=subprocess.DEVNULL)
            return etcd, f"127.0.0.1:{port}"
    sys.exit("etcd did not start")


def run_replicas(sidecars, services, changes, replicas, rollout, switch_after):
    with tempfile.TemporaryDirectory() as directory:
        etcd, store = start_etcd(directory)
        controls = []
        try:
            for _ in range(replicas):
                control = subprocess.Popen([str(BINARY), "control", "--store", f"etcd://{store}", "--listen", "127.0.0.1:0", "--no-admin",
                                            "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                controls.append(control)
                line = control.stdout.readline()
                control.port = int(line.rsplit(":", 1)[1])
            report_file = Path(directory) / "report.json"
            started = time.monotonic()
            subprocess.run([str(BINARY), "control", "simulate", "--control", ",".join(f"127.0.0.1:{c.port}" for c in controls),
                            "--control-pid", ",".join(str(c.pid) for c in controls), "--store", f"etcd://{store}",
                            "--sidecars", str(sidecars), "--services", str(services), "--changes", str(changes),
                            "--json", str(report_file)] + (["--rollout", "--switch-after-milliseconds", str(switch_after)] if rollout else []),
                           check=True, timeout=900)
            log(f"  N={sidecars}, {replicas} replicas: {time.monotonic() - started:.1f} s in all")
            report = json.loads(report_file.read_text())
            report["replicas"] = replicas
            return report
        finally:
            for control in controls:
                control.terminate()
                control.wait(timeout=30)
            etcd.terminate()
            etcd.wait(timeout=30)


def start_replica(store, ttl):
    replica = subprocess.Popen([str(BINARY), "control", "--store", f"etcd://{store}", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                                "--replica-ttl-seconds", str(ttl), "--log-level", "warning"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    admin = int(replica.stdout.readline().rsplit(":", 1)[1])
    replica.stdout.readline()  # xds on ...
    return replica, admin


def leading(admin):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=1) as response:
            return json.loads(response.read()).get("replica", {}).get("leading") is True
    except OSError:
        return False


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit("timed out")
        time.sleep(0.005)


def failover(rounds):
    """The time from the leader's death to the next replica's /status saying it leads."""
    results = []
    with tempfile.TemporaryDirectory() as directory:
        etcd, store = start_etcd(directory)
        try:
            for ttl in (2, 5):
                for how in ("SIGKILL", "SIGTERM"):
                    times = []
                    for _ in range(rounds):
                        first, first_admin = start_replica(store, ttl)
                        wait_until(lambda: leading(first_admin))
                        second, second_admin = start_replica(store, ttl)
                        time.sleep(0.5)
                        started = time.monotonic()
                        (first.kill if how == "SIGKILL" else first.terminate)()
                        wait_until(lambda: leading(second_admin))
                        times.append((time.monotonic() - started) * 1000)
                        first.wait(timeout=30)
                        second.terminate()
                        second.wait(timeout=30)
                    log(f"  ttl {ttl} s, {how}: {', '.join(f'{t:.0f}' for t in times)} ms")
                    results.append({"ttl": ttl, "how": how, "milliseconds": times})
        finally:
            etcd.terminate()
            etcd.wait(timeout=30)
    return results


def run_one(sidecars, services, changes):
    with tempfile.TemporaryDirectory() as directory:
        mesh = Path(directory) / "mesh.yaml"
        mesh.write_text("services: [{name: placeholder, endpoints: [127.0.0.1:1]}]\n")
        control = subprocess.Popen([str(BINARY), "control", "--mesh", str(mesh), "--listen", "127.0.0.1:0", "--no-admin",
                                    "--log-level", "warning", "--watch-interval-milliseconds", "600000"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = control.stdout.readline()
            port = int(line.rsplit(":", 1)[1])
            report_file = Path(directory) / "report.json"
            started = time.monotonic()
            subprocess.run([str(BINARY), "control", "simulate", "--control", f"127.0.0.1:{port}", "--control-pid", str(control.pid),
                            "--mesh", str(mesh), "--sidecars", str(sidecars), "--services", str(services), "--changes", str(changes),
                            "--json", str(report_file)], check=True, timeout=900)
            log(f"  N={sidecars}: {time.monotonic() - started:.1f} s in all")
            return json.loads(report_file.read_text())
        finally:
            control.terminate()
            control.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sidecars", default="100,1000,5000", help="comma-separated N")
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=0, help="replicas sharing one etcd (0: one control plane and a mesh file)")
    parser.add_argument("--rollout", action="store_true", help="with --replicas: each change a two-phase rollout")
    parser.add_argument("--switch-after", type=int, default=150, help="with --rollout: milliseconds after a wave is written that its sidecars switch (0: on receipt)")
    parser.add_argument("--failover", type=int, default=0, help="measure leader failover this many rounds (nothing else)")
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing; run make release")
    if args.failover:
        lines = ["| replica TTL (s) | leader | failover median (ms) | max (ms) |", "|---:|---|---:|---:|"]
        for result in failover(args.failover):
            times = result["milliseconds"]
            lines.append(f"| {result['ttl']} | {result['how']} | {statistics.median(times):.0f} | {max(times):.0f} |")
        print("\n".join(lines))
        return
    reports = []
    for sidecars in [int(n) for n in args.sidecars.split(",")]:
        log(f"simulating {sidecars} sidecars")
        reports.append(run_replicas(sidecars, args.services, args.changes, args.replicas, args.rollout, args.switch_after) if args.replicas else run_one(sidecars, args.services, args.changes))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = ROOT / "benchmarks" / "results" / f"control-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(reports, indent=2) + "\n")
    how = (f"{args.replicas} replicas sharing one etcd member, the sidecars spread over them; each change "
           + ("a two-phase rollout through etcd" if args.rollout else "an apply to etcd")
           if args.replicas else "one control plane; each change a mesh file edit and SIGHUP")
    lines = [f"# outrigger control convergence, {stamp}", "",
             f"{how}. {args.services} services; each change moves a weighted split (RDS); from the change to every sidecar's ACK, "
             "debounce (100 ms) included; the window is the last ACK less the first (sidecars on different meshes). Medians over the changes.", "",
             "| sidecars | connect + first sync (s) | p50 (ms) | p99 (ms) | max (ms) | window (ms) | control CPU per change (s) | control RSS (MiB) | peak RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for report in reports:
        changes = report["changes"]
        median = lambda key: statistics.median(change[key] for change in changes)
        window = statistics.median(change["maxMilliseconds"] - change.get("minMilliseconds", 0) for change in changes)
        lines.append(f"| {report['sidecars']:,} | {report['connectSeconds']:.2f} | {median('p50Milliseconds'):.0f} | {median('p99Milliseconds'):.0f} | "
                     f"{max(change['maxMilliseconds'] for change in changes):.0f} | {window:.0f} | {median('controlCPUSeconds'):.3f} | "
                     f"{report['controlRSSMiB']:.1f} | {report['controlPeakRSSMiB']:.1f} |")
    if args.rollout:
        lines += ["", f"Rollouts (two-phase, one wave, --switch-after {args.switch_after}ms): from the request to the last sidecar's switch, "
                  "the window from the first switch to the last, etcd writes (revisions) and bytes written, per rollout.", "",
                  "| sidecars | rollout p50 (ms) | rollout max (ms) | window p50 (ms) | window max (ms) | etcd writes | etcd bytes | replicas' CPU (s) | simulator CPU (s) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for report in reports:
            changes = report["changes"]
            total = [change["rolloutMilliseconds"] for change in changes]
            window = [change["windowMilliseconds"] for change in changes]
            lines.append(f"| {report['sidecars']:,} | {statistics.median(total):.0f} | {max(total):.0f} | {statistics.median(window):.0f} | "
                         f"{max(window):.0f} | {statistics.median(change['etcdWrites'] for change in changes):.0f} | "
                         f"{statistics.median(change['etcdBytes'] for change in changes):,.0f} | {median('controlCPUSeconds'):.3f} | "
                         f"{median('simulatorCPUSeconds'):.3f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {out}.json and .md")


if __name__ == "__main__":
    main()
