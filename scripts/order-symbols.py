#!/usr/bin/env python3
"""Writes scripts/release-symbol-order.txt: the functions a sidecar runs, in the order the release link lays them out.

The release binary has 31 MB of code; a sidecar under load runs ~1.6 MB of it. The kernel maps a binary's code in
blocks of up to 128 KiB around each page first run, so code laid out in build order left ~17 MiB of it resident
(half the sidecar's RSS). Listed in this file, lld (`--symbol-ordering-file`, Package.swift) places the functions that
run next to each other at the front of `.text`.

How: the release binary (without its debug info, which valgrind cannot read) runs under callgrind, as a sidecar with
the listeners `make bench` uses (HTTP/1.1 and HTTP/2 upstreams, a traced listener exporting to a collector), while wrk,
h2load and curl drive each; every function callgrind saw run is listed. Functions that have a section of their own
come first (the project and its dependencies are compiled with function sections, Makefile); then those sharing one
`.text` section with the rest of their object (the toolchain's prebuilt libraries): each drags its whole section along,
so they go after the compact block instead of breaking it up.

Run after a change that moves much code (it takes ~1 minute), then relink:
    make release && scripts/order-symbols.py && rm .build/release/outrigger && make release
Needs swift, valgrind, wrk, h2load, curl, and objcopy, objdump and nm (binutils). The profile covers plain-text HTTP/1.1
and h2c, HTTP/2 upstreams, tracing and the admin; code only TLS, the control plane or retries run stays where the
build put it.
"""
import glob
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / ".build" / "release" / "outrigger"
OUTPUT = ROOT / "scripts" / "release-symbol-order.txt"


def free_ports(names):
    """A free port for each name: all bound at once, so that no two are the same."""
    sockets = [socket.socket() for _ in names]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {name: s.getsockname()[1] for name, s in zip(names, sockets)}
    finally:
        for s in sockets:
            s.close()


def stop(process, seconds=120):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(port, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"order-symbols: nothing listening on {port} after {seconds} s")


def executed_functions(work):
    """Every function the sidecar ran under callgrind, hottest first."""
    stripped = work / "outrigger"
    subprocess.run(["objcopy", "--strip-debug", str(BINARY), str(stripped)], check=True)
    ports = free_ports(("echo", "sink", "plain", "traced", "h2up", "admin"))
    config = work / "sidecar.yaml"
    config.write_text(f"""concurrency: 1
admin: {{address: 127.0.0.1:{ports['admin']}}}
listeners:
  - name: plain
    address: 127.0.0.1:{ports['plain']}
    routes: [{{cluster: echo}}]
  - name: traced
    address: 127.0.0.1:{ports['traced']}
    tracing: {{sampleRatio: 1}}
    routes: [{{cluster: echo}}]
  - name: over-http2
    address: 127.0.0.1:{ports['h2up']}
    routes: [{{cluster: echo-http2}}]
traceExport: {{endpoint: 'http://127.0.0.1:{ports['sink']}/bench?size=0'}}
clusters:
  - name: echo
    endpoints: [127.0.0.1:{ports['echo']}]
  - name: echo-http2
    protocol: http2
    endpoints: [127.0.0.1:{ports['echo']}]
""")
    profile = work / "callgrind.out"
    processes = []
    try:
        for name in ("echo", "sink"):
            processes.append(subprocess.Popen([str(BINARY), "echo", "--listen", f"127.0.0.1:{ports[name]}", "--threads", "1",
                                               "--name", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # SIGTERM ends the sidecar gracefully, and callgrind then writes the profile.
        processes.insert(0, subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={profile}",
                                              str(stripped), "proxy", "--config", str(config), "--log-level", "warning"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for name in ("echo", "sink", "plain", "traced", "h2up", "admin"):
            wait_for(ports[name])
        for name in ("plain", "traced", "h2up"):
            url = f"http://127.0.0.1:{ports[name]}/bench?size=128"
            subprocess.run(["wrk", "-t1", "-c8", "-d3s", url], capture_output=True, check=True)
            subprocess.run(["h2load", "-c2", "-m8", "-n2000", url], capture_output=True, check=True)
        for path in ("/stats", "/stats/prometheus", "/traces"):
            subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{ports['admin']}{path}"], check=True)
    finally:
        for process in processes:
            stop(process)
    # callgrind names a function once, where it first appears: `fn=(id) name` or `cfn=(id) name`; costs follow `fn=`.
    names, cost, current, after_call = {}, {}, None, False
    for line in profile.read_text(errors="replace").splitlines():
        if line.startswith("calls="):
            after_call = True  # the next line is the call's inclusive cost, not this function's own
            continue
        match = re.match(r"c?fn=\((\d+)\)(?: (.*))?$", line)
        if match:
            if match.group(2):
                names[match.group(1)] = match.group(2)
            if line.startswith("fn="):
                current = match.group(1)
        elif re.match(r"([+-]?\d+|\*)( \d+)+$", line):
            if current and not after_call:
                cost[current] = cost.get(current, 0) + int(line.split()[1])
            after_call = False
    # Only names the binary has: callgrind also names libc's functions, addresses it has no name for (`0x…`), and
    # recursion levels (`name'2`).
    in_binary = set(subprocess.run(["nm", "--defined-only", "--format=just-symbols", str(stripped)], capture_output=True,
                                   text=True, check=True).stdout.split())
    ordered, seen = [], set()
    for i in sorted(names, key=lambda i: -cost.get(i, 0)):
        name = re.sub(r"'\d+$", "", names[i])
        if name in in_binary and name not in seen:
            seen.add(name)
            ordered.append(name)
    return ordered


def symbols_in_shared_text():
    """Functions compiled into their object's one `.text` section (not a section of their own)."""
    target = subprocess.run(["swift", "-print-target-info"], capture_output=True, text=True, check=True).stdout
    toolchain_static = Path(target.split('"runtimeResourcePath": "')[1].split('"')[0]).parent / "swift_static" / "linux"
    objects = glob.glob(str(toolchain_static / "*.a")) + glob.glob(str(ROOT / ".build" / "release" / "**" / "*.o"), recursive=True)
    line = re.compile(r"^[0-9a-f]+ (.{7}) (\S+)\s+[0-9a-f]+\s+(?:\.hidden |\.protected )?(\S+)$")
    shared = set()
    for path in objects:
        table = subprocess.run(["objdump", "-t", path], capture_output=True, text=True).stdout
        for entry in table.splitlines():
            match = line.match(entry)
            if match and match.group(2) == ".text" and "F" in match.group(1):
                shared.add(match.group(3))
    return shared


def main():
    if not BINARY.exists():
        sys.exit("order-symbols: build first: make release")
    with tempfile.TemporaryDirectory(prefix="outrigger-order-") as work:
        functions = executed_functions(Path(work))
    shared = symbols_in_shared_text()
    ordered = [f for f in functions if f not in shared] + [f for f in functions if f in shared]
    OUTPUT.write_text("".join(name + "\n" for name in ordered))
    print(f"order-symbols: {len(ordered)} functions ({sum(1 for f in functions if f in shared)} in shared sections) "
          f"-> {OUTPUT.relative_to(ROOT)}; relink: rm .build/release/outrigger && make release")


if __name__ == "__main__":
    main()
