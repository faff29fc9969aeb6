#!/usr/bin/env python3
"""An HTTP/2 (h2c prior knowledge) server that breaks the rules a client holds a server to, chosen by the path:

  /status-101   answers :status 101, which HTTP/2 has not
  /upper-case   a field name in upper case
  /connection   the connection-specific field `connection: close`
  /early-end    an informational head (103) that ends the stream
  /short        content-length 10, then 3 bytes and the end of the stream
  /push         a PUSH_PROMISE, though the client turned push off
  /goaway-early as soon as the request's head arrives, while its body still comes (a request with a body that
                does not end): GOAWAY (NO_ERROR, naming this stream as the last it takes), then a whole response
                (200, "early"); prints "early answered"
  /deaf         as soon as the request's head arrives: opens the flow-control windows wide, reads nothing more (the
                client's body fills the socket buffers), sends a PUSH_PROMISE a second later, prints "deaf", and
                holds the connection open without reading until the client closes it
  any other     200 with the length of the request's body

  h2_misbehaving_server.py limit N   instead advertises SETTINGS_MAX_CONCURRENT_STREAMS N and answers every request
                                     200, 50 ms after it ended, printing "answered K" and each new peak of streams
                                     open at once ("peak P"); a client that opens more than N once it has the
                                     SETTINGS is "over the limit" (and the connection ends)

Listens on 127.0.0.1:<free port>, prints "port N", runs until killed; prints "connection N" for each connection,
"goaway CODE" when a client ends one with GOAWAY, and "reset CODE" when a client resets a stream.
"""
import select
import struct
import sys
import threading
import time

from h2_test_server import listen_and_serve
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

limit = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "limit" else None
lock = threading.Lock()
counts = {"answered": 0, "peak": 0}

# Header blocks as HPACK literals without indexing (the connection's tables stay as they were), ending the stream.
BROKEN = {
    "/status-101": [(":status", "101")],
    "/upper-case": [(":status", "200"), ("X-Upper", "1"), ("content-length", "0")],
    "/connection": [(":status", "200"), ("connection", "close"), ("content-length", "0")],
    "/early-end": [(":status", "103")],
}


def frame(kind, flags, stream_id, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def literal_block(fields):
    block = b""
    for name, value in fields:
        block += b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()
    return block


def serve_connection(sock):
    connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    if limit is not None:
        connection.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limit})
    connection.initiate_connection()
    sock.sendall(connection.data_to_send())
    paths = {}
    received = {}
    due = []  # (time, stream id) of the answers held back in `limit` mode
    while True:
        timeout = max(0, due[0][0] - time.monotonic()) if due else None
        readable, _, _ = select.select([sock], [], [], timeout)
        while due and due[0][0] <= time.monotonic():
            _, stream_id = due.pop(0)
            connection.send_headers(stream_id, [(":status", "200"), ("content-length", "2")])
            connection.send_data(stream_id, b"ok", end_stream=True)
            with lock:
                counts["answered"] += 1
                print("answered %d" % counts["answered"], flush=True)
        if not readable:
            sock.sendall(connection.data_to_send())
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        raw = b""
        try:
            events = connection.receive_data(data)
        except h2.exceptions.TooManyStreamsError:
            print("over the limit", flush=True)
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                headers = {name.decode(): value.decode() for name, value in event.headers}
                paths[event.stream_id] = headers[":path"]
                received[event.stream_id] = 0
                if headers[":path"] == "/deaf":
                    return deaf(sock, connection, event.stream_id)
                if headers[":path"] == "/goaway-early":
                    # The GOAWAY goes raw, ahead of the response: h2 sends nothing more once it has sent one itself.
                    raw += frame(0x7, 0x0, 0, struct.pack(">II", event.stream_id, 0))
                    connection.send_headers(event.stream_id, [(":status", "200"), ("content-length", "5")])
                    connection.send_data(event.stream_id, b"early", end_stream=True)
                    sock.sendall(raw + connection.data_to_send())
                    raw = b""
                    print("early answered", flush=True)
            elif isinstance(event, h2.events.StreamReset):
                print("reset %d" % event.error_code, flush=True)
            elif isinstance(event, h2.events.DataReceived):
                received[event.stream_id] += len(event.data)
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and limit is not None:
                due.append((time.monotonic() + 0.05, event.stream_id))
                with lock:
                    if len(due) > counts["peak"]:
                        counts["peak"] = len(due)
                        print("peak %d" % counts["peak"], flush=True)
            elif isinstance(event, h2.events.StreamEnded) and paths[event.stream_id] == "/goaway-early":
                pass  # answered already
            elif isinstance(event, h2.events.StreamEnded):
                raw += answer(connection, event.stream_id, paths[event.stream_id], received[event.stream_id])
            elif isinstance(event, h2.events.ConnectionTerminated):
                print("goaway %d" % event.error_code, flush=True)
        sock.sendall(connection.data_to_send() + raw)


def deaf(sock, connection, stream_id):
    """Lets the client send as much as the sockets hold, reads none of it, then breaks the rules: the client's GOAWAY
    waits behind its own unread bytes. Waits, still reading nothing, for the client to close the connection."""
    connection.increment_flow_control_window(2 ** 31 - 1 - 65535)
    connection.increment_flow_control_window(2 ** 31 - 1 - 65535, stream_id)
    sock.sendall(connection.data_to_send())
    time.sleep(1)
    sock.sendall(frame(0x5, 0x4, stream_id, struct.pack(">I", 2) + b"\x82"))
    print("deaf", flush=True)
    # A closed peer shows as an error on the next send (the kernel answers a close with unread data with a reset);
    # until then each PING waits in the socket like everything else.
    while True:
        time.sleep(0.2)
        try:
            sock.send(frame(0x6, 0x0, 0, b"\0" * 8))
        except OSError:
            print("closed by the client", flush=True)
            return


def answer(connection, stream_id, path, body_bytes):
    """Answers through `connection`; returns raw frames to send after what it has to send."""
    if path in BROKEN:
        # HEADERS with END_STREAM and END_HEADERS. h2 would refuse to send these; the stream stays open in its eyes.
        return frame(0x1, 0x5, stream_id, literal_block(BROKEN[path]))
    elif path == "/short":
        connection.send_headers(stream_id, [(":status", "200"), ("content-length", "10")])
        connection.send_data(stream_id, b"abc", end_stream=True)
    elif path == "/push":
        # PUSH_PROMISE promising stream 2, its header block `:method: GET` (HPACK index 2).
        return frame(0x5, 0x4, stream_id, struct.pack(">I", 2) + b"\x82")
    else:
        body = str(body_bytes).encode()
        connection.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
        connection.send_data(stream_id, body, end_stream=True)
    return b""


if __name__ == "__main__":
    listen_and_serve(serve_connection)
