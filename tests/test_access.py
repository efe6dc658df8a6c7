"""`kafkanet ssh` / `kafkanet tunnel` against in-process SSH servers on loopback (no namespaces).

A fake environment: an inventory in the seed's build directory whose bastion
is a paramiko server on 127.0.0.1 and whose one broker is another on
127.0.0.2 (same port), host keys pinned in its known_hosts. On the local
target the session goes through the inventory's ProxyCommand (`nc %h %p`, to
loopback), as it does through the operator namespace on the real plane. The
same commands on a live environment: test_lifecycle_access.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.access import commands as access
from generator.base.errors import UserError
from generator.cli import main
from generator.environment import session
from tests.conftest import ROOT, SEED, require
from tests.test_ssh import USER, EchoServer, FakeSshd, make_key, socks_connect

NAME = "ttareungyi"  # the seed's name: `kafkanet ... SEED` finds the fake inventory in its build directory


def sshd_pair(tmp: Path, client_key) -> tuple[FakeSshd, FakeSshd]:
    """Bastion on 127.0.0.1 and broker on 127.0.0.2 at the same port (the session's SSH port, as in a VPC).

    The bastion's port is free on 127.0.0.1; on a busy machine it may not be on
    127.0.0.2, so another pair is tried (a bounded number of times)."""
    bastion_key, broker_key = make_key(tmp / "bastion_host_key"), make_key(tmp / "broker_host_key")
    for _ in range(5):
        bastion = FakeSshd("127.0.0.1", 0, bastion_key, client_key)
        try:
            return bastion, FakeSshd("127.0.0.2", bastion.port, broker_key, client_key)
        except OSError:
            bastion.close()
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2 in 5 tries")


def fake_inventory(tmp: Path, build: Path, target: str) -> dict:
    key = tmp / "id_ed25519"
    client_key = make_key(key)
    bastion, broker = sshd_pair(tmp, client_key)
    echo = EchoServer("127.0.0.2")
    known = tmp / "known_hosts"
    known.write_text(bastion.known_hosts_line() + broker.known_hosts_line())
    inventory = {
        "version": 1, "environment": NAME, "target": target, "region": "ap-northeast-2",
        "ssh": {"user": USER, "private_key": str(key), "known_hosts": str(known),
                "proxy_command": "nc %h %p" if target == "local" else None, "port": bastion.port},
        "bastion": {"name": "bastion", "public_ip": "127.0.0.1", "private_ip": "10.0.0.10"},
        "brokers": [{"name": "broker-1", "private_ip": "127.0.0.2", "node_id": 1}],
        "kafka": {"port": echo.port, "bootstrap_servers": f"127.0.0.2:{echo.port}", "implementation": "tansu"},
    }  # fmt: skip
    state = build / NAME / ".kafkanet"
    state.mkdir(parents=True)
    (state / "inventory.json").write_text(json.dumps(inventory))
    (state / "target.json").write_text(json.dumps({"target": target, "environment": NAME}))
    return {"inventory": inventory, "servers": (bastion, broker, echo)}


@pytest.fixture
def fake_env(tmp_path: Path, _build_root: Path, monkeypatch):
    require("nc")
    monkeypatch.setattr(session.os, "geteuid", lambda: 0)  # the local target's root check; nothing needs it here
    made = fake_inventory(tmp_path, _build_root, "local")
    yield made["inventory"]
    for server in made["servers"]:
        server.close()


# --- hosts ---------------------------------------------------------------------------------------


SAMPLE = {
    "environment": "lab",
    "bastion": {"name": "bastion", "public_ip": "198.51.100.10", "private_ip": "10.0.0.10", "aws_public_ip": "127.0.0.2"},
    "brokers": [{"name": "broker-1", "private_ip": "10.0.1.10"}, {"name": "broker-2", "private_ip": "10.0.2.10"}],
}


@pytest.mark.parametrize(
    ("wanted", "name", "address"),
    [("bastion", "bastion", "198.51.100.10"), ("broker-2", "broker-2", "10.0.2.10"),
     ("10.0.1.10", "broker-1", "10.0.1.10"), ("10.0.0.10", "bastion", "198.51.100.10"),
     ("198.51.100.10", "bastion", "198.51.100.10")],
)  # fmt: skip
def test_find_host_by_name_or_address(wanted, name, address):
    assert access.find_host(SAMPLE, wanted) == access.Host(name, address)


def test_unknown_host_lists_the_valid_ones():
    with pytest.raises(UserError) as error:
        access.find_host(SAMPLE, "broker-9")
    assert error.value.problems == [
        (
            "HOST 'broker-9' is not a host of lab; use one of: bastion, broker-1, broker-2 "
            "(or a broker's private IP: 10.0.1.10, 10.0.2.10)"
        )
    ]


def test_tunnel_reaches_only_the_brokers_kafka_and_ssh_ports():
    inventory = {**SAMPLE, "region": "ap-northeast-2", "kafka": {"port": 9092}, "ssh": {"port": 22}}
    allowed = access.tunnel_destinations(inventory)
    assert ("10.0.1.10", 9092) in allowed and ("10.0.2.10", 22) in allowed
    assert ("ip-10-0-1-10.ap-northeast-2.compute.internal", 9092) in allowed
    assert ("10.0.1.10", 9093) not in allowed and ("10.0.0.10", 22) not in allowed
    assert ("198.51.100.10", 22) not in allowed and ("203.0.113.80", 80) not in allowed
    assert len(allowed) == 2 * 2 * 2  # brokers x names x ports


def test_local_target_without_a_proxy_command_is_refused():
    inventory = {**SAMPLE, "target": "local", "ssh": {"proxy_command": None}}
    with pytest.raises(UserError, match="target local without ssh.proxy_command"):
        access.connect(inventory)


# --- kafkanet ssh ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["bastion", "broker-1", "127.0.0.2"])
def test_ssh_runs_a_command_and_streams_both_outputs(host, fake_env, capsys):
    assert main(["ssh", str(SEED), host, "--", "echo out-$((6*7)); echo err >&2"]) == 0
    out, err = capsys.readouterr()
    assert out == "out-42\n" and err == "err\n"


def test_ssh_exits_with_the_remote_status(fake_env, capsys):
    assert main(["ssh", str(SEED), "broker-1", "--", "exit", "7"]) == 7  # words joined, as ssh does
    assert main(["ssh", str(SEED), "broker-1", "--", "false"]) == 1
    capsys.readouterr()


def test_ssh_to_an_unknown_host_is_exit_2(fake_env, capsys):
    assert main(["ssh", str(SEED), "broker-7", "--", "true"]) == 2
    assert "HOST 'broker-7' is not a host of ttareungyi; use one of: bastion, broker-1" in capsys.readouterr().err


def test_ssh_without_a_command_needs_a_terminal(fake_env, capsys):
    assert main(["ssh", str(SEED), "broker-1"]) == 2  # pytest's stdin is no terminal
    assert "stdin is not a terminal: pass a command after --" in capsys.readouterr().err


def test_ssh_before_apply_says_to_apply(capsys):
    assert main(["ssh", str(SEED), "broker-1", "--", "true"]) == 2
    assert "run `kafkanet apply SPEC` first" in capsys.readouterr().err


def test_ssh_with_a_changed_host_key_fails_loudly(fake_env, tmp_path, capsys):
    known = Path(fake_env["ssh"]["known_hosts"])
    lines = known.read_text().splitlines()
    other = make_key(tmp_path / "other")
    known.write_text(f"{lines[0].split()[0]} {other.get_name()} {other.get_base64()}\n{lines[1]}\n")
    assert main(["ssh", str(SEED), "bastion", "--", "true"]) == 3
    assert "HOST KEY CHANGED" in capsys.readouterr().err


# --- kafkanet tunnel --------------------------------------------------------------------------------


def read_line(stream, budget: float) -> str:
    """One line from a subprocess pipe, waiting at most ``budget`` seconds."""
    deadline = time.monotonic() + budget
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise AssertionError(f"no complete line within {budget:g} s (got {line!r})")
        byte = os.read(stream.fileno(), 1)
        if not byte:
            raise AssertionError(f"stream closed after {line!r}")
        line += byte
    return line.decode()


def start_tunnel(build_root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "tunnel", str(SEED), *args],
        env={**os.environ, "KAFKANET_BUILD_ROOT": str(build_root)}, cwd=ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_tunnel_serves_the_brokers_only_and_stops_cleanly_on_sigterm(tmp_path, _build_root):
    made = fake_inventory(tmp_path, _build_root, "aws")  # aws: dialled directly, no root needed
    echo = made["servers"][2]
    proc = start_tunnel(_build_root, "--target", "aws")
    try:
        url = read_line(proc.stdout, 20).strip()
        example = read_line(proc.stdout, 5).strip()
        assert url.startswith("socks5h://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert example == f'KafkaProducer(bootstrap_servers="127.0.0.2:{echo.port}", proxy_url="{url}")'
        sock, code = socks_connect(port, "127.0.0.2", echo.port)  # the broker's "Kafka" port
        with sock:
            assert code == 0
            sock.sendall(b"bike-station-status")
            assert sock.recv(64) == b"bike-station-status"
        for host, dest_port in (("127.0.0.1", echo.port), ("127.0.0.2", echo.port + 1)):
            sock, code = socks_connect(port, host, dest_port)
            sock.close()
            assert code == 0x02, f"{host}:{dest_port} is no broker endpoint, yet the tunnel answered {code}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read().decode()
        assert "tunnel stopped: 1 connection(s) carried, 2 refused" in err, err
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for server in made["servers"]:
            server.close()


def test_tunnel_on_a_port_in_use_is_exit_2(tmp_path, _build_root, capsys):
    made = fake_inventory(tmp_path, _build_root, "aws")
    try:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            assert main(["tunnel", str(SEED), "--target", "aws", "--port", str(port)]) == 2
        assert f"--port {port}: 127.0.0.1:{port} is already in use" in capsys.readouterr().err
    finally:
        for server in made["servers"]:
            server.close()


# --- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "dest", "words"),
    [
        (["ssh", "S", "broker-1", "--target", "aws", "--", "echo", "--", "-n"], "remote_command", ["echo", "--", "-n"]),
        (["ssh", "S", "broker-1", "hostname"], "remote_command", ["hostname"]),
        (["ssh", "S", "broker-1"], "remote_command", []),
        (["test", "S", "--target", "aws", "--", "-k", "kafka"], "pytest_args", ["-k", "kafka"]),
        (["e2e", "S", "--keep", "--", "-x"], "pytest_args", ["-x"]),
    ],
)
def test_words_after_double_dash_reach_the_command_whatever_options_come_before(argv, dest, words):
    from generator.cli import build_parser, parse

    args = parse(build_parser(), argv)
    assert getattr(args, dest) == words
    assert args.target == ("aws" if "aws" in argv else "local")


def test_double_dash_on_a_command_that_takes_nothing_after_it_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["destroy", str(SEED), "--", "now"])
    assert exit_.value.code == 2
    assert "kafkanet destroy takes nothing after --: now" in capsys.readouterr().err


def test_ssh_into_a_closed_pipe_stops_quietly(tmp_path, _build_root):
    """`kafkanet ssh ... | head -1`: no traceback, the shell's 128+SIGPIPE status."""
    made = fake_inventory(tmp_path, _build_root, "aws")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "generator.cli", "ssh", str(SEED), "bastion", "--target", "aws", "--",
             "seq 1 300000"],
            env={**os.environ, "KAFKANET_BUILD_ROOT": str(_build_root)}, cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert read_line(proc.stdout, 20) == "1\n"
        proc.stdout.close()  # what head does after its line
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 141 and err == b""  # 128 + SIGPIPE, as a shell pipeline reports
    finally:
        for server in made["servers"]:
            server.close()
