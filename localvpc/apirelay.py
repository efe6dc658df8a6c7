"""The EC2 API endpoint of the emulated internet: HTTPS in, this environment's moto server out.

:class:`RelayServer` listens (in the namespace its socket was made in: the
web host's) with the certificate of :mod:`localvpc.ca` for the regional
endpoint name, and forwards every request whose ``Host`` is that name to the
environment's moto server, unchanged (method, path, headers, body): moto
serves EC2 by that very host name, and the SigV4 signature stays the
caller's. Requests for any other host get 421; a request that is not
signed for EC2 (no SigV4 credential scope, or one naming another service)
gets EC2's own refusal (401 ``MissingAuthenticationToken`` / 403
``SignatureDoesNotMatch``) instead of reaching another moto service. The connection to moto is
made by ``forward``, which the services daemon runs on a thread in the root
namespace, where moto listens on loopback; this module opens nothing there.
"""

from __future__ import annotations

import http.client
import logging
import re
import socketserver
import ssl
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PORT = 443
UPSTREAM_TIMEOUT = 30.0
MAX_BODY = 16 * 1024 * 1024
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}

log = logging.getLogger("kafkanet.localvpc.apirelay")
SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")


def signed_service(authorization: str | None, query: str) -> str | None:
    """The service a SigV4 request is signed for (header or presigned query), None if unsigned."""
    found = SCOPE.search(authorization or "")
    if found:
        return found.group(1)
    credential = (parse_qs(query).get("X-Amz-Credential") or [""])[0]
    parts = credential.split("/")
    return parts[3] if len(parts) == 5 else None


def ec2_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    ).encode()

Response = tuple[int, list[tuple[str, str]], bytes]
Forward = Callable[[str, str, list[tuple[str, str]], bytes], Response]


def moto_forwarder(endpoint_url: str) -> Forward:
    """A ``forward`` that sends the request to the moto server at ``endpoint_url`` (http://127.0.0.1:PORT)."""
    url = urlsplit(endpoint_url)
    if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the API relay forwards only to a moto server on loopback, not {endpoint_url}")
    host, port = url.hostname, url.port or 80

    def forward(method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in headers:
                conn.putheader(key, value)
            conn.endheaders(body or None)
            answer = conn.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            conn.close()

    return forward


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


class RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the address's name (getfqdn): inside a namespace
        # that waits out the host resolver's timeout. The name is only used for CGI variables.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def __init__(self, address: tuple[str, int], names: list[str], context: ssl.SSLContext, forward: Forward,
                 service: str = "ec2") -> None:  # fmt: skip
        self.names = {n.lower() for n in names}
        self.service = service
        self.forward = forward
        super().__init__(address, RelayHandler)
        # the handshake happens in the request's thread (first read), never in the accepting one
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)


class RelayHandler(BaseHTTPRequestHandler):
    server: RelayServer
    protocol_version = "HTTP/1.1"
    server_version = "AmazonEC2"
    sys_version = ""
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("relay %s %s", self.client_address[0], format % args)

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            log.info("relay %s: %s", self.client_address[0], exc)

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP and key.lower() not in ("content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _relay(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._reply(411, [("Content-Type", "text/plain")], b"Length Required\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._reply(413, [("Content-Type", "text/plain")], b"Request Entity Too Large\n")
            return
        body = self.rfile.read(length) if length else b""
        if host not in self.server.names:
            self._reply(421, [("Content-Type", "text/plain")], f"no endpoint {host} here\n".encode())
            return
        service = signed_service(self.headers.get("Authorization"), urlsplit(self.path).query)
        if service is None:
            self._reply(401, [("Content-Type", "text/xml")], ec2_error("MissingAuthenticationToken",
                        "Request is missing Authentication Token"))  # fmt: skip
            return
        if service != self.server.service:
            self._reply(403, [("Content-Type", "text/xml")], ec2_error("SignatureDoesNotMatch",
                        f"Credential should be scoped to correct service: '{self.server.service}'."))  # fmt: skip
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            status, answer_headers, answer = self.server.forward(self.command, self.path, headers, body)
        except Exception as exc:  # moto did not answer: a 503, as an endpoint under trouble
            log.warning("relay %s %s: %s", self.command, self.path, exc)
            self._reply(503, [("Content-Type", "text/plain")], b"Service Unavailable\n")
            return
        self._reply(status, answer_headers, answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _relay  # noqa: N815 (http.server's naming)
