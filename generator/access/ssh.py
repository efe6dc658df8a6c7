"""SSH through the bastion: one transport per session, hops as channels, commands run on them.

This module owns the SSH session: :class:`SshSettings` (the inventory's
``ssh`` section), :class:`Bastion` (one :class:`paramiko.Transport` to the
bastion, reached directly or through the proxy command of
:mod:`generator.access.proxy`, host keys pinned to the environment's own
known_hosts, every other host a ``direct-tcpip`` channel on it) and
:func:`run_on` with its :class:`RunResult` (a command under a remote
``timeout`` and a local deadline). The SOCKS5 server over those channels is
:mod:`generator.access.socks`; the errors are :mod:`generator.access.errors`.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from generator.access.errors import HostKeyError, SshError
from generator.access.proxy import ProxySocket, expand_proxy_command
from generator.access.socks import Socks5Server
from generator.base.errors import UserError

CONNECT_TIMEOUT = 10.0  # TCP connect / proxy command to the bastion, and the SSH banner
AUTH_TIMEOUT = 10.0
CHANNEL_TIMEOUT = 10.0  # opening a session or direct-tcpip channel
COMMAND_TIMEOUT = 30.0  # default for run()
KEEPALIVE = 15  # seconds between keepalives on the bastion transport
_READ_CHUNK = 65536  # bytes per read of a command's output


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
    """One SSH transport to the bastion for a whole session; everything else hops through it.

    The operator reaches the bastion (the NAT instance) once, either through the
    inventory's ``ssh.proxy_command`` (OpenSSH tokens ``%h %p %r %%``) or with a
    direct TCP connect, and authenticates with the environment's key. Everything
    else rides that one :class:`paramiko.Transport`:

    * :meth:`hop` opens a ``direct-tcpip`` channel from the bastion to a
      private address (the paramiko way of ``ProxyJump``);
    * :meth:`client_for` returns an SSH client to a broker whose socket is
      such a channel (cached: one per host for the session);
    * :meth:`run` runs a command on the bastion or a broker, bounded by a
      remote ``timeout`` and a local deadline;
    * :meth:`socks5` starts a :class:`~generator.access.socks.Socks5Server`
      (``127.0.0.1``, an ephemeral or given port, CONNECT only, no auth) that
      forwards each accepted connection over its own ``direct-tcpip`` channel,
      for kafka-python 3.x ``proxy_url="socks5://127.0.0.1:PORT"``.

    Host keys are checked against the environment's own known_hosts file only
    (never ``~/.ssh/known_hosts``), with :class:`paramiko.RejectPolicy`: an unknown
    host or a changed key raises :class:`~generator.access.errors.HostKeyError`
    naming the host and the file. No private key ever leaves the operator's
    machine. Every network wait has a bound; :meth:`close` stops the SOCKS
    servers, the broker clients, the transport and the proxy command, in that order.
    """

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
        self._closed = False  # closed on purpose: no reconnecting
        self._reconnecting = threading.Lock()  # one reconnect at a time (SOCKS threads share the session)

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
        self._closed = False
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

    def reconnect(self) -> Bastion:
        """Connect again when the bastion's transport has died; a no-op while it lives.

        A NAT pair's failover moves the bastion's address to the other instance:
        the old transport is reset (or goes silent), and the new one answers on
        the same address with its own, also pinned, host key. Broker clients rode
        the old transport, so they are dropped and made again on demand; SOCKS
        servers keep listening and open their next channels on the new transport.
        """
        with self._reconnecting:
            with self._lock:
                if self.connected or self._closed:
                    return self
                hosts, self._hosts = self._hosts, {}
            self._close_connections(hosts)
            return self.connect()

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
        """The live session transport; a dead one (a NAT failover) is replaced first, unless closed on purpose."""
        if self._client is not None and not self._closed and not self.connected:
            self.reconnect()
        transport = self.client.get_transport()
        if transport is None:
            raise SshError(f"{self.name}: the SSH transport is closed")
        return transport

    def close(self) -> None:
        """Stop SOCKS servers, close broker clients, the transport and the proxy command; idempotent."""
        with self._lock:
            self._closed = True
            socks, self._socks = self._socks, []
            hosts, self._hosts = self._hosts, {}
        for server in socks:
            server.close()
        self._close_connections(hosts)

    def _close_connections(self, hosts: dict) -> None:
        """Close the broker clients ``hosts`` (taken out of ``_hosts``), the transport and the proxy command."""
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
        # No keys loaded into paramiko's store (one per address and type): every
        # server key goes to the policy, which knows all the keys pinned per address.
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(PinnedKeys(self.settings.known_hosts))
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
        except HostKeyError as exc:
            client.close()
            raise HostKeyError(f"{label}: {exc.args[0]}", *exc.args[1:]) from None
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
        if not self.connected and not self._closed:
            self.reconnect()  # after a NAT failover: the same address, the other NAT
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
            if not self.connected and not self._closed:
                self.reconnect()
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


class PinnedKeys(paramiko.MissingHostKeyPolicy):
    """Accept a server only when its key is one of those pinned for its address in known_hosts.

    paramiko's own store keeps one key per address and key type, but a NAT pair's
    bastion address (the Elastic IP, which moves on failover) is served by two
    instances over time, each with its own key: known_hosts pins both under the
    one address, and either is accepted. Any other key is refused loudly.
    """

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts
        self.entries: list[paramiko.hostkeys.HostKeyEntry] = []
        for line in known_hosts.read_text().splitlines():
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line)
            except paramiko.SSHException:
                entry = None  # a key type paramiko cannot read: never matches
            if entry is not None:
                self.entries.append(entry)

    def pinned(self, hostname: str) -> list[paramiko.PKey]:
        names = {hostname, hostname.removeprefix("[").split("]:")[0]}
        return [e.key for e in self.entries if names & set(e.hostnames)]

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        keys = self.pinned(hostname)
        if any(k.get_name() == key.get_name() and k.asbytes() == key.asbytes() for k in keys):
            return
        if not keys:
            raise HostKeyError(f"no pinned host key for {hostname} in {self.known_hosts}; refusing to connect")
        raise HostKeyError(
            f"HOST KEY CHANGED: {self.known_hosts} pins {', '.join(_fingerprint(k) for k in keys)}, "
            f"the server offered {_fingerprint(key)}",
            "if the instance was replaced on purpose, remove its line from that file and record the new key; "
            "otherwise someone may be intercepting the connection",
        )


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
                out += channel.recv(_READ_CHUNK)
                got = True
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(_READ_CHUNK)
                got = True
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                raise SshError(f"{label}: `{command}` gave no exit status within {timeout + 5:g} s")
            if not got:
                try:
                    out += channel.recv(_READ_CHUNK)  # waits up to the 0.2 s channel timeout
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


__all__ = ["Bastion", "RunResult", "SshSettings", "run_on"]
