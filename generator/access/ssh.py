"""SSH through the bastion: one transport per session, hops as channels, a local SOCKS5 port.

The operator reaches the bastion (the NAT instance) once, either through the
inventory's ``ssh.proxy_command`` (OpenSSH tokens ``%h %p %r %%``) or with a
direct TCP connect, and authenticates with the environment's key. Everything
else rides that one :class:`paramiko.Transport`:

* :meth:`Bastion.hop` opens a ``direct-tcpip`` channel from the bastion to a
  private address (the paramiko way of ``ProxyJump``);
* :meth:`Bastion.client_for` returns an SSH client to a broker whose socket is
  such a channel (cached: one per host for the session);
* :meth:`Bastion.run` runs a command on the bastion or a broker, bounded by a
  remote ``timeout`` and a local deadline;
* :class:`Socks5Server` (``127.0.0.1``, an ephemeral or given port, CONNECT only, no auth)
  forwards each accepted connection over its own ``direct-tcpip`` channel, for
  kafka-python 3.x ``proxy_url="socks5://127.0.0.1:PORT"``.

Host keys are checked against the environment's own known_hosts file only
(never ``~/.ssh/known_hosts``), with :class:`paramiko.RejectPolicy`: an unknown
host or a changed key raises :class:`HostKeyError` naming the host and the file.
No private key ever leaves the operator's machine. Every network wait has a
bound; :meth:`Bastion.close` stops the SOCKS servers, the broker clients, the
transport and the proxy command, in that order.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import selectors
import shlex
import signal
import socket
import socketserver
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from generator.base.errors import InfraError, UserError

log = logging.getLogger("kafkanet.ssh")

CONNECT_TIMEOUT = 10.0  # TCP connect / proxy command to the bastion, and the SSH banner
AUTH_TIMEOUT = 10.0
CHANNEL_TIMEOUT = 10.0  # opening a session or direct-tcpip channel
COMMAND_TIMEOUT = 30.0  # default for run()
KEEPALIVE = 15  # seconds between keepalives on the bastion transport
PROXY_STOP_BUDGET = 3.0  # SIGTERM before SIGKILL for the proxy command
SOCKS_HANDSHAKE_TIMEOUT = 10.0
SOCKS_CLOSE_BUDGET = 5.0
_PUMP_CHUNK = 65536


class SshError(InfraError):
    """The bastion or a host behind it could not be reached, authenticated or used."""


class HostKeyError(SshError):
    """A host is not in the environment's known_hosts, or its key changed."""


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class SshSettings:
    """How to log in: the inventory's ``ssh`` section."""

    user: str
    private_key: Path
    known_hosts: Path
    proxy_command: str | None = None
    port: int = 22

    @classmethod
    def from_inventory(cls, inventory: Mapping[str, Any]) -> SshSettings:
        ssh = inventory.get("ssh") or {}
        missing = [k for k in ("user", "private_key", "known_hosts") if not ssh.get(k)]
        if missing:
            raise UserError(*(f"inventory: ssh.{k} is missing" for k in missing))
        settings = cls(
            user=str(ssh["user"]),
            private_key=Path(ssh["private_key"]),
            known_hosts=Path(ssh["known_hosts"]),
            proxy_command=ssh.get("proxy_command") or None,
            port=int(ssh.get("port") or 22),
        )
        problems = []
        if not settings.private_key.is_file():
            problems.append(f"inventory: ssh.private_key {settings.private_key} does not exist")
        if not settings.known_hosts.is_file():
            problems.append(f"inventory: ssh.known_hosts {settings.known_hosts} does not exist")
        if problems:
            raise UserError(*problems)
        return settings


def expand_proxy_command(command: str, host: str, port: int, user: str = "") -> list[str]:
    """argv of an OpenSSH-style ProxyCommand with ``%h %p %r %%`` replaced (each token quoted safely)."""
    out: list[str] = []
    for word in shlex.split(command):
        text, i = [], 0
        while i < len(word):
            if word[i] == "%" and i + 1 < len(word):
                token = word[i + 1]
                replacement = {"h": host, "p": str(port), "r": user, "%": "%"}.get(token)
                if replacement is None:
                    raise UserError(f"ssh.proxy_command: unsupported token %{token} in {command!r} (use %h %p %r %%)")
                text.append(replacement)
                i += 2
            else:
                text.append(word[i])
                i += 1
        out.append("".join(text))
    if not out:
        raise UserError("ssh.proxy_command is empty")
    return out


class ProxySocket:
    """A ProxyCommand as a real socket: the command's stdin/stdout is one end of a socketpair.

    Unlike :class:`paramiko.ProxyCommand`, a dead command reads as EOF at
    once (no busy loop), timeouts are socket timeouts, and :meth:`close`
    waits for the process (SIGTERM, then SIGKILL) so nothing is left behind.
    """

    def __init__(self, argv: list[str], what: str) -> None:
        self.argv = argv
        self.what = what
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=theirs,
                stdout=theirs,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            raise SshError(f"{what}: cannot run the proxy command {shlex.join(argv)}: {exc}") from None
        finally:
            theirs.close()
        self.sock = ours

    def stderr_tail(self, limit: int = 400, wait: float = 1.0) -> str:
        """What the command said on stderr, once it has exited (waits at most ``wait`` s; never blocks longer)."""
        if self.process.stderr is None:
            return ""
        try:
            self.process.wait(timeout=wait)
            ready, _, _ = select.select([self.process.stderr], [], [], 0.5)
            data = os.read(self.process.stderr.fileno(), 65536) if ready else b""
        except (subprocess.TimeoutExpired, OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace").strip()[-limit:]

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            stop_process(self.process, PROXY_STOP_BUDGET)


def stop_process(process: subprocess.Popen, budget: float) -> None:
    """SIGTERM, wait up to ``budget``, then SIGKILL and wait; closes its pipes."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        except ProcessLookupError:
            pass
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    host: str
    command: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def timed_out(self) -> bool:
        return self.rc in (124, 137)  # timeout(1): 124, or 128+9 after --kill-after

    def check(self) -> RunResult:
        if self.rc != 0:
            detail = (self.stderr or self.stdout).strip().splitlines()[-3:]
            raise SshError(f"{self.host}: `{self.command}` exited {self.rc}", *detail)
        return self


# --- the bastion -------------------------------------------------------------------------


class Bastion:
    """One SSH transport to the bastion for a whole session; everything else hops through it."""

    def __init__(
        self,
        address: str,
        settings: SshSettings,
        *,
        name: str = "bastion",
        connect_timeout: float = CONNECT_TIMEOUT,
        channel_timeout: float = CHANNEL_TIMEOUT,
    ) -> None:
        self.address = address
        self.settings = settings
        self.name = name
        self.connect_timeout = connect_timeout
        self.channel_timeout = channel_timeout
        self.names: dict[str, str] = {address: name}  # address -> display name, for messages
        self.private_address: str | None = None  # the bastion's own private address, when known
        self._client: paramiko.SSHClient | None = None
        self._proxy: ProxySocket | None = None
        self._hosts: dict[str, paramiko.SSHClient] = {}
        self._socks: list[Socks5Server] = []
        self._lock = threading.Lock()

    @classmethod
    def from_inventory(cls, inventory: Mapping[str, Any], **options: Any) -> Bastion:
        """Not yet connected: call :meth:`connect` (or use it as a context manager)."""
        bastion = inventory.get("bastion") or {}
        if not bastion.get("public_ip"):
            raise UserError("inventory: bastion.public_ip is missing")
        made = cls(bastion["public_ip"], SshSettings.from_inventory(inventory), name=bastion.get("name", "bastion"),
                   **options)  # fmt: skip
        for broker in inventory.get("brokers") or []:
            made.names[broker["private_ip"]] = broker["name"]
        if bastion.get("private_ip"):
            made.private_address = bastion["private_ip"]
            made.names[bastion["private_ip"]] = made.name
        return made

    # -- lifecycle

    def __enter__(self) -> Bastion:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def connect(self) -> Bastion:
        if self._client is not None:
            return self
        label = f"{self.name} ({self.address}:{self.settings.port})"
        sock: socket.socket
        if self.settings.proxy_command:
            argv = expand_proxy_command(self.settings.proxy_command, self.address, self.settings.port,
                                        self.settings.user)  # fmt: skip
            self._proxy = ProxySocket(argv, label)
            sock = self._proxy.sock
        else:
            try:
                sock = socket.create_connection((self.address, self.settings.port), timeout=self.connect_timeout)
            except OSError as exc:
                raise SshError(f"{label}: TCP connect failed: {exc}") from None
        try:
            self._await_banner(sock, label)
            self._client = self._login(self.address, sock, label)
        except BaseException:
            self._close_proxy()
            if not self.settings.proxy_command:
                sock.close()
            raise
        self.transport.set_keepalive(KEEPALIVE)
        return self

    def _await_banner(self, sock: socket.socket, label: str) -> None:
        """Fail clearly when nothing answers: the first bytes of the SSH banner within the connect timeout."""
        sock.settimeout(self.connect_timeout)
        via = f" through `{self.settings.proxy_command}`" if self.settings.proxy_command else ""
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            raise SshError(
                f"{label}: no SSH banner within {self.connect_timeout:g} s{via} (nothing answers there)"
            ) from None
        except OSError as exc:
            raise SshError(f"{label}: connection failed{via}: {exc}") from None
        if not first:
            said = self._proxy.stderr_tail() if self._proxy is not None else ""
            raise SshError(f"{label}: connection closed before the SSH banner{via}" + (f": {said}" if said else ""))

    @property
    def client(self) -> paramiko.SSHClient:
        """The bastion's own SSH client (its transport is *the* session transport)."""
        if self._client is None:
            raise SshError(f"{self.name}: not connected")
        return self._client

    @property
    def proxy_process(self) -> subprocess.Popen | None:
        """The running proxy command that carries the session (None: direct connection)."""
        return self._proxy.process if self._proxy is not None else None

    @property
    def transport(self) -> paramiko.Transport:
        transport = self.client.get_transport()
        if transport is None:
            raise SshError(f"{self.name}: the SSH transport is closed")
        return transport

    def close(self) -> None:
        """Stop SOCKS servers, close broker clients, the transport and the proxy command; idempotent."""
        with self._lock:
            socks, self._socks = self._socks, []
            hosts, self._hosts = self._hosts, {}
        for server in socks:
            server.close()
        for client in hosts.values():
            client.close()
        if self._client is not None:
            self._client.close()
            self._client = None
        self._close_proxy()

    def _close_proxy(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None

    # -- logging in

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.settings.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return client

    def _login(self, address: str, sock: Any, label: str) -> paramiko.SSHClient:
        client = self._new_client()
        try:
            client.connect(
                address,
                port=self.settings.port,
                username=self.settings.user,
                key_filename=str(self.settings.private_key),
                sock=sock,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=AUTH_TIMEOUT,
                channel_timeout=self.channel_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"{label}: HOST KEY CHANGED: {self.settings.known_hosts} pins {_fingerprint(exc.expected_key)}, "
                f"the server offered {_fingerprint(exc.key)}",
                "if the instance was replaced on purpose, remove its line from that file and record the new key; "
                "otherwise someone may be intercepting the connection",
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshError(
                f"{label}: authentication as {self.settings.user!r} with {self.settings.private_key} failed: {exc}"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise HostKeyError(
                    f"{label}: no pinned host key for {address} in {self.settings.known_hosts}; refusing to connect"
                ) from None
            said = self._proxy.stderr_tail() if self._proxy is not None and address == self.address else ""
            said = f"; proxy command said: {said}" if said else ""
            raise SshError(f"{label}: SSH connection failed: {exc!r}{said}") from None
        return client

    # -- hops

    def label(self, host: str) -> str:
        name = self.names.get(host)
        return f"{name} ({host})" if name and name != host else host

    def hop(self, host: str, port: int, timeout: float | None = None) -> paramiko.Channel:
        """A ``direct-tcpip`` channel from the bastion to ``host:port`` (bounded open)."""
        budget = self.channel_timeout if timeout is None else timeout
        try:
            channel = self.transport.open_channel(
                "direct-tcpip", (host, int(port)), ("127.0.0.1", 0), timeout=budget
            )
        except paramiko.ChannelException as exc:
            raise SshError(
                f"{self.name} could not open {self.label(host)}:{port}: {exc.text} (code {exc.code})"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(
                f"{self.name} could not open {self.label(host)}:{port} within {budget:g} s: {exc!r}"
            ) from None
        return channel

    def client_for(self, private_ip: str) -> paramiko.SSHClient:
        """An SSH client to ``private_ip`` through the bastion (one per host, reused)."""
        if private_ip in (self.address, self.private_address):
            return self.client
        with self._lock:
            existing = self._hosts.get(private_ip)
        if existing is not None and existing.get_transport() is not None and existing.get_transport().is_active():
            return existing
        label = f"{self.label(private_ip)} via {self.name}"
        channel = self.hop(private_ip, self.settings.port)
        try:
            client = self._login(private_ip, channel, label)
        except BaseException:
            channel.close()
            raise
        with self._lock:
            self._hosts[private_ip] = client
        return client

    def address_of(self, host: str) -> str:
        """``host`` as an address: a display name (``bastion``, ``broker-1``) is looked up, an address kept."""
        if host == self.name:
            return self.address
        for address, name in self.names.items():
            if name == host:
                return address
        return host

    def run(self, host: str, command: str, timeout: float = COMMAND_TIMEOUT) -> RunResult:
        """Run ``command`` (a shell string) on ``host``: a name, the bastion's address, or a private IP.

        The remote side runs it under ``timeout`` (exit 124 when it expires); the
        local side gives up ``timeout + 5`` s after that and raises SshError.
        """
        address = self.address_of(host)
        return run_on(self.client_for(address), self.label(address), command, timeout, self.channel_timeout)

    # -- SOCKS

    def socks5(self, allowed: Callable[[str, int], bool] | None = None, port: int = 0) -> Socks5Server:
        """A started SOCKS5 server on 127.0.0.1 (``port`` 0: a free one) forwarding through this bastion; closed with it.

        Raises :class:`OSError` when ``port`` cannot be bound (e.g. ``EADDRINUSE``).
        """
        server = Socks5Server(self, allowed=allowed, port=port)
        with self._lock:
            self._socks.append(server)
        return server


def _fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def run_on(
    client: paramiko.SSHClient, label: str, command: str, timeout: float = COMMAND_TIMEOUT,
    channel_timeout: float = CHANNEL_TIMEOUT,
) -> RunResult:  # fmt: skip
    """Run ``command`` over ``client`` with a remote ``timeout`` and a local deadline."""
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        raise SshError(f"{label}: the SSH connection is closed")
    wrapped = f"timeout --kill-after=2 {timeout:g} /bin/sh -c {shlex.quote(command)}"
    started = time.monotonic()
    deadline = started + timeout + 5.0
    try:
        channel = transport.open_session(timeout=channel_timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SshError(f"{label}: cannot open a session channel: {exc!r}") from None
    out, err = bytearray(), bytearray()
    try:
        channel.settimeout(0.2)
        channel.exec_command(wrapped)
        channel.shutdown_write()
        while True:
            got = False
            while channel.recv_ready():
                out += channel.recv(_PUMP_CHUNK)
                got = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(_PUMP_CHUNK)
                got = True
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                raise SshError(f"{label}: `{command}` gave no exit status within {timeout + 5:g} s")
            if not got:
                try:
                    out += channel.recv(_PUMP_CHUNK)  # waits up to the 0.2 s channel timeout
                except TimeoutError:
                    pass
        rc = channel.recv_exit_status()
    finally:
        channel.close()
    return RunResult(
        host=label,
        command=command,
        rc=rc,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=round(time.monotonic() - started, 3),
    )


# --- SOCKS5 ------------------------------------------------------------------------------

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

    def __init__(self, bastion: Bastion, allowed: Callable[[str, int], bool] | None = None, port: int = 0) -> None:
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


__all__ = [
    "Bastion",
    "HostKeyError",
    "ProxySocket",
    "RunResult",
    "Socks5Server",
    "SocksStats",
    "SshError",
    "SshSettings",
    "expand_proxy_command",
    "run_on",
    "stop_process",
]
