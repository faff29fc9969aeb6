#!/usr/bin/env python3
"""A real gRPC server and client (grpcio), for pass-through tests. No generated code: raw bytes.

  grpc_check.py server            serves test.Echo on 127.0.0.1:<free port>, prints "port N", runs until killed
  grpc_check.py client HOST:PORT  calls every method through HOST:PORT, prints the outcomes as JSON
  grpc_check.py status HOST:PORT  one unary call; prints {"code": "..."} (for local replies)
  grpc_check.py flaky             like server, but Unary sends its headers, then fails UNAVAILABLE in the trailers
  grpc_check.py unary-many HOST:PORT N   N unary calls; prints {"codes": {...}}
"""
import json
import sys
from concurrent import futures

import grpc

identity = dict(request_deserializer=None, response_serializer=None)


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "unary"),))
    return request


def server_stream(request, context):
    for i in range(int(request or b"0")):
        yield b"item-%d" % i


def bidi(requests, context):
    for request in requests:
        yield request.upper()


def flaky_unary(request, context):
    # Headers first, so the status can only come in the trailers (not a trailers-only answer).
    context.send_initial_metadata((("x-server", "flaky"),))
    context.abort(grpc.StatusCode.UNAVAILABLE, "try another instance")


def fail(request, context):
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "told to fail")


def serve(flaky=False):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(flaky_unary if flaky else unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"port {port}", flush=True)
    server.wait_for_termination()


def client(target):
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=20)
    result = {}
    response, call = channel.unary_unary("/test.Echo/Unary").with_call(b"hello", timeout=20)
    result["unary"] = response.decode()
    result["unary_trailer"] = dict(call.trailing_metadata()).get("x-trailer")
    result["server_stream"] = [m.decode() for m in channel.unary_stream("/test.Echo/ServerStream")(b"50", timeout=20)]
    result["bidi"] = [m.decode() for m in channel.stream_stream("/test.Echo/Bidi")(iter([b"a", b"b", b"c"] * 100), timeout=20)]
    try:
        channel.unary_unary("/test.Echo/Fail")(b"x", timeout=20)
        result["fail"] = "OK"
    except grpc.RpcError as error:
        result["fail"] = error.code().name
        result["fail_details"] = error.details()
    print(json.dumps(result))


def status(target):
    channel = grpc.insecure_channel(target)
    try:
        channel.unary_unary("/test.Echo/Unary")(b"x", timeout=20)
        code, details = "OK", ""
    except grpc.RpcError as error:
        code, details = error.code().name, error.details()
    print(json.dumps({"code": code, "details": details}))


def unary_many(target, count):
    channel = grpc.insecure_channel(target)
    codes = {}
    for _ in range(count):
        try:
            channel.unary_unary("/test.Echo/Unary")(b"x", timeout=20)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        codes[code] = codes.get(code, 0) + 1
    print(json.dumps({"codes": codes}))


if __name__ == "__main__":
    {"server": lambda: serve(), "flaky": lambda: serve(flaky=True), "client": lambda: client(sys.argv[2]),
     "status": lambda: status(sys.argv[2]), "unary-many": lambda: unary_many(sys.argv[2], int(sys.argv[3]))}[sys.argv[1]]()
