#!/usr/bin/env python3
"""An HTTP/1.1 server that holds every answer until it is told to let go: a test then decides when a request in
flight ends, instead of guessing with a delay.

Listens on 127.0.0.1:<free port> and prints "port N"; prints "held N" when it holds N requests. A request for
/release answers 200 itself and lets every held request have its 200 (body "released"). A POST is answered at
once with the number of body bytes it carried (content-length or chunked). Runs until killed.
"""
import http.server
import socketserver
import sys
import threading

release = threading.Event()
lock = threading.Lock()
state = {"held": 0}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/release":
            release.set()
        else:
            with lock:
                state["held"] += 1
                print(f"held {state['held']}", flush=True)
            release.wait()
        body = b"released"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        received = 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                received += len(self.rfile.read(size))
                self.rfile.readline()
        else:
            received = len(self.rfile.read(int(self.headers.get("content-length", "0"))))
        body = str(received).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
