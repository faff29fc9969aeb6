#!/usr/bin/env python3
"""Which of etcd's two APIs the control plane talks to: its gRPC API or its JSON gateway (HTTP/1.1, base64 keys and
values), measured from one client language (Python: grpcio and http.client) against one etcd member started here.

For each API: N sequential puts and N sequential single-key reads (latency p50/p99, client CPU per operation), a read
of a 1,000-key prefix (what a replica reads at start: every registration), and a watch's delivery (a put, then the
time until the watcher has the event). Prints a table; `benchmarks/README.md` keeps the figures and the choice.
Needs etcd (Debian etcd-server) and PyPI grpcio-tools (the etcd stubs are generated from Protos/etcd into a
temporary directory).
"""
import base64
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N = 2000


def start_etcd(directory):
    """One member on a fixed free port: the JSON gateway dials the member's own gRPC listener at its address, so
    port 0 (which the tests use) leaves it nothing to dial."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    etcd = subprocess.Popen(["etcd", "--name", "bench", "--data-dir", str(Path(directory) / "etcd"),
                             "--listen-client-urls", f"http://{address}", "--advertise-client-urls", f"http://{address}",
                             "--listen-peer-urls", "http://127.0.0.1:0", "--initial-advertise-peer-urls", "http://127.0.0.1:0",
                             "--initial-cluster", "bench=http://127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in etcd.stderr:
        if "serving insecure client requests" in line:
            subprocess.Popen(["cat"], stdin=etcd.stderr, stdout=subprocess.DEVNULL)
            return etcd, address
    sys.exit("etcd did not start")


def stubs(directory):
    from grpc_tools import protoc
    import grpc_tools
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    protos = [str(p.relative_to(ROOT / "Protos")) for p in (ROOT / "Protos" / "etcd").rglob("*.proto")]
    if protoc.main(["protoc", f"-I{ROOT / 'Protos'}", f"-I{include}", f"--python_out={directory}", f"--grpc_python_out={directory}", *protos]) != 0:
        sys.exit("cannot generate the etcd stubs")
    sys.path.insert(0, directory)
    for package in Path(directory).rglob("*"):
        if package.is_dir():
            (package / "__init__.py").touch()


def timed(operation):
    cpu, wall = time.process_time(), time.perf_counter()
    latencies = []
    for i in range(N):
        start = time.perf_counter()
        operation(i)
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return latencies[N // 2], latencies[int(N * 0.99)], (time.process_time() - cpu) / N * 1e6, (time.perf_counter() - wall)


def grpc_side(address):
    import grpc
    from etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
    channel = grpc.insecure_channel(address)
    kv = rpc_pb2_grpc.KVStub(channel)
    put = timed(lambda i: kv.Put(rpc_pb2.PutRequest(key=f"/bench/g/{i % 100}".encode(), value=b"x" * 100)))
    read = timed(lambda i: kv.Range(rpc_pb2.RangeRequest(key=f"/bench/g/{i % 100}".encode())))
    for i in range(1000):
        kv.Put(rpc_pb2.PutRequest(key=f"/bench/many/g/{i:04}".encode(), value=json.dumps({"service": "svc", "address": "10.0.0.1:15006"}).encode()))
    start = time.perf_counter()
    many = kv.Range(rpc_pb2.RangeRequest(key=b"/bench/many/g/", range_end=b"/bench/many/g0"))
    values = [json.loads(pair.value) for pair in many.kvs]
    prefix = (time.perf_counter() - start) * 1000
    assert len(values) == 1000
    watch = rpc_pb2_grpc.WatchStub(channel)
    requests = iter([rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"/bench/w/g"))])
    stream = watch.Watch(requests)
    next(stream)  # created
    delays = []
    for i in range(200):
        start = time.perf_counter()
        kv.Put(rpc_pb2.PutRequest(key=b"/bench/w/g", value=str(i).encode()))
        next(stream)
        delays.append((time.perf_counter() - start) * 1000)
    stream.cancel()
    return put, read, prefix, statistics.median(sorted(delays))


def gateway_side(address):
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port))

    def call(path, body):
        connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        return json.loads(connection.getresponse().read())

    b64 = lambda text: base64.b64encode(text.encode()).decode()
    put = timed(lambda i: call("/v3/kv/put", {"key": b64(f"/bench/h/{i % 100}"), "value": b64("x" * 100)}))
    read = timed(lambda i: call("/v3/kv/range", {"key": b64(f"/bench/h/{i % 100}")}))
    for i in range(1000):
        call("/v3/kv/put", {"key": b64(f"/bench/many/h/{i:04}"), "value": b64(json.dumps({"service": "svc", "address": "10.0.0.1:15006"}))})
    start = time.perf_counter()
    many = call("/v3/kv/range", {"key": b64("/bench/many/h/"), "range_end": b64("/bench/many/h0")})
    values = [json.loads(base64.b64decode(pair["value"])) for pair in many["kvs"]]
    prefix = (time.perf_counter() - start) * 1000
    assert len(values) == 1000
    # The gateway's watch: one long POST whose answer is a stream of JSON objects, one per line.
    watcher = http.client.HTTPConnection(host, int(port))
    watcher.request("POST", "/v3/watch", json.dumps({"create_request": {"key": b64("/bench/w/h")}}))
    response = watcher.getresponse()
    response.readline()  # created
    delays = []
    for i in range(200):
        start = time.perf_counter()
        call("/v3/kv/put", {"key": b64("/bench/w/h"), "value": b64(str(i))})
        json.loads(response.readline())
        delays.append((time.perf_counter() - start) * 1000)
    watcher.close()
    return put, read, prefix, statistics.median(sorted(delays))


def main():
    with tempfile.TemporaryDirectory() as directory:
        stubs(directory)
        etcd, address = start_etcd(directory)
        try:
            rows = [("gRPC", grpc_side(address)), ("JSON gateway", gateway_side(address))]
        finally:
            etcd.terminate()
            etcd.wait(timeout=30)
    print(f"| API | put p50 / p99 (ms) | put client CPU (µs) | read p50 / p99 (ms) | read client CPU (µs) | 1,000-key prefix read + decode (ms) | watch delivery p50 (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (put, read, prefix, watch) in rows:
        print(f"| {name} | {put[0]:.2f} / {put[1]:.2f} | {put[2]:.0f} | {read[0]:.2f} / {read[1]:.2f} | {read[2]:.0f} | {prefix:.1f} | {watch:.2f} |")


if __name__ == "__main__":
    main()
