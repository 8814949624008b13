#!/usr/bin/env python3
# A minimal file server for bench/sources-http (--server sendfile): GET of a
# file in DIR answered with its Content-Length and the body sent by the
# kernel (os.sendfile, no copy through the server's memory), so the server
# costs as little CPU as it can and is not what limits curl or kiln.
# Binds 127.0.0.1 only; the first line printed is the base URL.
#
#   python3 bench/sendfile-server.py DIR [PORT]
import os
import socket
import sys
import threading

root = sys.argv[1]
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[2]) if len(sys.argv) > 2 else 0))
listener.listen(16)
print(f"http://127.0.0.1:{listener.getsockname()[1]}", flush=True)


def serve(conn: socket.socket) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                return
            head += data
        name = os.path.basename(head.split(b" ")[1].split(b"?")[0].decode())
        try:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
        except OSError:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        try:
            size = os.fstat(fd).st_size
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
            offset = 0
            while offset < size:
                offset += os.sendfile(conn.fileno(), fd, offset, size - offset)
        finally:
            os.close(fd)


while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
