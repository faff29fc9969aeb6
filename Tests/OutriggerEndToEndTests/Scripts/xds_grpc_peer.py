#!/usr/bin/env python3
"""grpcio's own proxyless xDS client (and a trivial backend for it) as a test peer.

  xds_grpc_peer.py server NAME
      Serves the generic unary method /test.Echo/Unary on 127.0.0.1:<free port>, answering every request
      with the UTF-8 bytes of NAME. Prints "port N" and runs until killed.

  xds_grpc_peer.py call XDS_HOST:PORT TARGET COUNT [NODE_ID]
      Points grpcio's xDS client at the ADS server XDS_HOST:PORT (node id NODE_ID, default "grpc-client-1",
      node cluster "grpc-client"), opens the channel "xds:///TARGET" and makes COUNT calls to
      /test.Echo/Unary (5 s timeout each; the first waits for ready so xDS resolution can finish).
      Prints one JSON line {"answers": {NAME: count, ...}, "errors": {STATUS_CODE_NAME: count, ...}}.
      Exits 0 even when calls fail.

  xds_grpc_peer.py watch XDS_HOST:PORT TARGET SECONDS [NODE_ID]
      Like call, but calls every 20 ms for SECONDS seconds and prints one JSON line per second,
      {"t": i, "answers": {...}, "errors": {...}}, counting only that second's calls.

  xds_grpc_peer.py abuse XDS_HOST:PORT garbage|oversized|silent
      Bad input for an ADS server, over a plain grpcio channel and raw bytes: "garbage" sends bytes that are
      no DiscoveryRequest; "oversized" one 5 MiB message; "silent" a valid first request (node "silent-1"),
      then holds the stream 3 s without ever ACKing. Prints {"code": STATUS_CODE_NAME, "responses": N}.
"""
import json
import os
import sys
import time
from concurrent import futures

METHOD = "/test.Echo/Unary"


def serve(name):
    import grpc

    def unary(request, context):
        return name.encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("port %d" % port, flush=True)
    server.wait_for_termination()


def xds_channel(xds_address, target, node_id):
    # The bootstrap must be in the environment before grpc creates its first xDS channel.
    os.environ["GRPC_XDS_BOOTSTRAP_CONFIG"] = json.dumps({
        "xds_servers": [{
            "server_uri": xds_address,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": node_id, "cluster": "grpc-client", "locality": {"zone": "test"}},
    })
    import grpc
    channel = grpc.insecure_channel("xds:///" + target)
    return grpc, channel.unary_unary(METHOD)


def one_call(grpc, stub, answers, errors, first):
    try:
        reply = stub(b"ping", timeout=5, wait_for_ready=first)
        name = reply.decode()
        answers[name] = answers.get(name, 0) + 1
    except grpc.RpcError as error:
        code = error.code().name
        errors[code] = errors.get(code, 0) + 1


def call(xds_address, target, count, node_id):
    grpc, stub = xds_channel(xds_address, target, node_id)
    answers, errors = {}, {}
    for i in range(count):
        one_call(grpc, stub, answers, errors, i == 0)
    print(json.dumps({"answers": answers, "errors": errors}), flush=True)


def watch(xds_address, target, seconds, node_id):
    grpc, stub = xds_channel(xds_address, target, node_id)
    start = time.monotonic()
    first = True
    for second in range(seconds):
        answers, errors = {}, {}
        while time.monotonic() < start + second + 1:
            one_call(grpc, stub, answers, errors, first)
            first = False
            time.sleep(0.02)
        print(json.dumps({"t": second, "answers": answers, "errors": errors}), flush=True)


def abuse(xds_address, kind):
    import grpc
    from envoy.service.discovery.v3 import discovery_pb2

    channel = grpc.insecure_channel(xds_address)
    method = channel.stream_stream("/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                                   request_serializer=None, response_deserializer=None)
    if kind == "garbage":
        messages = [b"\xff\xff\xff\xff not a protobuf"]
    elif kind == "oversized":
        request = discovery_pb2.DiscoveryRequest(type_url="x" * (5 << 20))
        request.node.id = "huge-1"
        messages = [request.SerializeToString()]
    else:
        request = discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
        request.node.id = "silent-1"
        request.node.cluster = "silent"
        messages = [request.SerializeToString()]

    def requests():
        yield from messages
        if kind == "silent":
            time.sleep(3)

    responses = 0
    code = "OK"
    try:
        for _ in method(requests(), timeout=10):
            responses += 1
    except grpc.RpcError as error:
        code = error.code().name
    print(json.dumps({"code": code, "responses": responses}), flush=True)


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "server":
        serve(args[1])
    elif len(args) in (4, 5) and args[0] in ("call", "watch"):
        node_id = args[4] if len(args) == 5 else "grpc-client-1"
        mode = call if args[0] == "call" else watch
        mode(args[1], args[2], int(args[3]), node_id)
    elif len(args) == 3 and args[0] == "abuse":
        abuse(args[1], args[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
