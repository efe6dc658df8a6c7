"""`kafkanet ssh`, `kafkanet tunnel` and the generated ssh_config on the live seed environment (local target).

Why this file's name: it needs the session's seed environment intact, and
test_lifecycle_breaks.py ends by killing the seed's moto server and destroying
it. pytest runs a directory's files in name order, so `test_lifecycle_access`
runs after test_lifecycle.py (which applies nothing else) and before
test_lifecycle_breaks.py. The `live` fixture turns a different order (a
plugin shuffling files, a rename) into a clear failure instead of confusing ones.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import uuid

import pytest

from generator.environment import sshconfig
from integration import records
from tests.conftest import ROOT, require
from tests.test_access import read_line
from tests.test_ssh import socks_connect

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]

BROKERS = ("broker-1", "broker-2", "broker-3")
KAFKA_BOUND_MS = 15_000
RECORDS = 20


@pytest.fixture
def live(seed):
    if not seed.env.inventory_path.exists():
        pytest.fail(f"the session's seed {seed.name} is no longer applied: these tests must run before "
                    "test_lifecycle_breaks.py destroys it (pytest's file order; see this module's docstring)")  # fmt: skip
    return seed


def broker(seed, name: str) -> dict:
    return next(b for b in seed.inventory["brokers"] if b["name"] == name)


def aws_hostname(private_ip: str) -> str:
    """What `hostname` says on an instance of the local plane (as on EC2)."""
    return f"ip-{private_ip.replace('.', '-')}"


def cli_env(seed) -> dict[str, str]:
    return {**os.environ, "KAFKANET_BUILD_ROOT": str(seed.build_root)}


# --- kafkanet ssh -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BROKERS)
def test_ssh_runs_a_command_on_a_broker(name, live, capsys):
    assert live.cli("ssh", str(live.spec), name, "--", "hostname") == 0
    assert capsys.readouterr().out == aws_hostname(broker(live, name)["private_ip"]) + "\n"


def test_ssh_runs_a_command_on_the_bastion_by_its_private_ip(live, capsys):
    bastion = live.inventory["bastion"]
    assert live.cli("ssh", str(live.spec), bastion["private_ip"], "--", "hostname") == 0
    assert capsys.readouterr().out == aws_hostname(bastion["private_ip"]) + "\n"


@pytest.mark.parametrize(("command", "status"), [("false", 1), ("exit 42", 42), ("true", 0)])
def test_ssh_exits_with_the_remote_status(command, status, live, capsys):
    assert live.cli("ssh", str(live.spec), "broker-2", "--", command) == status
    capsys.readouterr()


def test_ssh_keeps_stdout_and_stderr_apart(live, capsys):
    assert live.cli("ssh", str(live.spec), "broker-3", "--", "echo out; echo err >&2") == 0
    assert capsys.readouterr() == ("out\n", "err\n")


def test_ssh_forwards_stdin(live, tmp_path, monkeypatch, capsys):
    row = records.encode(records.station_rows(1)[0]).value  # Korean station name: bytes intact both ways
    given = tmp_path / "stdin"
    given.write_bytes(row)
    with given.open("rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert live.cli("ssh", str(live.spec), "broker-1", "--", "cat") == 0
    assert capsys.readouterr().out == row.decode()


def test_ssh_to_an_unknown_host_is_exit_2(live, capsys):
    assert live.cli("ssh", str(live.spec), "broker-4", "--", "hostname") == 2
    err = capsys.readouterr().err
    assert f"HOST 'broker-4' is not a host of {live.name}; use one of: bastion, broker-1, broker-2, broker-3" in err


def test_interactive_shell_on_a_pty(live):
    """A real terminal: the remote shell sees its size (also after a resize), exits with its status,
    and the local terminal leaves raw mode."""
    cmd = [sys.executable, "-m", "generator.cli", "ssh", str(live.spec), "broker-2"]
    pid, master = pty.fork()
    if pid == 0:  # the child: stdin/stdout/stderr are the pty's slave
        try:
            os.chdir(ROOT)
            os.execve(cmd[0], cmd, cli_env(live))
        finally:
            os._exit(127)  # never return into pytest
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        seen = bytearray()

        def until(marker: bytes, budget: float) -> None:
            deadline = time.monotonic() + budget
            while marker not in seen:
                left = deadline - time.monotonic()
                assert left > 0, f"waited {budget:g} s for {marker!r} on the terminal; saw {bytes(seen)[-300:]!r}"
                if select.select([master], [], [], min(left, 0.2))[0]:
                    try:
                        seen.extend(os.read(master, 4096))
                    except OSError:  # EIO: the child closed the terminal
                        raise AssertionError(f"terminal closed before {marker!r}; saw {bytes(seen)[-300:]!r}") from None

        hostname = aws_hostname(broker(live, "broker-2")["private_ip"]).encode()
        until(hostname + b":", 20)  # the prompt, root@ip-10-0-2-10:~#
        os.write(master, b"stty size\n")
        until(b"33 101", 10)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # the kernel sends SIGWINCH
        time.sleep(0.3)  # let the resize reach the remote pty before asking
        os.write(master, b"stty size; exit 3\n")
        until(b"40 120", 10)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 3
        lflag = termios.tcgetattr(master)[3]
        assert lflag & termios.ICANON and lflag & termios.ECHO, "the terminal was left in raw mode"
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)


# --- the generated ssh_config -----------------------------------------------------------------------------


def test_apply_wrote_an_ssh_config_openssh_reads(live):
    path = live.env.build_dir / sshconfig.SSH_CONFIG
    out = subprocess.run([require("ssh"), "-G", "-F", str(path), f"{live.name}-broker-1"],
                         capture_output=True, text=True, timeout=10, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert got["hostname"] == "10.0.1.10" and got["proxyjump"] == f"{live.name}-bastion"
    assert got["userknownhostsfile"] == live.inventory["ssh"]["known_hosts"]


@pytest.mark.parametrize("name", ["bastion", "broker-1"])
def test_openssh_reaches_a_host_with_the_ssh_config(name, live):
    path = live.env.build_dir / sshconfig.SSH_CONFIG
    out = subprocess.run(
        [require("ssh"), "-F", str(path), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", f"{live.name}-{name}",
         "hostname"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    private_ip = live.inventory["bastion"]["private_ip"] if name == "bastion" else broker(live, name)["private_ip"]
    assert (out.returncode, out.stdout) == (0, aws_hostname(private_ip) + "\n"), out.stderr


# --- kafkanet tunnel ------------------------------------------------------------------------------------


@pytest.fixture
def tunnel(live):
    """`kafkanet tunnel SPEC --port 0` as a subprocess: (process, proxy URL, example line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator.cli", "tunnel", str(live.spec), "--port", "0"],
        env=cli_env(live), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = read_line(proc.stdout, 30).strip()
        example = read_line(proc.stdout, 5).strip()
        yield proc, url, example
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python 3.0's schema loading
def test_tunnel_carries_a_kafka_round_trip_and_nothing_else(live, tunnel):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    proc, url, example = tunnel
    inv = live.inventory
    assert url.startswith("socks5h://127.0.0.1:")
    assert example == f'KafkaProducer(bootstrap_servers="{inv["kafka"]["bootstrap_servers"]}", proxy_url="{url}")'
    # tansu: every broker keeps its own store, so one broker is the whole cluster for a round trip
    bootstrap = f"{inv['brokers'][0]['private_ip']}:{inv['kafka']['port']}"
    common = {"proxy_url": url, "request_timeout_ms": KAFKA_BOUND_MS, "bootstrap_timeout_ms": KAFKA_BOUND_MS,
              "reconnect_backoff_max_ms": 1000, "client_id": "kafkanet-tunnel-test"}  # fmt: skip
    topic = f"tunnel-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **common)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)], timeout_ms=KAFKA_BOUND_MS)
    finally:
        admin.close()
    sent = records.records(RECORDS, seed=7)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=KAFKA_BOUND_MS, **common)
    try:
        for record in sent:
            producer.send(topic, key=record.key, value=record.value)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **common)
    tp = TopicPartition(topic, 0)
    got: list = []
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 30
        while len(got) < RECORDS and time.monotonic() < deadline:
            got.extend(consumer.poll(timeout_ms=1000).get(tp, []))
    finally:
        consumer.close()
    assert [(m.key, m.value) for m in got] == [(r.key, r.value) for r in sent]

    port = int(url.rsplit(":", 1)[1])
    web = inv["probe_url"].split("/")[2]  # the emulated internet's web host: the bastion reaches it, the tunnel must not
    for host, dest in ((web, 80), (inv["bastion"]["private_ip"], 22), (inv["brokers"][0]["private_ip"], 9093)):
        sock, code = socks_connect(port, host, dest)
        sock.close()
        assert code == 0x02, f"{host}:{dest} is no broker endpoint, yet the tunnel answered {code:#04x}"
    sock, code = socks_connect(port, inv["brokers"][1]["private_ip"], 22)  # control: same path, allowed
    with sock:
        assert code == 0x00 and sock.recv(8) == b"SSH-2.0-"

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5, "the tunnel took too long to stop"
    err = proc.stderr.read().decode()
    assert "refused" in err and "tunnel stopped:" in err, err
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_tunnel_on_a_port_in_use_is_exit_2(live, capsys):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert live.cli("tunnel", str(live.spec), "--port", str(port)) == 2
    assert f"--port {port}: 127.0.0.1:{port} is already in use" in capsys.readouterr().err


def test_tunnel_and_ssh_refuse_the_other_target(live, capsys):
    assert live.cli("tunnel", str(live.spec), "--target", "aws") == 2
    assert live.cli("ssh", str(live.spec), "broker-1", "--target", "aws", "--", "true") == 2
    assert capsys.readouterr().err.count("was applied with --target local") == 2
