#!/usr/bin/env python3
"""An HTTP/2 (h2c prior knowledge) server that refuses streams without processing them, and answers the
others 200 with the number of requests it processed so far.

  h2_refusing_server.py          refuses every other stream with RST_STREAM REFUSED_STREAM
  h2_refusing_server.py goaway   answers the first request on each connection; at the second it sends GOAWAY
                                 with the first stream as the last one it processes (the second is refused),
                                 and keeps the connection open

Listens on 127.0.0.1:<free port>, prints "port N", runs until killed; prints "connection N" for each
connection and "processed N" after each request it answered (a refused one is never processed).
"""
import sys
import threading

from h2_test_server import listen_and_serve
import h2.config
import h2.connection
import h2.events
import h2.errors

lock = threading.Lock()
state = {"streams": 0, "processed": 0}
goaway_mode = len(sys.argv) > 1 and sys.argv[1] == "goaway"


def serve_connection(sock):
    connection = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    connection.initiate_connection()
    sock.sendall(connection.data_to_send())
    first_stream = None
    refused = set()
    while True:
        data = sock.recv(65536)
        if not data:
            return
        for event in connection.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                if goaway_mode:
                    if first_stream is None:
                        first_stream = event.stream_id
                    else:
                        refused.add(event.stream_id)
                        if len(refused) == 1:
                            connection.close_connection(last_stream_id=first_stream)
                    continue
                with lock:
                    state["streams"] += 1
                    refuse = state["streams"] % 2 == 1
                if refuse:
                    connection.reset_stream(event.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in refused:
                    continue
                if event.stream_id in connection.streams and not connection.streams[event.stream_id].closed:
                    with lock:
                        state["processed"] += 1
                        body = str(state["processed"]).encode()
                    connection.send_headers(event.stream_id, [(":status", "200"), ("content-length", str(len(body)))])
                    connection.send_data(event.stream_id, body, end_stream=True)
                    print("processed %d" % state["processed"], flush=True)
            elif isinstance(event, h2.events.DataReceived):
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        sock.sendall(connection.data_to_send())


if __name__ == "__main__":
    listen_and_serve(serve_connection)
