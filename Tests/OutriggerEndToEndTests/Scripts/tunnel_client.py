#!/usr/bin/env python3
"""Opens an HTTP/1.1 Upgrade tunnel (WebSocket-style) through the sidecar to the echo upstream, which
echoes raw bytes after 101. Sends bytes right behind the request, then SIZE more, reads everything back,
and prints JSON: {"head": "...", "echoed": n, "intact": bool}.

usage: tunnel_client.py PORT SIZE [UPGRADE]
"""
import json
import os
import socket
import sys
import threading

port, size = int(sys.argv[1]), int(sys.argv[2])
upgrade = sys.argv[3] if len(sys.argv) > 3 else "websocket"
early = b"sent-with-the-request"
payload = os.urandom(size)
sock = socket.create_connection(("127.0.0.1", port))
sock.settimeout(30)
sock.sendall(b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: " + upgrade.encode() +
             b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" + early)
data = b""
while b"\r\n\r\n" not in data:
    chunk = sock.recv(65536)
    if not chunk:
        break
    data += chunk
head, _, rest = data.partition(b"\r\n\r\n")
result = {"head": head.decode(errors="replace")}
if head.startswith(b"HTTP/1.1 101"):
    # Write from another thread while reading here, so neither side's buffers fill and stall.
    writer = threading.Thread(target=lambda: sock.sendall(payload))
    writer.start()
    received = rest
    expected = len(early) + size
    while len(received) < expected:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    writer.join()
    result["echoed"] = len(received)
    result["intact"] = received == early + payload
sock.close()
print(json.dumps(result))
