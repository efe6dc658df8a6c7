"""Contract tests of generator/localaws/moto_server.py against a real moto server on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from generator.base.errors import InfraError
from generator.localaws import moto_server


def _ec2(server: moto_server.MotoServer):
    return server.ec2_client("ap-northeast-2")


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def state_dir(request, tmp_path) -> Path:
    state = tmp_path / "build" / "env" / ".kafkanet"
    request.addfinalizer(lambda: moto_server.stop(state))  # teardown before setup
    return state


@pytest.fixture(scope="module")
def shared(request, tmp_path_factory) -> moto_server.MotoServer:
    state = tmp_path_factory.mktemp("shared") / ".kafkanet"
    request.addfinalizer(lambda: moto_server.stop(state))
    return moto_server.start(state)


def test_server_answers_the_ec2_api(shared) -> None:
    vpc = _ec2(shared).create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]
    assert vpc["CidrBlock"] == "10.77.0.0/16"


def test_server_listens_on_loopback_only(shared) -> None:
    assert shared.url == f"http://127.0.0.1:{shared.port}"
    assert _listening_addresses(shared.port) == {"0100007F"}  # 127.0.0.1, no IPv6


def test_records_are_in_the_state_dir(shared) -> None:
    assert (shared.state_dir / "moto.pid").read_text().strip() == str(shared.pid)
    assert (shared.state_dir / "moto.port").read_text().strip() == str(shared.port)
    assert f"Running on http://127.0.0.1:{shared.port}" in shared.log_path.read_text()


def test_find_running_reconnects(shared) -> None:
    found = moto_server.find_running(shared.state_dir)
    assert found is not None and (found.pid, found.port) == (shared.pid, shared.port)
    assert found.healthy()


def test_env_points_sdks_at_the_server_with_fake_credentials(shared) -> None:
    env = shared.env()
    assert env["AWS_ENDPOINT_URL"] == shared.url
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_PROFILE"]) == ("testing", None)


def test_start_refuses_a_second_server_for_the_same_state(shared) -> None:
    with pytest.raises(InfraError, match="already running"):
        moto_server.start(shared.state_dir)


def test_ensure_running_reuses_the_server(shared) -> None:
    assert moto_server.ensure_running(shared.state_dir).pid == shared.pid


def test_reset_forgets_resources(state_dir) -> None:
    server = moto_server.start(state_dir)
    ec2 = _ec2(server)
    vpc_id = ec2.create_vpc(CidrBlock="10.88.0.0/16")["Vpc"]["VpcId"]
    server.reset()
    assert vpc_id not in [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]


def test_stop_kills_the_server_and_removes_the_pid_file(state_dir) -> None:
    server = moto_server.start(state_dir)
    server.stop()
    assert _gone(server.pid)
    assert not (state_dir / "moto.pid").exists() and not (state_dir / "moto.port").exists()
    assert moto_server.find_running(state_dir) is None


def test_stop_from_the_records_alone(state_dir) -> None:
    pid = moto_server.start(state_dir).pid  # as if the starting CLI had exited
    assert moto_server.stop(state_dir) is True
    assert _gone(pid)
    assert moto_server.stop(state_dir) is False


def test_find_running_clears_records_of_a_dead_server(state_dir) -> None:
    server = moto_server.start(state_dir)
    os.kill(server.pid, signal.SIGKILL)
    server._proc.wait()  # reap, as init would for a server whose CLI has exited
    assert moto_server.find_running(state_dir) is None
    assert not (state_dir / "moto.pid").exists()


def test_stale_pid_reused_by_another_program_is_not_signalled(state_dir) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state_dir.mkdir(parents=True)
        (state_dir / "moto.pid").write_text(f"{other.pid}\n")
        (state_dir / "moto.port").write_text("5000\n")
        assert moto_server.find_running(state_dir) is None
        assert moto_server.stop(state_dir) is False
        assert other.poll() is None
        assert not (state_dir / "moto.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_busy_port_fails_clearly_and_leaves_no_records(state_dir) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(InfraError, match=r"moto server did not start on 127\.0\.0\.1: it exited with code"):
            moto_server.start(state_dir, port=port, budget=15)
    assert not (state_dir / "moto.pid").exists()


def test_ec2_client_refuses_anything_but_loopback():
    with pytest.raises(InfraError, match=r"refusing an EC2 client for https://ec2.ap-northeast-2.amazonaws.com"):
        moto_server.ec2_client("https://ec2.ap-northeast-2.amazonaws.com", "ap-northeast-2")
    assert moto_server.ec2_client("http://127.0.0.1:5000", "ap-northeast-2").meta.endpoint_url == "http://127.0.0.1:5000"
