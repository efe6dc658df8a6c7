"""The local data plane with real packets (root): the reference topology read back from moto.

Every connect has an explicit timeout; every negative probe has a positive
control on the same code path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from generator.module.keys import ensure_key
from localvpc import netns, plane, render, snapshot, translation
from localvpc.errors import PlaneInfraError
from localvpc.results import PlaneInfo
from tests.conftest import hears_ctrl_c
from tests.localvpc.helpers import (
    KAFKA_SCRIPT,
    Live,
    load_snapshot,
    require_root_plane,
    unique_env,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

CONNECT = 2.0  # seconds for a probe that is expected to fail
BROKERS = ["broker-1", "broker-2", "broker-3"]
ROOT = Path(__file__).resolve().parents[2]


def expect_unreachable(
    ns: str, address: tuple[str, int], budget: float = CONNECT, source: str | None = None
) -> OSError:
    """The connect fails (refused, unreachable or timed out) within ``budget`` (+1 s slack)."""
    __tracebackhide__ = True
    started = time.monotonic()
    try:
        sock = netns.netns_socket(ns, address, budget, source=source)
    except OSError as exc:
        elapsed = time.monotonic() - started
        assert elapsed < budget + 1.0, f"{address} from {ns}: failed only after {elapsed:.1f} s"
        return exc
    sock.close()
    pytest.fail(f"{address[0]}:{address[1]} answered from {ns}; expected no connection")


def expect_reachable(ns: str, address: tuple[str, int], source: str | None = None) -> None:
    __tracebackhide__ = True
    try:
        netns.netns_socket(ns, address, CONNECT, source=source).close()
    except OSError as exc:
        pytest.fail(f"{address[0]}:{address[1]} from {ns}: {exc!r} (positive control)")


def ssh_client(live: Live, tmp_path: Path) -> paramiko.SSHClient:
    known = tmp_path / "known_hosts"
    known.write_text(live.info.known_hosts())
    client = paramiko.SSHClient()
    client.load_host_keys(str(known))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def connect(client: paramiko.SSHClient, live: Live, host: str, sock) -> None:
    client.connect(
        host,
        username=live.info.ssh_user,
        key_filename=str(live.key),
        sock=sock,
        timeout=5,
        banner_timeout=5,
        auth_timeout=5,
        look_for_keys=False,
        allow_agent=False,
    )


def run(client: paramiko.SSHClient, command: str, timeout: float = 15) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0, f"{command!r}: {stderr.read().decode()}"
    return out


@pytest.fixture(scope="module")
def bastion_ssh(live: Live, tmp_path_factory) -> paramiko.SSHClient:
    """One SSH connection to the bastion for the module, through the operator namespace."""
    client = ssh_client(live, tmp_path_factory.mktemp("ssh"))
    sock = netns.netns_socket(live.info.operator_netns, (live.info.bastion_public_ip, 22), 5)
    connect(client, live, live.info.bastion_public_ip, sock)
    yield client
    client.close()


# --- outbound through the NAT instance -------------------------------------------


@pytest.mark.parametrize("broker", BROKERS)
def test_broker_reaches_the_web_as_the_nat_public_address(live: Live, broker: str):
    status, body = netns.http_get(live.info.hosts[broker].netns, live.info.web_ip, timeout=5)
    assert status == 200
    assert body.strip() == live.info.bastion_public_ip == live.info.public_ip_map[live.moto_eip]


def test_the_operator_is_seen_at_the_admin_address(live: Live):
    _, body = netns.http_get(live.info.operator_netns, live.info.web_ip, timeout=5)
    assert body.strip() == live.info.operator_ip == "203.0.113.50"


def test_nat_setup_ran_in_the_nat_namespace_only(live: Live):
    ns = live.info.hosts["nat"].netns
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "kafkanet_nat"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0 and "masquerade" in out.stdout
    forward = subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"], capture_output=True, text=True, timeout=10
    )
    assert forward.stdout.strip() == "1"
    # The script also wrote /etc/sysctl.d/90-kafkanet-nat.conf: into its scratch /etc, not the host's.
    assert not Path("/etc/sysctl.d/90-kafkanet-nat.conf").exists()
    log = plane.runtime_dir(live.env) / "nat" / "cloud-init-output.log"
    assert "masquerading 10.0.0.0/16" in log.read_text()


# --- inbound: SSH ---------------------------------------------------------------


def test_operator_ssh_to_the_bastion(bastion_ssh: paramiko.SSHClient):
    assert run(bastion_ssh, "hostname").strip() == "ip-10-0-0-10"


def test_proxy_command_reaches_the_bastion(live: Live, tmp_path: Path):
    client = ssh_client(live, tmp_path)
    proxy = paramiko.ProxyCommand(" ".join(live.info.proxy_argv(live.info.bastion_public_ip, 22)))
    try:
        connect(client, live, live.info.bastion_public_ip, proxy)
        assert run(client, "hostname").strip() == "ip-10-0-0-10"
    finally:
        client.close()


@pytest.mark.parametrize("broker", BROKERS)
def test_bastion_jumps_to_broker(live: Live, bastion_ssh: paramiko.SSHClient, broker: str, tmp_path: Path):
    host = live.info.hosts[broker]
    channel = bastion_ssh.get_transport().open_channel(
        "direct-tcpip", (host.private_ip, 22), ("127.0.0.1", 0), timeout=5
    )
    client = ssh_client(live, tmp_path)
    try:
        connect(client, live, host.private_ip, channel)
        assert run(client, "hostname").strip() == host.hostname
        code = f'import urllib.request as u; print(u.urlopen("{live.info.probe_url}", timeout=5).read().decode())'
        fetch = f"{sys.executable} -I -c '{code}'"
        assert run(client, fetch).strip() == live.info.bastion_public_ip
    finally:
        client.close()


def test_instances_resolve_their_own_name_and_fail_dns_fast(bastion_ssh: paramiko.SSHClient):
    assert "ip-10-0-0-10" in run(bastion_ssh, "getent hosts ip-10-0-0-10")
    started = time.monotonic()
    _, stdout, _ = bastion_ssh.exec_command("getent hosts bike.example.com", timeout=10)
    assert stdout.channel.recv_exit_status() != 0
    assert time.monotonic() - started < 3, "DNS should fail at once inside the plane, not hang"


@pytest.mark.parametrize("broker", BROKERS)
def test_operator_cannot_reach_broker_private_address(live: Live, broker: str):
    expect_reachable(live.info.operator_netns, (live.info.bastion_public_ip, 22))
    expect_unreachable(live.info.operator_netns, (live.info.hosts[broker].private_ip, 22))


def test_outsider_ssh_to_the_bastion_is_dropped(live: Live):
    expect_reachable(live.info.operator_netns, (live.info.bastion_public_ip, 22))
    error = expect_unreachable(live.info.outsider_netns, (live.info.bastion_public_ip, 22))
    assert isinstance(error, TimeoutError), f"security group should drop silently, got {error!r}"


@pytest.mark.parametrize("port", [80, 443, 9092, 9093])
def test_bastion_public_address_refuses_other_ports(live: Live, port: int):
    expect_unreachable(live.info.operator_netns, (live.info.bastion_public_ip, port), budget=1.5)


# --- inside the VPC: security groups and source/dest check -----------------------------


def test_broker_to_broker_ssh_is_dropped_but_controller_port_is_open(live: Live):
    one, two = live.info.hosts["broker-1"], live.info.hosts["broker-2"]
    refused = expect_unreachable(one.netns, (two.private_ip, 9093))
    assert isinstance(refused, ConnectionRefusedError), f"9093 from self group is allowed: {refused!r}"
    dropped = expect_unreachable(one.netns, (two.private_ip, 22))
    assert isinstance(dropped, TimeoutError), f"22 only from the bastion group: {dropped!r}"


def test_source_dest_check_drops_a_spoofed_source(live: Live):
    broker = live.info.hosts["broker-1"]
    links = subprocess.run(
        ["ip", "-n", broker.netns, "-o", "link", "show", "type", "veth"], capture_output=True, text=True, timeout=10
    )
    ifname = links.stdout.split(":")[1].strip().split("@")[0]
    spoofed = "10.0.1.99"
    subprocess.run(["ip", "-n", broker.netns, "addr", "add", f"{spoofed}/32", "dev", ifname], check=True, timeout=10)
    try:
        expect_reachable(broker.netns, (live.info.web_ip, 80))
        error = expect_unreachable(broker.netns, (live.info.web_ip, 80), source=spoofed)
        assert isinstance(error, TimeoutError)
    finally:
        subprocess.run(
            ["ip", "-n", broker.netns, "addr", "del", f"{spoofed}/32", "dev", ifname], check=True, timeout=10
        )


# --- Kafka ------------------------------------------------------------------------


@pytest.mark.parametrize("broker", BROKERS)
def test_kafka_round_trip_from_the_bastion(live: Live, broker: str):
    host = live.info.hosts[broker]
    station = f"ST-{broker[-1]}0{os.getpid() % 100}"
    argv = [
        "ip",
        "netns",
        "exec",
        live.info.hosts["nat"].netns,
        sys.executable,
        str(KAFKA_SCRIPT),
        f"{host.private_ip}:{host.kafka_port}",
        station,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, f"{broker}: {result.stderr.strip()[-500:]}"
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["key"] == station
    assert record["value"]["stationName"] == "102. 망원역 1번출구 앞"


DESCRIBE_TOPICS = """
import json, sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=5000, bootstrap_timeout_ms=10000)
print(json.dumps({t["name"]: len(t["partitions"]) for t in admin.describe_topics()}))
admin.close()
"""


@pytest.mark.parametrize("broker", BROKERS)
def test_topics_of_broker_1s_user_data_exist_on_every_broker(live: Live, broker: str):
    """Created at build, from /etc/kafkanet/topics.json (3 partitions), on each tansu: each has its own store."""
    host = live.info.hosts[broker]
    argv = ["ip", "netns", "exec", live.info.hosts["nat"].netns, sys.executable, "-I", "-c", DESCRIBE_TOPICS,
            f"{host.private_ip}:{host.kafka_port}"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{broker}: {result.stderr.strip()[-500:]}"
    assert json.loads(result.stdout.strip().splitlines()[-1]).get("bike-station-status") == 3


@pytest.mark.parametrize("broker", BROKERS)
def test_tansu_binds_the_listener_of_its_server_properties(live: Live, broker: str):
    host = live.info.hosts[broker]
    result = subprocess.run(["ip", "netns", "exec", host.netns, "ss", "-Hltn"], capture_output=True, text=True,
                            timeout=10, check=True)  # fmt: skip
    assert f"{host.private_ip}:9092" in result.stdout.split(), result.stdout
    assert "0.0.0.0:9092" not in result.stdout.split()


# --- status ------------------------------------------------------------------------


def test_status_reports_a_healthy_plane(live: Live):
    state = plane.status(live.env)
    assert state.healthy, state
    assert len(state.namespaces) == 10
    assert sorted(c for procs in state.processes.values() for _, c in procs).count("tansu") == 3


def test_plane_json_is_written_for_the_inventory(live: Live):
    written = json.loads((live.state / "plane.json").read_text())
    assert written["bastion_public_ip"] == live.info.bastion_public_ip
    assert written["public_ip_map"] == {live.moto_eip: live.info.bastion_public_ip}
    assert written["proxy_command"].endswith("nc %h %p")


# --- a second environment with the same VPC CIDR: the recorded variant ---------------


@pytest.fixture(scope="module")
def variant(request, tmp_path_factory) -> PlaneInfo:
    require_root_plane()
    env = unique_env("v")
    request.addfinalizer(lambda: plane.teardown(env))
    state = tmp_path_factory.mktemp("variant")
    key, _ = ensure_key(state, env)
    return plane.build(env, snapshot.ReplayEC2(load_snapshot("ttareungyi-variant")), key, state)


def test_same_cidr_side_by_side(live: Live, variant: PlaneInfo):
    for info in (live.info, variant):
        assert info.hosts["broker-2"].private_ip == "10.0.2.10"
        _, body = netns.http_get(info.operator_netns, info.web_ip, timeout=5)
        assert body.strip() == "203.0.113.50"
    status, body = netns.http_get(live.info.hosts["broker-2"].netns, live.info.web_ip, timeout=5)
    assert (status, body.strip()) == (200, live.info.bastion_public_ip)


def test_restricted_egress_drops_http_but_allows_https(variant: PlaneInfo):
    ns = variant.hosts["broker-1"].netns
    dropped = expect_unreachable(ns, (variant.web_ip, 80))
    assert isinstance(dropped, TimeoutError)
    # 443 is allowed out, crosses the NAT, and the web host (nothing on 443) resets it.
    refused = expect_unreachable(ns, (variant.web_ip, 443))
    assert isinstance(refused, ConnectionRefusedError)


def test_blackhole_route_drops_silently(variant: PlaneInfo):
    # broker-3's table sends 203.0.113.64/26 (where the web host is) to a deleted ENI.
    three, one = variant.hosts["broker-3"].netns, variant.hosts["broker-1"].netns
    assert variant.web_ip == "203.0.113.80"
    refused = expect_unreachable(one, (variant.web_ip, 443))  # the same probe from another table
    assert isinstance(refused, ConnectionRefusedError)
    refused = expect_unreachable(three, (variant.operator_ip, 443))  # broker-3's default route works
    assert isinstance(refused, ConnectionRefusedError)
    dropped = expect_unreachable(three, (variant.web_ip, 443))
    assert isinstance(dropped, TimeoutError), f"a blackhole drops silently: {dropped!r}"


# --- teardown ------------------------------------------------------------------------------


BUILD_AND_HANG = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import dataclasses
from localvpc import plane, snapshot, translation
p = translation.translate(snapshot.load(Path({snap!r})))
setup = {setup!r}
if setup:
    hosts = tuple(dataclasses.replace(h, setup_script=setup) if h.setup_script else h for h in p.hosts)
    p = dataclasses.replace(p, hosts=hosts)
plane.build_plane({env!r}, p, Path({key!r}), Path({state!r}))
print("built", flush=True)
time.sleep(120)
"""


def _child(env: str, tmp_path: Path, setup: str | None = None) -> subprocess.Popen:
    key, _ = ensure_key(tmp_path, env)
    code = BUILD_AND_HANG.format(
        root=str(ROOT),
        snap=str(Path(__file__).with_name("fixtures") / "ttareungyi.json"),
        setup=setup,
        env=env,
        key=str(key),
        state=str(tmp_path),
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=hears_ctrl_c
    )


def _assert_gone(env: str, pids: list[int]) -> None:
    __tracebackhide__ = True
    assert netns.list_netns(render.netns_prefix(env)) == []
    assert not plane.runtime_dir(env).exists()
    assert [p for p in pids if netns.process_name(p) is not None] == []


def test_teardown_after_a_crash_needs_no_state(request, tmp_path: Path):
    require_root_plane()
    env = unique_env("c")
    request.addfinalizer(lambda: plane.teardown(env))
    child = _child(env, tmp_path)
    try:
        assert child.stdout.readline().strip() == "built", child.stderr.read()
        pids = [pid for pid, _ in (x for procs in plane.status(env).processes.values() for x in procs)]
        assert len(pids) == 8  # 4 sshd, 3 tansu, 1 web
    finally:
        child.kill()  # the building process dies without cleaning up
        child.wait(timeout=10)
    import shutil

    shutil.rmtree(plane.runtime_dir(env))  # and its records are lost too
    report = plane.teardown(env)
    assert len(report.namespaces) == 10 and report.processes == 8
    assert report.seconds < 5
    _assert_gone(env, pids)


def test_a_failed_nat_setup_is_a_note_and_the_plane_runs_as_ec2_would(request, tmp_path: Path):
    """On EC2 a failed kafkanet-nat.service leaves the instance running; so does the plane (with a note)."""
    require_root_plane()
    env = unique_env("n")
    request.addfinalizer(lambda: plane.teardown(env))
    p = translation.translate(load_snapshot())
    broken = dataclasses.replace(
        p,
        hosts=tuple(
            dataclasses.replace(h, setup_script="#!/bin/sh\necho broken >&2\nexit 3\n") if h.setup_script else h
            for h in p.hosts
        ),
    )
    key, _ = ensure_key(tmp_path, env)
    info = plane.build_plane(env, broken, key, tmp_path)
    assert any("nat" in note and "exit 3" in note and "broken" in note for note in info.notes), info.notes
    plane.teardown(env)
    _assert_gone(env, [])


def test_failed_build_leaves_nothing(request, tmp_path: Path):
    require_root_plane()
    env = unique_env("f")
    request.addfinalizer(lambda: plane.teardown(env))
    p = translation.translate(load_snapshot())
    broken = dataclasses.replace(  # an address no kernel takes: that namespace's configuration fails
        p, hosts=tuple(dataclasses.replace(h, private_ip="10.0.1.300") if h.name == "broker-1" else h for h in p.hosts)
    )
    key, _ = ensure_key(tmp_path, env)
    with pytest.raises(PlaneInfraError) as info:
        plane.build_plane(env, broken, key, tmp_path)
    assert any("broker-1" in line for line in info.value.problems), info.value.problems
    _assert_gone(env, [])


def test_ctrl_c_during_build_leaves_nothing(request, tmp_path: Path):
    require_root_plane()
    env = unique_env("i")
    request.addfinalizer(lambda: plane.teardown(env))
    child = _child(env, tmp_path, setup="#!/bin/sh\nsleep 30\n")
    try:
        deadline = time.monotonic() + 15
        while not any(c == "sleep" for procs in plane.status(env).processes.values() for _, c in procs):
            assert time.monotonic() < deadline, "the build never reached the NAT setup"
            time.sleep(0.05)
        pids = [pid for procs in plane.status(env).processes.values() for pid, _ in procs]
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert "KeyboardInterrupt" in err
    _assert_gone(env, pids)
