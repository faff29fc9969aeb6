#!/usr/bin/env python3
"""An HTTP/2 (h2c prior knowledge) server that allows one stream per connection (SETTINGS_MAX_CONCURRENT_STREAMS 1)
and holds every answer until it has `N` requests in hand (argument, default 2): a client that queues its second
request behind the first on one connection gets neither answered.

Listens on 127.0.0.1:<free port>, prints "port N", runs until killed; prints "connection N" for each connection,
"settings acknowledged" when a client confirms it applied the limit, and "request N" for each request received.
"""
import sys
import threading

from h2_test_server import listen_and_serve
import h2.config
import h2.connection
import h2.events
import h2.settings

lock = threading.Lock()
needed = int(sys.argv[1]) if len(sys.argv) > 1 else 2
state = {"requests": 0}
held = []  # (connection, socket, stream id) waiting for `needed` requests
connection_locks = {}


def answer(connection, sock, stream_id):
    with connection_locks[id(connection)]:
        body = b"answered"
        connection.send_headers(stream_id, [(":status", "200"), ("content-length", str(len(body)))])
        connection.send_data(stream_id, body, end_stream=True)
        sock.sendall(connection.data_to_send())


def serve_connection(sock):
    connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    connection_locks[id(connection)] = threading.Lock()
    connection.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    connection.initiate_connection()
    sock.sendall(connection.data_to_send())
    while True:
        data = sock.recv(65536)
        if not data:
            return
        release = []
        with connection_locks[id(connection)]:
            events = connection.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.SettingsAcknowledged):
                print("settings acknowledged", flush=True)
            elif isinstance(event, h2.events.StreamEnded):
                with lock:
                    state["requests"] += 1
                    print("request %d" % state["requests"], flush=True)
                    held.append((connection, sock, event.stream_id))
                    if state["requests"] >= needed:
                        release = list(held)
                        held.clear()
        with connection_locks[id(connection)]:
            sock.sendall(connection.data_to_send())
        for waiting in release:
            answer(*waiting)


if __name__ == "__main__":
    listen_and_serve(serve_connection)
