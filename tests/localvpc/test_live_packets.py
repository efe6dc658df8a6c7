"""The packets follow the API (root): one applied copy of the seed, changed through the EC2 API.

One environment, applied with terraform on the local target, serves every test
of this module; each test puts the state back as it found it (and checks the
packets came back), so the next starts from the applied environment. Every
wait is bounded (WAIT seconds) and says what it waited for.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from generator.environment.session import PLANE_DIR
from localvpc import faults, live, netns, plane
from tests.envs import apply_env

pytestmark = [pytest.mark.root, pytest.mark.slow]

WAIT = 5.0  # the bound of every wait for the plane to follow
PROBE = 0.5  # one probe's connect timeout


class Env:
    def __init__(self, applied) -> None:
        self.applied = applied
        self.name = applied.name
        self.ec2 = applied.ec2()
        info = json.loads(Path(applied.env.path(PLANE_DIR), "plane.json").read_text())
        self.info = info
        self.hosts = info["hosts"]
        self.web_ip = info["web_ip"]
        inv = applied.inventory
        self.network = inv["network"]
        self.nat = next(h for h in self.hosts.values() if h["instance_id"] == inv["bastion"]["instance_id"])
        self.brokers = sorted(n for n, h in self.hosts.items() if h["role"] == "broker")

    def ns(self, host: str) -> str:
        return self.hosts[host]["netns"]

    def seen_by_web(self, host: str) -> str | None:
        """The address the web host sees for an HTTP request from ``host`` (None: no answer)."""
        try:
            status, body = netns.http_get(self.ns(host), self.web_ip, timeout=PROBE)
        except OSError:
            return None
        return body.strip() if status == 200 else None

    def tcp_ok(self, source_ns: str, address: tuple[str, int]) -> bool:
        try:
            netns.netns_socket(source_ns, address, PROBE).close()
        except OSError:
            return False
        return True


def wait_for(what: str, check: Callable[[], object], budget: float = WAIT) -> object:
    """Poll ``check`` until it returns something truthy, at most ``budget`` seconds."""
    __tracebackhide__ = True
    deadline = time.monotonic() + budget
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    pytest.fail(f"waited {budget:.0f} s for {what}; last saw {last!r}")


@pytest.fixture(scope="module")
def env(request, tmp_path_factory) -> Env:
    applied = apply_env(request, tmp_path_factory, "lv")
    e = Env(applied)
    wait_for("the live daemon's first poll", lambda: (faults.live_status(e.name) or {}).get("polls"))
    return e


@pytest.fixture
def healthy(env: Env):
    """Every broker reaches the web host through the NAT before and after the test."""
    eip = env.nat["public_ip"]
    for broker in env.brokers:
        wait_for(f"{broker} egress seen as the NAT's EIP {eip}", lambda b=broker: env.seen_by_web(b) == eip)
    yield env
    for broker in env.brokers:
        wait_for(f"{broker} egress back as {eip} after the test", lambda b=broker: env.seen_by_web(b) == eip)


def test_the_daemon_runs_and_is_recorded(env: Env):
    manifest = json.loads((Path("/run") / f"kn_{env.name}" / "manifest.json").read_text())
    assert manifest["live"]["pid"] in live.find(env.name), f"live daemon of {env.name}: not running ({manifest['live']})"
    assert not plane.status(env.name).missing_daemons


def test_deleting_the_default_route_stops_broker_egress_and_creating_it_restores_it(healthy: Env):
    env = healthy
    table = env.network["private_route_table_id"]
    eni = env.ec2.describe_instances(InstanceIds=[env.nat["instance_id"]])["Reservations"][0]["Instances"][0][
        "NetworkInterfaces"][0]["NetworkInterfaceId"]  # fmt: skip
    env.ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")
    try:
        wait_for("broker-1's egress to fail after DeleteRoute", lambda: env.seen_by_web(env.brokers[0]) is None)
        assert all(env.seen_by_web(b) is None for b in env.brokers), "a broker still reaches the web without a route"
    finally:
        env.ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=eni)
    wait_for("broker-1's egress back after CreateRoute", lambda: env.seen_by_web(env.brokers[0]) == env.nat["public_ip"])


def test_replacing_the_default_route_with_the_igw_is_a_dead_end_for_private_brokers(healthy: Env):
    """ReplaceRoute to the internet gateway: a broker without a public address gets nowhere (as on AWS)."""
    env = healthy
    table = env.network["private_route_table_id"]
    eni = env.ec2.describe_instances(InstanceIds=[env.nat["instance_id"]])["Reservations"][0]["Instances"][0][
        "NetworkInterfaces"][0]["NetworkInterfaceId"]  # fmt: skip
    env.ec2.replace_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=env.network["internet_gateway_id"])
    try:
        wait_for("broker-1's egress to fail via the igw", lambda: env.seen_by_web(env.brokers[0]) is None)
    finally:
        env.ec2.replace_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=eni)


def _other_than(seen: str | None, eip: str) -> str | None:
    return seen if seen not in (None, eip) else None


def _nat_allocation(env: Env) -> dict:
    return next(a for a in env.ec2.describe_addresses()["Addresses"] if a.get("InstanceId") == env.nat["instance_id"])


def test_moving_the_eip_changes_the_address_the_web_host_sees(healthy: Env):
    env = healthy
    eip = env.nat["public_ip"]
    address = _nat_allocation(env)
    broker = env.hosts[env.brokers[0]]
    # an SSH session to the EIP, established before the move
    session = netns.netns_socket(env.info["operator_netns"], (eip, 22), 5.0)
    session.settimeout(5.0)
    assert session.recv(64).startswith(b"SSH-2.0-"), "control: no SSH banner from the bastion on its EIP"
    session.settimeout(0.5)
    try:  # whatever else sshd sent before the move (its key exchange may follow the banner at once)
        while session.recv(4096):
            pass
    except TimeoutError:
        pass
    session.settimeout(5.0)
    env.ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=broker["instance_id"], AllowReassociation=True)
    try:
        # The NAT keeps a public address (its subnet assigns one, as EC2 does when an EIP leaves),
        # but not the EIP: the web host sees another address, from the NAT and through it.
        moved = wait_for("the NAT's egress to leave the EIP", lambda: _other_than(env.seen_by_web(env.nat["name"]), eip))
        assert moved.startswith("198.51.100."), f"NAT egress after the EIP moved: {moved}"
        wait_for(f"{env.brokers[0]}'s egress (through the NAT) seen as {moved}", lambda: env.seen_by_web(env.brokers[0]) == moved)
        # inbound to the EIP now lands on the broker, whose group admits SSH from the bastion only
        assert not env.tcp_ok(env.info["operator_netns"], (eip, 22)), "the EIP still answers SSH after it moved"
        # the established session does not follow the old holder either: as on EC2 its next packet
        # reaches the new one (the broker's group drops it) and the session goes no further
        try:
            session.sendall(b"SSH-2.0-kafkanet-test\r\n")
            said = session.recv(4096)
        except OSError as exc:  # reset, or no answer within the timeout
            said = type(exc).__name__.encode()
        assert b"SSH" not in said and b"\x14" not in said[:6], f"the old session still reaches the NAT's sshd: {said[:60]!r}"
    finally:
        env.ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=env.nat["instance_id"], AllowReassociation=True)
        session.close()
    wait_for("the bastion's SSH back on the EIP", lambda: env.tcp_ok(env.info["operator_netns"], (eip, 22)))


def test_a_revoked_security_group_rule_stops_the_traffic_it_allowed(healthy: Env):
    env = healthy
    group = env.network["nat_security_group_id"]
    eip = env.nat["public_ip"]
    ssh = [p for p in env.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
           if p.get("FromPort") == 22]  # fmt: skip
    assert ssh, f"{group}: no SSH rule to revoke"
    assert env.tcp_ok(env.info["operator_netns"], (eip, 22)), "control: the operator's SSH to the bastion fails already"
    env.ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=ssh)
    try:
        wait_for("the operator's SSH to the bastion to be dropped", lambda: not env.tcp_ok(env.info["operator_netns"], (eip, 22)))
    finally:
        env.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=ssh)
    wait_for("the operator's SSH to the bastion back", lambda: env.tcp_ok(env.info["operator_netns"], (eip, 22)))


def test_turning_source_dest_check_on_at_the_nat_breaks_broker_egress(healthy: Env):
    env = healthy
    nat = env.nat["instance_id"]
    env.ec2.modify_instance_attribute(InstanceId=nat, SourceDestCheck={"Value": True})
    try:
        wait_for("broker egress to fail with the NAT's source/dest check on",
                 lambda: env.seen_by_web(env.brokers[0]) is None)  # fmt: skip
        assert env.seen_by_web(env.nat["name"]) == env.nat["public_ip"], "the NAT's own egress should still work"
    finally:
        env.ec2.modify_instance_attribute(InstanceId=nat, SourceDestCheck={"Value": False})


def test_a_stopped_broker_stops_answering_and_comes_back_at_start(healthy: Env):
    env = healthy
    broker = env.brokers[1]
    iid, address = env.hosts[broker]["instance_id"], (env.hosts[broker]["private_ip"], 22)
    bastion_ns = env.ns(env.nat["name"])
    assert env.tcp_ok(bastion_ns, address), f"control: {broker}:22 does not answer the bastion"
    env.ec2.stop_instances(InstanceIds=[iid])
    try:
        wait_for(f"{broker} to stop answering the bastion", lambda: not env.tcp_ok(bastion_ns, address))
        states = {netns.process_name(p) and Path(f"/proc/{p}/stat").read_text().split(") ")[1][0]
                  for p in netns.pids_in([env.ns(broker)])}  # fmt: skip
        assert states == {"T"}, f"{broker}'s processes while stopped: states {states} (T = stopped)"
        assert env.seen_by_web(broker) is None, f"{broker} still reaches the web while stopped"
    finally:
        env.ec2.start_instances(InstanceIds=[iid])
    wait_for(f"{broker} to answer again after StartInstances", lambda: env.tcp_ok(bastion_ns, address))


# --- faults -----------------------------------------------------------------------


def test_hang_makes_an_instance_silent_and_resume_brings_it_back(healthy: Env):
    env = healthy
    broker = env.brokers[2]
    address, bastion_ns = (env.hosts[broker]["private_ip"], 22), env.ns(env.nat["name"])
    faults.hang(env.name, broker)
    try:
        assert faults.is_hung(env.name, broker)
        assert not env.tcp_ok(bastion_ns, address), f"{broker} answers while hung"
    finally:
        faults.resume(env.name, broker)
    wait_for(f"{broker} to answer after resume", lambda: env.tcp_ok(bastion_ns, address))


def test_kill_and_revive_a_brokers_processes(healthy: Env):
    env = healthy
    broker = env.brokers[2]
    address, bastion_ns = (env.hosts[broker]["private_ip"], 22), env.ns(env.nat["name"])
    killed = faults.kill(env.name, broker, "sshd")
    assert killed, f"no sshd in {broker}"
    wait_for(f"{broker}:22 to refuse after its sshd was killed", lambda: not env.tcp_ok(bastion_ns, address))
    assert faults.revive(env.name, broker) == ["sshd"]
    wait_for(f"{broker}:22 back after revive", lambda: env.tcp_ok(bastion_ns, address))
    assert not plane.status(env.name).missing_daemons


def test_cut_link_and_restore(healthy: Env):
    env = healthy
    broker = env.brokers[0]
    faults.cut_link(env.name, broker)
    try:
        assert env.seen_by_web(broker) is None, f"{broker} reaches the web over a cut link"
        assert env.seen_by_web(env.brokers[1]) == env.nat["public_ip"], "cutting one link cut another"
    finally:
        faults.restore_link(env.name, broker)
    wait_for(f"{broker}'s egress back after restore_link", lambda: env.seen_by_web(broker) == env.nat["public_ip"])


def test_propagation_delay_holds_a_change_back(healthy: Env):
    env = healthy
    table = env.network["private_route_table_id"]
    eni = env.ec2.describe_instances(InstanceIds=[env.nat["instance_id"]])["Reservations"][0]["Instances"][0][
        "NetworkInterfaces"][0]["NetworkInterfaceId"]  # fmt: skip
    faults.set_delay(env.name, 1.5)
    try:
        env.ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")
        changed = time.monotonic()
        try:
            time.sleep(0.8)
            assert env.seen_by_web(env.brokers[0]) == env.nat["public_ip"], "the route went before the delay"
            wait_for("the deletion to reach the packets after the delay", lambda: env.seen_by_web(env.brokers[0]) is None)
            assert time.monotonic() - changed >= 1.4
        finally:
            env.ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=eni)
    finally:
        faults.clear_delay(env.name)
