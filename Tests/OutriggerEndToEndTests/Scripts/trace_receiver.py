#!/usr/bin/env python3
"""A trace collector for the tests: takes OTLP/HTTP protobuf on POST /v1/traces (decoded with the
opentelemetry-proto package, the OpenTelemetry project's own generated types) and Zipkin v2 JSON on
POST /api/v2/spans, and prints each span it received as one line: `span {json}`.

Usage: trace_receiver.py [--refuse N] [--close]
  --refuse N: answer 503 to the first N requests, then accept; --close: close the connection after each answer
Prints "port N" once listening on 127.0.0.1; runs until killed.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

refuse = int(sys.argv[sys.argv.index("--refuse") + 1]) if "--refuse" in sys.argv else 0
close_each = "--close" in sys.argv
lock = threading.Lock()
requests_seen = 0

KINDS = {2: "server", 3: "client"}


def any_value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def otlp_spans(body):
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "format": "otlp",
                    "service": resource.get("service.name"),
                    "scope": scope_spans.scope.name,
                    "traceId": span.trace_id.hex(),
                    "spanId": span.span_id.hex(),
                    "parentSpanId": span.parent_span_id.hex() or None,
                    "traceState": span.trace_state or None,
                    "name": span.name,
                    "kind": KINDS.get(span.kind, str(span.kind)),
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "attributes": {kv.key: any_value(kv.value) for kv in span.attributes},
                    "error": span.status.message if span.status.code == 2 else None,
                    "flags": span.flags,
                }


def zipkin_spans(body):
    for span in json.loads(body):
        tags = span.get("tags", {})
        yield {
            "format": "zipkin",
            "service": span["localEndpoint"]["serviceName"],
            "traceId": span["traceId"],
            "spanId": span["id"],
            "parentSpanId": span.get("parentId"),
            "name": span["name"],
            "kind": span["kind"].lower(),
            "start": span["timestamp"] * 1000,
            "end": (span["timestamp"] + span["duration"]) * 1000,
            "attributes": {k: v for k, v in tags.items() if k != "error"},
            "error": tags.get("error"),
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        global requests_seen
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        with lock:
            requests_seen += 1
            refusing = requests_seen <= refuse
        if refusing:
            self.answer(503, b"")
            print(f"refused request {requests_seen}", flush=True)
            return
        if self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf":
            spans = list(otlp_spans(body))
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        elif self.path == "/api/v2/spans" and self.headers.get("content-type") == "application/json":
            spans = list(zipkin_spans(body))
            reply = b""
        else:
            self.answer(400, b"unexpected path or content-type")
            return
        with lock:
            for span in spans:
                print("span " + json.dumps(span, sort_keys=True), flush=True)
        self.answer(200 if self.path == "/v1/traces" else 202, reply)

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf" if self.path == "/v1/traces" else "application/json")
        self.send_header("content-length", str(len(body)))
        if close_each:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
