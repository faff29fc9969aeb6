#!/usr/bin/env bash
# make bench (first form): one run, same machine, same upstream:
#   direct to the upstream  vs  through Outrigger (quick start, 1 event loop)  vs  through HAProxy (nbthread 1)
# HTTP/1.1 keep-alive with wrk, and h2c with h2load. Prints a table and writes benchmarks/results/<time>.{json,md}.
#
# Knobs (environment): DURATION (seconds per run, default 10), CONNECTIONS (wrk, default 32),
# H2_CONNECTIONS and H2_STREAMS (h2load, default 8 x 16), ROUNDS (default 3; the median is reported),
# BODY (upstream response body bytes, default 128), FIXED_RATE (req/s of the open-loop latency runs, default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
H2_CONNECTIONS=${H2_CONNECTIONS:-8}
H2_STREAMS=${H2_STREAMS:-16}
ROUNDS=${ROUNDS:-3}
BODY=${BODY:-128}
FIXED_RATE=${FIXED_RATE:-1000}
BIN=.build/release/outrigger
[ -x "$BIN" ] || { echo "bench: build first: swift build -c release" >&2; exit 1; }
for tool in wrk h2load haproxy python3; do
  command -v $tool >/dev/null || { echo "bench: $tool is missing (scripts/install-deps.sh --bench)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "bench: nothing on port $1" >&2; exit 1; }

UPSTREAM=$(free_port); OUTRIGGER=$(free_port); HAPROXY_H1=$(free_port); HAPROXY_H2=$(free_port)

"$BIN" echo --listen 127.0.0.1:$UPSTREAM --threads 1 --name upstream >"$work/echo.log" 2>&1 & pids+=($!)
wait_port $UPSTREAM
"$BIN" proxy --listen 127.0.0.1:$OUTRIGGER --upstream 127.0.0.1:$UPSTREAM --concurrency 1 --no-admin --log-level warning >"$work/outrigger.log" 2>&1 & pids+=($!)
outrigger_pid=$!
cat >"$work/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAPROXY_H1
  bind 127.0.0.1:$HAPROXY_H2 proto h2
  default_backend be
backend be
  server upstream 127.0.0.1:$UPSTREAM
EOF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 & pids+=($!)
haproxy_pid=$!
wait_port $OUTRIGGER; wait_port $HAPROXY_H1; wait_port $HAPROXY_H2

PATH_QUERY="/bench?size=$BODY"
declare -A H1_TARGET=([direct]=$UPSTREAM [outrigger]=$OUTRIGGER [haproxy]=$HAPROXY_H1)
declare -A H2_TARGET=([direct]=$UPSTREAM [outrigger]=$OUTRIGGER [haproxy]=$HAPROXY_H2)
results="$work/results.tsv"
: >"$results"

# Warm up every path once.
for name in direct outrigger haproxy; do
  wrk -t1 -c4 -d1s "http://127.0.0.1:${H1_TARGET[$name]}$PATH_QUERY" >/dev/null
done

echo "bench: ${ROUNDS} rounds x ${DURATION}s, interleaved; wrk -c$CONNECTIONS, h2load -c$H2_CONNECTIONS -m$H2_STREAMS, ${BODY}-byte responses" >&2
for round in $(seq 1 "$ROUNDS"); do
  for name in direct outrigger haproxy; do
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:${H1_TARGET[$name]}$PATH_QUERY")
    python3 - "$name" "$round" "$out" >>"$results" <<'PY'
import re, sys
name, rnd, out = sys.argv[1], sys.argv[2], sys.argv[3]
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(re.search(r"50%\s+(\S+)", out).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", out).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
socket_errors = re.search(r"Socket errors: (.*)", out)
print(f"http1\t{name}\t{rnd}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{(errors.group(1) if errors else '0')}\t{(socket_errors.group(1).strip() if socket_errors else '')}")
PY
    echo "  round $round http1 $name: $(tail -1 "$results" | cut -f4) req/s" >&2

    log="$work/h2-$name-$round.log"
    out=$(h2load -c"$H2_CONNECTIONS" -m"$H2_STREAMS" -D"$DURATION" --log-file="$log" "http://127.0.0.1:${H2_TARGET[$name]}$PATH_QUERY")
    python3 - "$name" "$round" "$out" "$log" >>"$results" <<'PY'
import re, sys
name, rnd, out, log = sys.argv[1:5]
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
times = sorted(int(line.split("\t")[2]) / 1000 for line in open(log) if line.strip())
def pct(p): return times[min(len(times) - 1, int(p / 100 * len(times)))] if times else 0
failed = re.search(r"(\d+) failed", out).group(1)
print(f"h2c\t{name}\t{rnd}\t{rps:.0f}\t{pct(50):.3f}\t{pct(99):.3f}\t{failed}\t")
PY
    echo "  round $round h2c   $name: $(tail -1 "$results" | cut -f4) req/s" >&2
  done
done

# Latency at a fixed rate, open loop (outrigger bench corrects for coordinated omission), HTTP/1.1.
for round in $(seq 1 "$ROUNDS"); do
  for name in direct outrigger haproxy; do
    report="$work/fixed-$name-$round.json"
    "$BIN" bench "http://127.0.0.1:${H1_TARGET[$name]}$PATH_QUERY" --rate "$FIXED_RATE" -c 16 --duration "${DURATION}s" \
      --warmup 1s --json "$report" >/dev/null 2>&1
    python3 - "$name" "$round" "$report" >>"$results" <<'PY'
import json, sys
name, rnd, path = sys.argv[1:4]
r = json.load(open(path))
l = r["latencyMilliseconds"]
print(f"http1@fixed\t{name}\t{rnd}\t{r['achievedRate']:.0f}\t{l['p50']:.3f}\t{l['p99']:.3f}\t{r['failed']}\t")
PY
    echo "  round $round http1 at $FIXED_RATE req/s $name: p99 $(tail -1 "$results" | cut -f6) ms" >&2
  done
done

rss_kib() { awk '/VmHWM/ {print $2}' /proc/$1/status 2>/dev/null || echo 0; }
OUTRIGGER_RSS=$(rss_kib $outrigger_pid); HAPROXY_RSS=$(rss_kib $haproxy_pid)

mkdir -p benchmarks/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
python3 - "$results" "$stamp" "$OUTRIGGER_RSS" "$HAPROXY_RSS" "$DURATION" "$CONNECTIONS" "$H2_CONNECTIONS" "$H2_STREAMS" "$BODY" <<'PY'
import json, statistics, sys, platform, os
path, stamp, o_rss, h_rss, duration, conns, h2c, h2m, body = sys.argv[1:10]
rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
summary = {}
for proto, name, rnd, rps, p50, p99, errors, socket_errors in rows:
    entry = summary.setdefault(proto, {}).setdefault(name, {"rps": [], "p50_ms": [], "p99_ms": [], "errors": 0})
    entry["rps"].append(float(rps)); entry["p50_ms"].append(float(p50)); entry["p99_ms"].append(float(p99))
    entry["errors"] += int(errors or 0)
table = ["| protocol | target | req/s (median) | p50 ms | p99 ms | errors | vs HAProxy |", "|---|---|---|---|---|---|---|"]
for proto in ("http1", "h2c"):
    haproxy = statistics.median(summary[proto]["haproxy"]["rps"])
    for name in ("direct", "outrigger", "haproxy"):
        e = summary[proto][name]
        rps = statistics.median(e["rps"])
        e.update({"rps_median": rps, "p50_ms_median": statistics.median(e["p50_ms"]), "p99_ms_median": statistics.median(e["p99_ms"])})
        ratio = f"{rps / haproxy:.2f}x" if name != "direct" else ""
        table.append(f"| {proto} | {name} | {rps:,.0f} | {e['p50_ms_median']:.2f} | {e['p99_ms_median']:.2f} | {e['errors']} | {ratio} |")
fixed = summary.get("http1@fixed", {})
if fixed:
    table += ["", "Open loop at a fixed rate, HTTP/1.1 (outrigger bench, coordinated-omission corrected):", "",
              "| target | req/s | p50 ms | p99 ms | errors | added p50 ms | added p99 ms |", "|---|---|---|---|---|---|---|"]
    for name in ("direct", "outrigger", "haproxy"):
        e = fixed[name]
        e.update({"rps_median": statistics.median(e["rps"]), "p50_ms_median": statistics.median(e["p50_ms"]), "p99_ms_median": statistics.median(e["p99_ms"])})
    for name in ("direct", "outrigger", "haproxy"):
        e, d = fixed[name], fixed["direct"]
        added = "" if name == "direct" else f"{e['p50_ms_median'] - d['p50_ms_median']:+.3f} | {e['p99_ms_median'] - d['p99_ms_median']:+.3f}"
        table.append(f"| {name} | {e['rps_median']:,.0f} | {e['p50_ms_median']:.3f} | {e['p99_ms_median']:.3f} | {e['errors']} | {added or ' | '} |")
report = {
    "timestamp": stamp, "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
    "settings": {"duration_s": int(duration), "wrk_connections": int(conns), "h2load_connections": int(h2c), "fixed_rate": int(os.environ.get("FIXED_RATE", "1000")),
                 "h2load_streams": int(h2m), "response_body_bytes": int(body), "event_loops": 1, "haproxy_nbthread": 1},
    "results": summary, "peak_rss_kib": {"outrigger": int(o_rss), "haproxy": int(h_rss)},
}
json.dump(report, open(f"benchmarks/results/{stamp}.json", "w"), indent=2)
markdown = "\n".join([f"# make bench, {stamp}", "", *table, "",
                      f"Peak RSS: Outrigger {int(o_rss)/1024:.1f} MiB, HAProxy {int(h_rss)/1024:.1f} MiB.", ""])
open(f"benchmarks/results/{stamp}.md", "w").write(markdown)
print(markdown)
print(f"wrote benchmarks/results/{stamp}.json and .md")
PY
