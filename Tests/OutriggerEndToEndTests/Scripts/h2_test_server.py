"""What the h2 test servers share: listen on a free loopback port, say which ("port N"), and serve each connection
on a thread of its own, saying "connection N" as it comes."""
import socket
import threading


def listen_and_serve(serve_connection):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print("port %d" % listener.getsockname()[1], flush=True)
    connections = 0
    while True:
        sock, _ = listener.accept()
        connections += 1
        print("connection %d" % connections, flush=True)
        threading.Thread(target=serve_connection, args=(sock,), daemon=True).start()
