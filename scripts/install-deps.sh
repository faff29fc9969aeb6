#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need, only when missing.
# Debian packages: curl (HTTP/1.1, h2c, TLS+ALPN client), nghttp2-client (nghttp, h2load), wrk (the bench
# tool is validated against it and h2load), openssl (test certificates), testssl.sh (a TLS listener's policy
# checked as an auditor would), iproute2 (ss: a listening socket's backlog), prometheus (promtool checks the exposition and runs the alert rules'
# unit tests; the server scrapes a sidecar in a test), chromium-headless-shell (the dashboard in a real browser), etcd-server (the
# control plane's shared store, run by the tests); with --bench also haproxy and nginx. Runs apt-get as root, or through sudo when available.
set -euo pipefail

want=()
command -v curl >/dev/null || want+=(curl)
command -v nghttp >/dev/null || want+=(nghttp2-client)
command -v h2load >/dev/null || want+=(nghttp2-client)
command -v openssl >/dev/null || want+=(openssl)
command -v wrk >/dev/null || want+=(wrk)
command -v testssl >/dev/null || want+=(testssl.sh)
command -v ss >/dev/null || want+=(iproute2)
command -v promtool >/dev/null || want+=(prometheus)
command -v chromium-headless-shell >/dev/null || want+=(chromium-headless-shell)
command -v etcd >/dev/null || want+=(etcd-server)
if [ "${1:-}" = "--bench" ]; then
  PATH="$PATH:/usr/sbin:/sbin"
  command -v haproxy >/dev/null || want+=(haproxy)
  command -v nginx >/dev/null || want+=(nginx)
fi

# Python's h2 (HTTP/2 that real clients refuse to send), grpcio (a real gRPC client and server) and its
# standard health service (grpc.health.v1, for the gRPC health-check tests), grpcio-tools and xds-protos
# (our xDS protos checked against Envoy's), opentelemetry-proto (the OTLP the sidecars export, decoded).
python_want=()
python3 -c "import h2" 2>/dev/null || python_want+=(h2)
python3 -c "import grpc" 2>/dev/null || python_want+=(grpcio)
python3 -c "import grpc_health.v1.health" 2>/dev/null || python_want+=(grpcio-health-checking)
# protoc in a wheel (compiles our Protos/ for the wire check) and Envoy's own generated xDS types.
python3 -c "import grpc_tools.protoc" 2>/dev/null || python_want+=(grpcio-tools)
python3 -c "import envoy.config.cluster.v3.cluster_pb2" 2>/dev/null || python_want+=(xds-protos)
# OpenTelemetry's generated OTLP types: the test trace collector decodes what the sidecars export with them.
python3 -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2" 2>/dev/null || python_want+=(opentelemetry-proto)
# Playwright drives Debian's chromium-headless-shell (no browser download) through the admin's /dashboard.
python3 -c "import playwright.sync_api" 2>/dev/null || python_want+=(playwright)
if [ ${#python_want[@]} -gt 0 ]; then
  echo "install-deps: installing python ${python_want[*]}" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${python_want[@]}" \
    || python3 -m pip install --quiet --break-system-packages "${python_want[@]}"
fi

[ ${#want[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${want[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "install-deps: installing ${want[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
