"""A local SOCKS5 server whose every connection is a ``direct-tcpip`` channel on the bastion's transport.

:class:`Socks5Server` (RFC 1928; ``127.0.0.1`` only, an ephemeral or given
port, CONNECT only, no authentication) forwards each accepted connection over
its own channel from the bastion, for kafka-python 3.x
``proxy_url="socks5://127.0.0.1:PORT"``; an ``allowed(host, port)`` predicate
may refuse destinations. This module owns the server, its threads and byte
pumps, its :class:`SocksStats`, the SOCKS reply codes and :func:`is_private`.
It needs only a session that opens channels (:class:`Session`, which
:class:`generator.access.ssh.Bastion` is); ``Bastion.socks5`` starts one and
``Bastion.close`` stops it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import select
import selectors
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import paramiko

log = logging.getLogger("kafkanet.ssh")  # the SSH session's logger: its SOCKS connections are part of it

SOCKS_HANDSHAKE_TIMEOUT = 10.0
SOCKS_CLOSE_BUDGET = 5.0
_PUMP_CHUNK = 65536


class Session(Protocol):
    """What the server uses of the SSH session: its transport, channel-open bound and name."""

    name: str
    channel_timeout: float

    @property
    def transport(self) -> paramiko.Transport: ...


# RFC 1928 reply codes
SOCKS_OK = 0x00
SOCKS_FAILURE = 0x01
SOCKS_NOT_ALLOWED = 0x02
SOCKS_NET_UNREACHABLE = 0x03
SOCKS_HOST_UNREACHABLE = 0x04
SOCKS_REFUSED = 0x05
SOCKS_COMMAND_UNSUPPORTED = 0x07
SOCKS_ADDRESS_UNSUPPORTED = 0x08

# RFC 4254 channel-open failure codes -> SOCKS replies
_OPEN_FAILURE = {1: SOCKS_NOT_ALLOWED, 2: SOCKS_REFUSED, 3: SOCKS_FAILURE, 4: SOCKS_FAILURE}


class _SocksError(Exception):
    def __init__(self, reply: int, message: str) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass
class SocksStats:
    connections: int = 0
    refused: int = 0
    bytes_up: int = 0  # client -> destination
    bytes_down: int = 0
    destinations: dict[str, int] = field(default_factory=dict)  # "host:port" -> connections
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def connected(self, destination: str) -> None:
        with self._lock:
            self.connections += 1
            self.destinations[destination] = self.destinations.get(destination, 0) + 1


class _Handler(socketserver.BaseRequestHandler):
    server: _ThreadingServer

    def handle(self) -> None:
        self.server.owner._serve(self.request)


class _ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = False
    block_on_close = False

    def __init__(self, owner: Socks5Server, port: int) -> None:
        self.owner = owner
        # a fixed port must be usable again at once after a restart (connections of the last
        # run in TIME_WAIT); on Linux this never lets two listeners share the port
        self.allow_reuse_address = port != 0
        super().__init__(("127.0.0.1", port), _Handler)


class Socks5Server:
    """SOCKS5 (RFC 1928) on 127.0.0.1: CONNECT only, no authentication, one channel per connection.

    ``allowed(host, port)`` may refuse destinations (reply 0x02). Only ever
    binds 127.0.0.1, on ``port`` (0: a free one). Started on construction; :meth:`close` stops accepting,
    closes every open connection and joins the threads within a bound.
    """

    def __init__(self, bastion: Session, allowed: Callable[[str, int], bool] | None = None, port: int = 0) -> None:
        self.bastion = bastion
        self.allowed = allowed
        self.stats = SocksStats()
        self._open: set[tuple[socket.socket, paramiko.Channel | None]] = set()
        self._open_lock = threading.Lock()
        self._closed = threading.Event()
        self._server = _ThreadingServer(self, port)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"socks5-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """``socks5://``: the client resolves names itself (fine for IP literals)."""
        return f"socks5://127.0.0.1:{self.port}"

    @property
    def url_remote_dns(self) -> str:
        """``socks5h://``: names (e.g. a broker's advertised private DNS name) are resolved by the bastion."""
        return f"socks5h://127.0.0.1:{self.port}"

    def __enter__(self) -> Socks5Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        with self._open_lock:
            pairs = list(self._open)
        for sock, channel in pairs:
            _quietly(sock.close)
            if channel is not None:
                _quietly(channel.close)
        self._thread.join(SOCKS_CLOSE_BUDGET)
        deadline = time.monotonic() + SOCKS_CLOSE_BUDGET
        while time.monotonic() < deadline:
            with self._open_lock:
                if not self._open:
                    break
            time.sleep(0.02)

    # one connection, in its own thread
    def _serve(self, sock: socket.socket) -> None:
        entry: list = [sock, None]
        key = (sock, None)
        with self._open_lock:
            if self._closed.is_set():
                sock.close()
                return
            self._open.add(key)
        try:
            sock.settimeout(SOCKS_HANDSHAKE_TIMEOUT)
            try:
                host, port = self._handshake(sock)
            except _SocksError as exc:
                log.debug("socks5: %s", exc)
                self.stats.add(refused=1)
                _quietly(sock.sendall, _reply(exc.reply))
                return
            except (OSError, ValueError) as exc:
                log.debug("socks5: handshake failed: %r", exc)
                return
            try:
                channel = self._open_channel(host, port)
            except _SocksError as exc:
                log.info("socks5: %s", exc)
                self.stats.add(refused=1)
                _quietly(sock.sendall, _reply(exc.reply))
                return
            entry[1] = channel
            with self._open_lock:
                self._open.discard(key)
                key = (sock, channel)
                self._open.add(key)
            self.stats.connected(f"{host}:{port}")
            sock.sendall(_reply(SOCKS_OK))
            sock.settimeout(None)
            self._pump(sock, channel)
        finally:
            with self._open_lock:
                self._open.discard(key)
            if entry[1] is not None:
                _quietly(entry[1].close)
            _quietly(sock.close)

    def _handshake(self, sock: socket.socket) -> tuple[str, int]:
        version, count = _recv_exact(sock, 2)
        if version != 5:
            raise ValueError(f"not SOCKS5 (version byte {version})")
        methods = _recv_exact(sock, count)
        if 0x00 not in methods:
            sock.sendall(b"\x05\xff")
            raise ValueError("client offers no 'no authentication' method")
        sock.sendall(b"\x05\x00")
        version, command, _, atyp = _recv_exact(sock, 4)
        if version != 5:
            raise ValueError(f"bad request version {version}")
        if atyp == 1:
            host = socket.inet_ntop(socket.AF_INET, _recv_exact(sock, 4))
        elif atyp == 4:
            host = socket.inet_ntop(socket.AF_INET6, _recv_exact(sock, 16))
        elif atyp == 3:
            (length,) = _recv_exact(sock, 1)
            host = _recv_exact(sock, length).decode("idna")
        else:
            raise _SocksError(SOCKS_ADDRESS_UNSUPPORTED, f"address type {atyp} not supported")
        (port,) = struct.unpack("!H", _recv_exact(sock, 2))
        if command != 1:
            raise _SocksError(
                SOCKS_COMMAND_UNSUPPORTED, f"command {command} to {host}:{port} not supported (CONNECT only)"
            )
        if self.allowed is not None and not self.allowed(host, port):
            raise _SocksError(SOCKS_NOT_ALLOWED, f"{host}:{port} is not an allowed destination")
        return host, port

    def _open_channel(self, host: str, port: int) -> paramiko.Channel:
        budget = self.bastion.channel_timeout
        try:
            return self.bastion.transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=budget
            )
        except paramiko.ChannelException as exc:
            code = _OPEN_FAILURE.get(exc.code, SOCKS_FAILURE)
            raise _SocksError(code, f"{self.bastion.name} cannot reach {host}:{port}: {exc.text}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _SocksError(
                SOCKS_HOST_UNREACHABLE, f"{host}:{port}: no channel within {budget:g} s: {exc!r}"
            ) from None

    def _pump(self, sock: socket.socket, channel: paramiko.Channel) -> None:
        """Copy both ways until both sides are done (half-close passed on)."""
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ, "sock")
        selector.register(channel, selectors.EVENT_READ, "channel")
        sock.setblocking(False)
        channel.setblocking(False)
        open_sides = 2
        try:
            while open_sides and not self._closed.is_set():
                for key, _ in selector.select(timeout=0.5):
                    if key.data == "sock":
                        try:
                            data = sock.recv(_PUMP_CHUNK)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            data = b""
                        if data:
                            _send_all_channel(channel, data)
                            self.stats.add(bytes_up=len(data))
                        else:
                            selector.unregister(sock)
                            _quietly(channel.shutdown_write)
                            open_sides -= 1
                    else:
                        try:
                            data = channel.recv(_PUMP_CHUNK)
                        except TimeoutError:
                            continue
                        if data:
                            _send_all_socket(sock, data)
                            self.stats.add(bytes_down=len(data))
                        else:
                            selector.unregister(channel)
                            _quietly(sock.shutdown, socket.SHUT_WR)
                            open_sides -= 1
        except OSError as exc:
            log.debug("socks5: connection ended: %r", exc)
        finally:
            selector.close()


def _send_all_channel(channel: paramiko.Channel, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + 60.0
    while view:
        try:
            sent = channel.send(view)
        except TimeoutError:
            sent = 0
        if sent == 0:
            if channel.closed or time.monotonic() > deadline:
                raise OSError(errno.EPIPE, "channel closed or stalled")
            time.sleep(0.005)
        view = view[sent:]


def _send_all_socket(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + 60.0
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == 0:
            if time.monotonic() > deadline:
                raise OSError(errno.EPIPE, "client stalled")
            select.select([], [sock], [], 0.5)
        view = view[sent:]


def _reply(code: int) -> bytes:
    return struct.pack("!BBBB4sH", 5, code, 0, 1, b"\0\0\0\0", 0)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def _quietly(fn: Callable, *args: Any) -> None:
    try:
        fn(*args)
    except (OSError, EOFError, paramiko.SSHException):
        pass


def is_private(address: str) -> bool:
    """Whether ``address`` is an RFC 1918 / ULA address (never probed on target aws)."""
    try:
        return ipaddress.ip_address(address).is_private
    except ValueError:
        return False


__all__ = ["Session", "Socks5Server", "SocksStats", "is_private"]
