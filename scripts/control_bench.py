#!/usr/bin/env python3
"""make bench-control: how fast outrigger control converges a mesh change on N sidecars.

For each N (100, 1,000, 5,000 by default): starts a release `outrigger control` (its own process, so its
CPU and memory are its own) and `outrigger control simulate --sidecars N`, which opens N ADS streams, one
connection each, that subscribe like sidecars, decode every resource and ACK; then edits the mesh file
(a route's weighted split moves), sends SIGHUP, and times each change from the edit to every sidecar's ACK
of the new routes (debounce included). Reports p50/p99/max per change, the control plane's CPU seconds per
change and its RSS. Writes benchmarks/results/control-<timestamp>.json and .md.
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
    args = parser.parse_args()
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing; run make release")
    reports = []
    for sidecars in [int(n) for n in args.sidecars.split(",")]:
        log(f"simulating {sidecars} sidecars")
        reports.append(run_one(sidecars, args.services, args.changes))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = ROOT / "benchmarks" / "results" / f"control-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(reports, indent=2) + "\n")
    lines = [f"# outrigger control convergence, {stamp}", "",
             f"{args.services} services; each change moves a weighted split (RDS); from the mesh edit to every sidecar's ACK, "
             "debounce (100 ms) included. Medians over the changes.", "",
             "| sidecars | connect + first sync (s) | p50 (ms) | p99 (ms) | max (ms) | control CPU per change (s) | control RSS (MiB) | peak RSS (MiB) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for report in reports:
        changes = report["changes"]
        median = lambda key: statistics.median(change[key] for change in changes)
        lines.append(f"| {report['sidecars']:,} | {report['connectSeconds']:.2f} | {median('p50Milliseconds'):.0f} | {median('p99Milliseconds'):.0f} | "
                     f"{max(change['maxMilliseconds'] for change in changes):.0f} | {median('controlCPUSeconds'):.3f} | "
                     f"{report['controlRSSMiB']:.1f} | {report['controlPeakRSSMiB']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"wrote {out}.json and .md")


if __name__ == "__main__":
    main()
