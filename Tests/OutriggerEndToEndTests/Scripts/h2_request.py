#!/usr/bin/env python3
"""Sends one HTTP/2 (h2c prior knowledge) request with exactly the headers given, valid or not, and
prints what came back as JSON: {"status": N, "headers": {...}, "trailers": {...}, "body": n, "dataFrames": n,
"endedWithHeaders": bool, "text": the body if at most 64 KiB} or {"reset": CODE} or {"goaway": CODE}. A body is sent as flow control allows. Used by the end-to-end tests to send what well-behaved clients refuse to send.

usage: h2_request.py PORT HEADERS_JSON [BODY_BYTES] [--after-settings] [--stop-reading] [--settings JSON] [--ping]
--stop-reading: never give flow-control credit back (a client that stopped reading the response).
--settings: the client's own SETTINGS, {"header_table_size": 0, "initial_window_size": 1000, ...} (h2's names).
--ping: a PING goes with the request; "pingAcked" says whether its answer came back with the same data.
HEADERS_JSON is a list of [name, value] pairs, pseudo-headers included, sent in order.
"""
import json
import socket
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings


def main():
    port = int(sys.argv[1])
    headers = [(n.encode(), v.encode()) for n, v in json.loads(sys.argv[2])]
    body = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 0
    config = h2.config.H2Configuration(
        client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=False, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    if "--settings" in sys.argv:
        wanted = json.loads(sys.argv[sys.argv.index("--settings") + 1])
        codes = {name: getattr(h2.settings.SettingCodes, name.upper()) for name in wanted}
        conn.local_settings = h2.settings.Settings(client=True, initial_values={codes[n]: v for n, v in wanted.items()})
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(20)
    conn.initiate_connection()
    ping = b"outrigr!"
    if "--ping" in sys.argv:
        conn.ping(ping)
    if "--after-settings" in sys.argv:
        # Exchange SETTINGS first, so the server's advertised limits are in force.
        sock.sendall(conn.data_to_send())
        acked = False
        while not acked:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.SettingsAcknowledged):
                    acked = True
            sock.sendall(conn.data_to_send())
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, headers, end_stream=(body == 0))
    unsent = body
    result = {"dataFrames": 0}
    received = 0
    text = bytearray()
    done = False
    while not done:
        # The body goes out as flow control allows: past the first windows only with the server's updates.
        while unsent > 0:
            room = min(unsent, conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
            if room <= 0:
                break
            unsent -= room
            conn.send_data(stream, b"x" * room, end_stream=(unsent == 0))
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            result.setdefault("closed", True)
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                result["status"] = int(dict(event.headers)[b":status"])
                result["headers"] = {k.decode(): v.decode() for k, v in event.headers}
                result["endedWithHeaders"] = event.stream_ended is not None
            elif isinstance(event, h2.events.TrailersReceived):
                result["trailers"] = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                result["dataFrames"] += 1
                received += len(event.data)
                if received <= 65536:
                    text.extend(event.data)
                if "--stop-reading" not in sys.argv:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.PingAckReceived):
                result["pingAcked"] = event.ping_data == ping
            elif isinstance(event, h2.events.StreamEnded):
                done = True
            elif isinstance(event, h2.events.StreamReset):
                result["reset"] = int(event.error_code)
                done = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                result["goaway"] = int(event.error_code)
                done = True
        sock.sendall(conn.data_to_send())
    result["body"] = received
    if received <= 65536:
        result["text"] = text.decode("utf-8", "replace")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
