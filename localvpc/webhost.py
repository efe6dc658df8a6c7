"""The emulated internet's web host: answers every HTTP request with the caller's address.

Like checkip.amazonaws.com, the body is the source address the request came
from, plus a newline. Run inside the plane's ``web`` namespace only:
``python webhost.py ADDRESS PORT``. Standard library only (started with -I -S).
"""

import socketserver
import sys


class Handler(socketserver.StreamRequestHandler):
    timeout = 10

    def handle(self) -> None:
        try:
            request = self.rfile.readline(8192)
            while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                pass
        except OSError:
            return
        body = (self.client_address[0] + "\n").encode()
        head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        head += "Connection: close\r\n\r\n"
        self.wfile.write(head.encode() + body)
        sys.stdout.write(f"{self.client_address[0]} {request.decode('latin-1').strip()}\n")
        sys.stdout.flush()


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    Server((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
