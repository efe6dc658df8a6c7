"""An HTTPS stand-in for the Apache download sites, for tests/test_broker_boot.py.

Run inside a throw-away network namespace: ``python fake_release_server.py CONFIG``.
CONFIG (JSON) names the certificate, the key, the port, a request log, the
release files ({name: path}) and, per host, the path prefix it serves the
release under and how it answers:

- ``ok``: the files;
- ``404``: nothing (a release the site no longer carries);
- ``503x<N>``: 503 to the first N requests, then the files (a transient error);
- ``bad-sum``: the tarball, with a .sha512 of something else.

Every request is appended to the log as a JSON line (host, path, status).
Prints ``ready`` once it listens. Standard library only.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    files = {name: Path(path).read_bytes() for name, path in config["files"].items()}
    hosts = config["hosts"]
    log_path = Path(config["log"])
    lock = threading.Lock()
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            host = (self.headers.get("Host") or "").split(":")[0]
            status, body = self._answer(host)
            with lock, log_path.open("a") as log:
                log.write(json.dumps({"host": host, "path": self.path, "status": status}) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self, host: str) -> tuple[int, bytes]:
            site = hosts.get(host)
            if site is None:
                return 421, b"not a host of this test\n"
            with lock:
                seen[host] = seen.get(host, 0) + 1
                count = seen[host]
            mode = site["mode"]
            if mode == "404":
                return 404, b"Not Found\n"
            if mode.startswith("503x") and count <= int(mode[4:]):
                return 503, b"Service Unavailable\n"
            prefix = site["prefix"].rstrip("/") + "/"
            if not self.path.startswith(prefix) or self.path[len(prefix):] not in files:
                return 404, b"Not Found\n"
            name = self.path[len(prefix):]
            if mode == "bad-sum" and name.endswith(".sha512"):
                return 200, b"kafka.tgz: 00000000 00000000\n"
            return 200, files[name]

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server API
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(config["port"])), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(config["cert"], config["key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1])
