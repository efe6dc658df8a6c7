"""After a NAT failover the bastion address answers with the other NAT's host key: both are pinned.

A FakeSshd (tests/test_ssh.py) plays the active NAT on one loopback address; the
failover closes it and starts another FakeSshd, with its own host key, on the
same address and port. known_hosts pins both keys under that one address, as
kafkanet writes it for a NAT pair. The session reconnects on its own: a command
on the bastion and a SOCKS5 tunnel (what `kafkanet tunnel` serves) work again,
and a third, unpinned key is still refused.
"""

from __future__ import annotations

import socket
import time

import pytest

from generator.access import ssh
from generator.access.errors import HostKeyError
from tests.test_ssh import SOCKS_OK, USER, EchoServer, FakeSshd, make_key, socks_connect


@pytest.fixture
def pair(tmp_path):
    client_key_path = tmp_path / "id_ed25519"
    client_key = make_key(client_key_path)
    active_key = make_key(tmp_path / "active_host_key")
    standby_key = make_key(tmp_path / "standby_host_key")
    active = FakeSshd("127.0.0.1", 0, active_key, client_key)
    known = tmp_path / "known_hosts"
    known.write_text(active.known_hosts_line() + active.known_hosts_line(standby_key))  # one address, two keys
    settings = ssh.SshSettings(USER, client_key_path, known, None, active.port)
    servers = [active]
    echo = EchoServer()

    def fail_over(key=standby_key) -> FakeSshd:
        old = servers[-1]
        old.listener.shutdown(socket.SHUT_RDWR)  # wakes its accept(), which holds the port until it returns
        old.close()  # the active dies: its connections are reset
        deadline = time.monotonic() + 5
        while True:
            try:
                standby = FakeSshd("127.0.0.1", active.port, key, client_key)
                break
            except OSError:
                assert time.monotonic() < deadline, f"port {active.port} not free 5 s after the active closed"
                time.sleep(0.05)
        servers.append(standby)
        return standby

    yield type("Pair", (), {"settings": settings, "active": active, "fail_over": fail_over, "echo": echo,
                            "client_key": client_key, "tmp": tmp_path})  # fmt: skip
    for server in servers:
        server.close()
    echo.close()


def _dead(bastion: ssh.Bastion, budget: float = 5.0) -> None:
    deadline = time.monotonic() + budget
    while bastion.connected:
        assert time.monotonic() < deadline, "the old transport still looks alive after the failover"
        time.sleep(0.05)


def _echo_through(socks: ssh.Socks5Server, port: int) -> bytes:
    sock, code = socks_connect(socks.port, "127.0.0.1", port)
    with sock:
        assert code == SOCKS_OK
        sock.sendall(b"bike-station-status")
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    return got


def test_session_and_tunnel_reconnect_to_the_other_pinned_nat(pair):
    with ssh.Bastion("127.0.0.1", pair.settings) as bastion:
        socks = bastion.socks5()
        assert _echo_through(socks, pair.echo.port) == b"bike-station-status"
        first = bastion.transport.get_remote_server_key()
        standby = pair.fail_over()
        _dead(bastion)
        # the tunnel's next connection rides a new transport to the standby
        assert _echo_through(socks, pair.echo.port) == b"bike-station-status"
        assert bastion.connected
        second = bastion.transport.get_remote_server_key()
        assert first.asbytes() != second.asbytes() and second.asbytes() == standby.host_key.asbytes()
        assert ("127.0.0.1", pair.echo.port) in standby.forwarded


def test_an_unpinned_key_after_a_failover_is_refused(pair):
    with ssh.Bastion("127.0.0.1", pair.settings) as bastion:
        intruder = make_key(pair.tmp / "intruder_host_key")
        pair.fail_over(intruder)
        _dead(bastion)
        with pytest.raises(HostKeyError, match="HOST KEY CHANGED") as caught:
            bastion.hop("127.0.0.1", pair.echo.port)
        message = str(caught.value)
        assert str(pair.settings.known_hosts) in message and intruder.fingerprint in message
        assert message.count("ssh-ed25519") == 3  # both pinned keys and the offered one are named


def test_a_closed_session_does_not_reconnect(pair):
    bastion = ssh.Bastion("127.0.0.1", pair.settings).connect()
    bastion.close()
    with pytest.raises(ssh.SshError, match="not connected"):
        bastion.hop("127.0.0.1", pair.echo.port)


def test_known_hosts_pins_both_nats_under_the_elastic_ip(tmp_path):
    """kafkanet's known_hosts for a pair: the active's and the standby's keys, one address; the policy takes either."""
    import paramiko

    from generator.environment import hostkeys
    from tests.test_hostkeys import FakeEC2, _console

    active, standby, stranger = (paramiko.ECDSAKey.generate() for _ in range(3))
    bastion = {"instance_id": "i-nat", "public_ip": "203.0.113.10",
               "standby": {"instance_id": "i-nat2", "private_ip": "10.0.4.10", "az": "ap-northeast-2c"}}  # fmt: skip
    hosts = hostkeys.bastion_hosts(bastion)
    assert [(h.name, h.instance_id, h.addresses) for h in hosts] == [
        ("bastion", "i-nat", ("203.0.113.10",)), ("bastion-standby", "i-nat2", ("203.0.113.10",))]  # fmt: skip
    path = tmp_path / "known_hosts"
    path.write_text(hostkeys.known_hosts(FakeEC2({"i-nat": [_console(active)], "i-nat2": [_console(standby)]}), hosts))
    policy = ssh.PinnedKeys(path)
    for key in (active, standby):
        policy.missing_host_key(None, "203.0.113.10", key)  # accepted: no exception
    with pytest.raises(HostKeyError, match="HOST KEY CHANGED"):
        policy.missing_host_key(None, "203.0.113.10", stranger)
    with pytest.raises(HostKeyError, match="no pinned host key for 10.9.9.9"):
        policy.missing_host_key(None, "10.9.9.9", active)
    # a single NAT pins one key, as before
    assert len(hostkeys.bastion_hosts({"instance_id": "i-nat", "public_ip": "203.0.113.10"})) == 1
