"""generator.access.ssh, .proxy and .socks against in-process paramiko servers on loopback.

A "bastion" server on 127.0.0.1 and a "broker" server on 127.0.0.2 (same port
number, so the hop uses the session's SSH port as in a real VPC). Both run
commands locally with /bin/sh and the bastion forwards ``direct-tcpip`` only
to loopback. No namespaces, no root, nothing leaves the machine.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from generator.access import ssh
from generator.access.errors import HostKeyError, SshError
from generator.access.proxy import expand_proxy_command
from generator.access.socks import (
    SOCKS_COMMAND_UNSUPPORTED,
    SOCKS_NOT_ALLOWED,
    SOCKS_OK,
    SOCKS_REFUSED,
)
from generator.base.errors import UserError

USER = "ec2-user"


def make_key(path: Path) -> paramiko.Ed25519Key:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: FakeSshd) -> None:
        self.server = server
        self.forwards: dict[int, socket.socket] = {}

    def get_allowed_auths(self, username):  # noqa: ARG002
        return "publickey"

    def check_auth_publickey(self, username, key):
        if username == USER and key == self.server.authorized:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):  # noqa: ARG002
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):  # noqa: ARG002
        host, port = destination
        if not host.startswith("127."):
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            self.forwards[chanid] = socket.create_connection((host, port), timeout=2)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.server.forwarded.append(destination)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        # paramiko sends the request's success reply after this returns; a command that
        # finishes first would close the channel before it, and the client sees "Channel
        # closed" (seen under load). Start the command once the reply is on its way.
        later = threading.Timer(0.05, _execute, args=(channel, command.decode()))
        later.daemon = True
        later.start()
        return True


def _execute(channel: paramiko.Channel, command: str) -> None:
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=60)
    try:
        channel.sendall(proc.stdout)
        channel.sendall_stderr(proc.stderr)
        channel.send_exit_status(proc.returncode)
        channel.close()
    except (OSError, EOFError, paramiko.SSHException):  # the client left before reading it all (`... | head`)
        pass


def _relay(channel: paramiko.Channel, sock: socket.socket) -> None:
    def one_way(read, write, done):
        try:
            while data := read(65536):
                write(data)
            done()
        except OSError:  # the other side is already gone (ENOTCONN on shutdown): nothing left to pass on
            pass

    threading.Thread(target=one_way, args=(sock.recv, channel.sendall, channel.shutdown_write), daemon=True).start()
    one_way(channel.recv, sock.sendall, lambda: sock.shutdown(socket.SHUT_WR))


class FakeSshd:
    """A tiny SSH server: publickey auth, exec, direct-tcpip to loopback."""

    def __init__(self, address: str, port: int, host_key: paramiko.PKey, authorized: paramiko.PKey) -> None:
        self.host_key, self.authorized = host_key, authorized
        self.forwarded: list[tuple[str, int]] = []
        self.transports: list[paramiko.Transport] = []
        self.listener = socket.create_server((address, port))
        self.address, self.port = self.listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            interface = _Interface(self)
            try:
                transport.start_server(server=interface)
            except (paramiko.SSHException, EOFError, OSError):
                continue
            self.transports.append(transport)
            threading.Thread(target=self._channels, args=(transport, interface), daemon=True).start()

    def _channels(self, transport: paramiko.Transport, interface: _Interface) -> None:
        while transport.is_active():
            channel = transport.accept(0.2)
            if channel is None:
                continue
            forward = interface.forwards.pop(channel.get_id(), None)
            if forward is not None:
                threading.Thread(target=_relay, args=(channel, forward), daemon=True).start()

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        key = key or self.host_key
        return f"[{self.address}]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def close(self) -> None:
        self.listener.close()
        for transport in self.transports:
            transport.close()


class EchoServer:
    """A TCP echo server on a loopback address (e.g. a fake broker's "Kafka port")."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.listener = socket.create_server((address, 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


@pytest.fixture
def lab(tmp_path: Path):
    client_key_path = tmp_path / "id_ed25519"
    client_key = make_key(client_key_path)
    bastion = FakeSshd("127.0.0.1", 0, make_key(tmp_path / "bastion_host_key"), client_key)
    broker = FakeSshd("127.0.0.2", bastion.port, make_key(tmp_path / "broker_host_key"), client_key)
    known = tmp_path / "known_hosts"
    known.write_text(bastion.known_hosts_line() + broker.known_hosts_line())
    settings = ssh.SshSettings(USER, client_key_path, known, None, bastion.port)
    yield type("Lab", (), {"bastion": bastion, "broker": broker, "settings": settings, "tmp": tmp_path,
                           "known": known, "key": client_key_path})  # fmt: skip
    bastion.close()
    broker.close()


def session(lab, **options) -> ssh.Bastion:
    made = ssh.Bastion("127.0.0.1", lab.settings, connect_timeout=options.pop("connect_timeout", 5), **options)
    made.names["127.0.0.2"] = "broker-1"
    return made


# --- settings and tokens -------------------------------------------------------------------


def test_expand_proxy_command_tokens():
    argv = expand_proxy_command("ip netns exec kn_x_operator nc %h %p", "198.51.100.10", 22)
    assert argv == ["ip", "netns", "exec", "kn_x_operator", "nc", "198.51.100.10", "22"]
    argv = expand_proxy_command("relay --to=%r@%h:%p 100%%", "h", 2222, "root")
    assert argv == ["relay", "--to=root@h:2222", "100%"]


def test_expand_proxy_command_refuses_unknown_tokens():
    with pytest.raises(UserError, match="unsupported token %n"):
        expand_proxy_command("nc %n %p", "h", 22)


def test_settings_from_inventory_name_what_is_missing(tmp_path: Path):
    with pytest.raises(UserError) as error:
        ssh.SshSettings.from_inventory({"ssh": {"user": "root"}})
    assert error.value.problems == ["inventory: ssh.private_key is missing", "inventory: ssh.known_hosts is missing"]
    with pytest.raises(UserError, match="does not exist"):
        ssh.SshSettings.from_inventory(
            {"ssh": {"user": "root", "private_key": str(tmp_path / "nope"), "known_hosts": str(tmp_path / "kh")}}
        )


# --- the bastion ---------------------------------------------------------------------------------


def test_run_returns_rc_stdout_stderr(lab):
    with session(lab) as bastion:
        result = bastion.run("bastion", "echo out; echo err >&2; exit 3")
    assert (result.rc, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.host == "bastion (127.0.0.1)"
    with pytest.raises(SshError, match=r"bastion \(127.0.0.1\): `exit 3` exited 3"):
        ssh.RunResult(result.host, "exit 3", 3, "", "", 0.0).check()


def test_run_is_bounded_by_a_remote_timeout(lab):
    with session(lab) as bastion:
        started = time.monotonic()
        result = bastion.run("bastion", "sleep 10", timeout=1)
    assert result.timed_out and result.rc == 124
    assert time.monotonic() - started < 5


def test_unknown_host_is_refused_naming_the_file(lab):
    lab.known.write_text(lab.broker.known_hosts_line())  # only the broker is pinned
    with pytest.raises(HostKeyError) as error:
        session(lab).connect()
    message = str(error.value)
    assert "bastion (127.0.0.1" in message and str(lab.known) in message and "no pinned host key" in message


def test_changed_host_key_fails_loudly(lab):
    other = make_key(lab.tmp / "other")
    lab.known.write_text(lab.bastion.known_hosts_line(other) + lab.broker.known_hosts_line())
    with pytest.raises(HostKeyError) as error:
        session(lab).connect()
    message = str(error.value)
    assert "HOST KEY CHANGED" in message and str(lab.known) in message and "bastion (127.0.0.1" in message
    assert other.fingerprint in message and lab.bastion.host_key.fingerprint in message


def test_wrong_key_is_an_authentication_error(lab):
    make_key(lab.tmp / "stranger")
    settings = ssh.SshSettings(USER, lab.tmp / "stranger", lab.known, None, lab.bastion.port)
    with pytest.raises(SshError, match=r"authentication as 'ec2-user' with .*stranger failed"):
        ssh.Bastion("127.0.0.1", settings, connect_timeout=5).connect()


def test_client_for_hops_through_the_one_transport(lab):
    with session(lab) as bastion:
        client = bastion.client_for("127.0.0.2")
        assert bastion.client_for("127.0.0.2") is client  # one per host
        assert bastion.run("broker-1", "echo via-bastion").stdout == "via-bastion\n"
        assert bastion.client_for("127.0.0.1") is bastion.client
    assert lab.bastion.forwarded == [("127.0.0.2", lab.bastion.port)]  # the only hop made
    assert len(lab.bastion.transports) == 1


def test_hop_to_a_closed_port_names_host_and_port(lab):
    port = _closed_port()
    expected = rf"bastion could not open bastion \(127.0.0.1\):{port}: Connect failed \(code 2\)"
    with session(lab) as bastion, pytest.raises(SshError, match=expected):
        bastion.hop("127.0.0.1", port)


def test_broker_host_key_is_checked_too(lab):
    lab.known.write_text(lab.bastion.known_hosts_line())
    with session(lab) as bastion, pytest.raises(HostKeyError, match=r"broker-1 \(127.0.0.2\) via bastion"):
        bastion.client_for("127.0.0.2")


def test_close_is_idempotent_and_closes_everything(lab):
    bastion = session(lab).connect()
    hop_client = bastion.client_for("127.0.0.2")
    socks = bastion.socks5()
    bastion.close()
    bastion.close()
    assert hop_client.get_transport() is None or not hop_client.get_transport().is_active()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", socks.port), timeout=1).close()
    with pytest.raises(SshError, match="not connected"):
        bastion.run("bastion", "true")


# --- proxy command ----------------------------------------------------------------------------------

RELAY = """
import socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(None)
def up():
    while data := sys.stdin.buffer.read1(65536):
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536):
    sys.stdout.buffer.write(data); sys.stdout.buffer.flush()
"""


def test_proxy_command_carries_the_session_and_is_stopped_on_close(lab):
    relay = lab.tmp / "relay.py"
    relay.write_text(RELAY)
    settings = ssh.SshSettings(USER, lab.key, lab.known, f"{sys.executable} {relay} %h %p", lab.bastion.port)
    bastion = ssh.Bastion("127.0.0.1", settings, connect_timeout=5).connect()
    process = bastion._proxy.process
    assert bastion.run("bastion", "echo through-proxy").stdout == "through-proxy\n"
    assert bastion.run("127.0.0.2", "echo hop").stdout == "hop\n"
    bastion.close()
    assert process.poll() is not None  # waited for, no zombie left behind


def test_proxy_command_that_gets_no_answer_fails_in_time(lab):
    settings = ssh.SshSettings(USER, lab.key, lab.known, f"{sys.executable} -c 'import time; time.sleep(30)' %h %p",
                               lab.bastion.port)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(SshError, match=r"no SSH banner within 1 s through"):
        ssh.Bastion("127.0.0.1", settings, connect_timeout=1).connect()
    assert time.monotonic() - started < 5


def test_proxy_command_that_exits_reports_what_it_said(lab):
    settings = ssh.SshSettings(USER, lab.key, lab.known, "sh -c 'echo no-route-to-%0 >&2' %h", lab.bastion.port)
    with pytest.raises(UserError, match="unsupported token %0"):
        ssh.Bastion("127.0.0.1", settings).connect()
    settings = ssh.SshSettings(USER, lab.key, lab.known, "sh -c 'echo cannot reach $0 >&2' %h", lab.bastion.port)
    with pytest.raises(SshError, match="connection closed before the SSH banner.*cannot reach 127.0.0.1"):
        ssh.Bastion("127.0.0.1", settings, connect_timeout=5).connect()


# --- SOCKS5 -----------------------------------------------------------------------------------------------


def socks_connect(port: int, host: str, dest_port: int, command: int = 1) -> tuple[socket.socket, int]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"\x05\x01\x00")
    assert sock.recv(2) == b"\x05\x00"
    sock.sendall(struct.pack("!BBBB4sH", 5, command, 0, 1, socket.inet_aton(host), dest_port))
    reply = b""
    while len(reply) < 10:
        chunk = sock.recv(10 - len(reply))
        if not chunk:
            break
        reply += chunk
    return sock, reply[1]


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def test_socks5_forwards_over_a_bastion_channel(lab, echo):
    with session(lab) as bastion:
        socks = bastion.socks5()
        assert socks.url == f"socks5://127.0.0.1:{socks.port}"
        sock, code = socks_connect(socks.port, "127.0.0.1", echo.port)
        with sock:
            assert code == SOCKS_OK
            payload = "망원역 1번출구 앞".encode() * 2000
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # half-close travels through
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        assert got == payload
        assert ("127.0.0.1", echo.port) in lab.bastion.forwarded
        assert socks.stats.connections == 1 and socks.stats.bytes_up == len(payload) == socks.stats.bytes_down
        assert socks.stats.destinations == {f"127.0.0.1:{echo.port}": 1}


def test_socks5_connect_only(lab, echo):
    with session(lab) as bastion:
        socks = bastion.socks5()
        sock, code = socks_connect(socks.port, "127.0.0.1", echo.port, command=2)  # BIND
        sock.close()
    assert code == SOCKS_COMMAND_UNSUPPORTED


def test_socks5_refuses_destinations_not_allowed(lab, echo):
    with session(lab) as bastion:
        socks = bastion.socks5(allowed=lambda host, port: port == 9092)
        sock, code = socks_connect(socks.port, "127.0.0.1", echo.port)
        sock.close()
    assert code == SOCKS_NOT_ALLOWED and lab.bastion.forwarded == []


def test_socks5_reports_a_refused_destination(lab):
    with session(lab) as bastion:
        socks = bastion.socks5()
        sock, code = socks_connect(socks.port, "127.0.0.1", _closed_port())
        sock.close()
    assert code == SOCKS_REFUSED and socks.stats.refused == 1


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python 3.0's schema loading
def test_socks5_serves_kafka_python_socks_client(lab, echo):
    """kafka-python 3.x's own SOCKS5 state machine (what proxy_url uses) gets through."""
    from kafka.net.socks5 import Socks5Proxy

    with session(lab) as bastion:
        socks = bastion.socks5()
        proxy = Socks5Proxy(socks.url)
        sock = proxy.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        deadline = time.monotonic() + 5
        while (code := _try(proxy, sock, ("127.0.0.1", echo.port))) != 0:
            assert code in (None, 115, 114) and time.monotonic() < deadline, f"SOCKS handshake failed: {code}"
            time.sleep(0.01)
        sock.setblocking(True)
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        sock.close()


def _try(proxy, sock, address):
    try:
        return proxy.connect_ex(sock, address)
    except (BlockingIOError, InterruptedError):
        return None


def test_testinfra_host_rides_the_session_client_and_never_reconnects(lab):
    from integration.hosts import testinfra_host, write_guard_config

    guard = write_guard_config(lab.tmp)
    with session(lab) as bastion:
        host = testinfra_host(bastion.client_for("127.0.0.2"), "broker-1", USER, guard, command_timeout=5)
        assert host.run("echo %s", "hello").stdout == "hello\n"
        assert host.check_output("echo again") == "again"
        del host.backend.client  # what testinfra does after a transport error
        started = time.monotonic()
        with pytest.raises((paramiko.SSHException, OSError, EOFError)):
            host.run("true")
        assert time.monotonic() - started < 30
    assert len(lab.bastion.transports) == 1
