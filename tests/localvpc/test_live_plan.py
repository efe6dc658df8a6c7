"""The live plane's pure half: what moto's changed state translates to, and what the daemon runs for it.

The recorded reference snapshot is edited as the EC2 API would change it (and
as moto 5.2 reports it: the moved Elastic IP stays on the old interface), then
:func:`localvpc.live.plan` must name exactly the kernel changes. No root.
"""

from __future__ import annotations

import copy
import time

import pytest

from localvpc import live, render, translation
from localvpc.live import Desired, Follower

NAT, BROKER_1 = "i-705ccfbe7d04ee79c", "i-37f46788b3de2ac55"
PRIVATE_TABLE = "rtb-85285b6e705f7fe04"
NAT_GROUP = "sg-b11a0606de77618a1"


def _instance(snap: dict, iid: str) -> dict:
    return next(i for r in snap["reservations"] for i in r["Instances"] if i["InstanceId"] == iid)


def _desired(snap: dict, built, follower: Follower | None = None) -> Desired:
    if follower is not None:
        return follower.desired(snap)
    plane = translation.translate(snap, internet=built.internet)
    return Desired(live.align(plane, built), live.states_of(snap, built))


@pytest.fixture
def base(snap):
    built = translation.translate(snap)
    return built, render.layout("unit", built), Desired(built, {h.name: "running" for h in built.hosts})


def test_nothing_changed_plans_nothing(snap, base):
    built, lay, applied = base
    assert not live.plan(applied, _desired(copy.deepcopy(snap), built), lay)


def test_a_deleted_route_is_deleted_and_a_created_one_replaced_in(snap, base):
    built, lay, applied = base
    table = next(t for t in snap["route_tables"] if t["RouteTableId"] == PRIVATE_TABLE)
    kept = [r for r in table["Routes"] if r.get("DestinationCidrBlock") != "0.0.0.0/0"]
    default = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    table["Routes"] = kept
    gone = _desired(snap, built)
    changes = live.plan(applied, gone, lay)
    assert changes.router_ip == ["route del 0.0.0.0/0 table 101"] and not changes.router_nft and not changes.igw_nft
    table["Routes"] = kept + default
    back = live.plan(gone, _desired(snap, built), lay)
    nat_if = lay.host_if["nat"][1]
    assert back.router_ip == [f"route replace 0.0.0.0/0 via 10.0.0.10 dev {nat_if} onlink table 101"]


def test_a_route_replaced_to_the_igw(snap, base):
    built, lay, applied = base
    table = next(t for t in snap["route_tables"] if t["RouteTableId"] == PRIVATE_TABLE)
    route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    route.pop("NetworkInterfaceId", None)
    route.pop("InstanceId", None)
    route["GatewayId"] = built.igw_id
    changes = live.plan(applied, _desired(snap, built), lay)
    assert changes.router_ip == [f"route replace 0.0.0.0/0 via 169.254.0.2 dev {lay.router_igw[0]} table 101"]


def _move_eip(snap: dict, to: str) -> None:
    """AssociateAddress with AllowReassociation, as moto 5.2 reports it: the old ENI keeps the EIP."""
    target = _instance(snap, to)
    eni = target["NetworkInterfaces"][0]
    address = snap["addresses"][0]
    address.update(InstanceId=to, NetworkInterfaceId=eni["NetworkInterfaceId"], PrivateIpAddress=eni["PrivateIpAddress"])
    eni["Association"] = {"PublicIp": address["PublicIp"], "IpOwnerId": "123456789012"}
    target["PublicIpAddress"] = address["PublicIp"]


def test_a_moved_eip_follows_ec2_not_the_stale_field_moto_keeps(snap, base):
    built, lay, applied = base
    follower = Follower("unit", snap, __import__("pathlib").Path("/nonexistent"))
    eip = built.host("nat").public_ip
    _move_eip(snap, BROKER_1)
    assert _instance(snap, NAT)["NetworkInterfaces"][0]["Association"]["PublicIp"] == snap["addresses"][0]["PublicIp"]
    moved = _desired(snap, built, follower)
    assert moved.plane.host("broker-1").public_ip == eip  # the EIP keeps its emulated address
    nat_public = moved.plane.host("nat").public_ip
    # the public subnet assigns addresses: EC2 gives the NAT a new one, not the EIP it lost
    assert nat_public and nat_public != eip and nat_public.startswith("198.51.100.")
    assert moved.plane.host("nat").moto_public_ip is None
    changes = live.plan(applied, moved, lay)
    assert not changes.router_ip and not changes.router_nft
    text = "\n".join(changes.igw_nft)
    assert f"{eip} : 10.0.1.10" in text and f"10.0.1.10 : {eip}" in text and f"10.0.0.10 : {nat_public}" in text
    # the flows of every address whose translation changed are forgotten (EC2 keeps none across a move)
    assert ("-d", eip) in changes.igw_forget and ("-d", nat_public) in changes.igw_forget
    assert ("-s", "10.0.1.10") in changes.igw_forget and ("-s", "10.0.0.10") in changes.igw_forget
    assert not [a for flag, a in changes.igw_forget if a.startswith("10.0.2.")], "an unchanged broker's flows stay"


def test_a_disassociated_eip_leaves_a_private_subnet_instance_without_a_public_address(snap, base):
    built, _, _ = base
    _move_eip(snap, BROKER_1)
    snap["addresses"][0].update(InstanceId="", NetworkInterfaceId="", PrivateIpAddress=None)
    plane = translation.translate(snap)
    assert plane.host("broker-1").public_ip is None  # moto's stale field on its ENI is ignored
    assert all(p.private_ip is None for p in plane.public_addresses if p.kind == "eip")


def test_pinned_addresses_and_tables_stay_when_one_is_added(snap, base):
    built, _, _ = base
    extra = copy.deepcopy(snap["addresses"][0])
    extra.update(PublicIp="127.0.0.9", AllocationId="eipalloc-new", AssociationId="", InstanceId="",
                 NetworkInterfaceId="", PrivateIpAddress=None)  # fmt: skip
    snap["addresses"].insert(0, extra)  # numerically lower than the EIP in use
    new_table = copy.deepcopy(snap["route_tables"][0])
    new_table.update(RouteTableId="rtb-000000000000000aa", Associations=[])
    snap["route_tables"].append(new_table)
    plain = translation.translate(snap)
    assert plain.host("nat").public_ip != built.host("nat").public_ip  # unpinned, numeric order moves it
    pinned = translation.translate(snap, public_map={p.moto_ip: p.emulated_ip for p in built.public_addresses},
                                   table_numbers={t.id: t.table for t in built.route_tables})  # fmt: skip
    assert pinned.host("nat").public_ip == built.host("nat").public_ip
    assert {t.id: t.table for t in pinned.route_tables}["rtb-000000000000000aa"] == 103
    assert [t.table for t in pinned.route_tables if t.id != "rtb-000000000000000aa"] == [100, 101, 102]


def test_a_revoked_rule_refills_only_that_hosts_chain(snap, base):
    built, lay, applied = base
    group = next(g for g in snap["security_groups"] if g["GroupId"] == NAT_GROUP)
    group["IpPermissions"] = [p for p in group["IpPermissions"] if p.get("FromPort") != 22]
    changes = live.plan(applied, _desired(snap, built), lay)
    assert changes.router_nft[0] == "flush chain ip kafkanet ingress_nat"
    assert {line.split()[4] for line in changes.router_nft if line.startswith("add rule")} == {"ingress_nat"}
    assert not any("dport 22" in line for line in changes.router_nft)
    assert changes.router_nft[-1] == "add rule ip kafkanet ingress_nat drop"


def test_source_dest_check_on_the_nat_adds_its_drop_both_ways(snap, base):
    built, lay, applied = base
    _instance(snap, NAT)["SourceDestCheck"] = True
    snap["instance_attributes"][NAT]["sourceDestCheck"] = True
    changes = live.plan(applied, _desired(snap, built), lay)
    assert 'add rule ip kafkanet egress_nat ip saddr != 10.0.0.10 drop comment "source/dest check"' in changes.router_nft
    assert 'add rule ip kafkanet ingress_nat ip daddr != 10.0.0.10 drop comment "source/dest check"' in changes.router_nft


def test_a_stopped_instance_freezes_drops_and_blackholes_routes_through_it(snap, base):
    built, lay, applied = base
    _instance(snap, NAT)["State"] = {"Code": 80, "Name": "stopped"}
    stopped = _desired(snap, built)
    changes = live.plan(applied, stopped, lay)
    assert changes.freeze == ["nat"] and not changes.thaw
    assert f'add element ip kafkanet {render.STOPPED_SET} {{ "{lay.host_if["nat"][1]}" }}' in changes.router_nft
    assert "route replace blackhole 0.0.0.0/0 table 101" in changes.router_ip  # AWS: a route to a stopped ENI
    _instance(snap, NAT)["State"] = {"Code": 16, "Name": "running"}
    started = live.plan(stopped, _desired(snap, built), lay)
    assert started.thaw == ["nat"] and f"flush set ip kafkanet {render.STOPPED_SET}" in started.router_nft
    assert not any(line.startswith("add element") for line in started.router_nft)


def test_a_terminated_instance_is_killed(snap, base):
    built, lay, applied = base
    snap["reservations"] = [r for r in snap["reservations"] if all(i["InstanceId"] != BROKER_1 for i in r["Instances"])]
    changes = live.plan(applied, _desired(snap, built), lay)
    assert changes.kill == ["broker-1"]


def test_an_instance_launched_after_the_build_is_not_a_route_target(snap, base, tmp_path):
    built, lay, applied = base
    follower = Follower("unit", copy.deepcopy(snap), tmp_path)
    newcomer = copy.deepcopy(_instance(snap, BROKER_1))
    newcomer["InstanceId"] = "i-0000000000000new"
    newcomer["NetworkInterfaces"][0].update(NetworkInterfaceId="eni-new", PrivateIpAddress="10.0.1.99")
    newcomer["PrivateIpAddress"] = "10.0.1.99"
    snap["reservations"].append({"Instances": [newcomer]})  # its user data is not even read
    table = next(t for t in snap["route_tables"] if t["RouteTableId"] == PRIVATE_TABLE)
    route = next(r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    route["NetworkInterfaceId"] = "eni-new"
    changes = live.plan(applied, _desired(snap, built, follower), lay)
    assert changes.router_ip == ["route replace blackhole 0.0.0.0/0 table 101"]


def test_the_follower_holds_a_change_for_the_delay(snap, monkeypatch, tmp_path):
    applied_changes = []
    monkeypatch.setattr(live, "apply", lambda changes, lay: applied_changes.append(changes))
    follower = Follower("unit", copy.deepcopy(snap), tmp_path, delay=1.0)
    table = next(t for t in snap["route_tables"] if t["RouteTableId"] == PRIVATE_TABLE)
    table["Routes"] = [r for r in table["Routes"] if r.get("DestinationCidrBlock") != "0.0.0.0/0"]
    assert follower.step(snap, now=10.0) is None and follower.pending
    assert follower.step(snap, now=10.5) is None
    changes = follower.step(snap, now=11.0)
    assert changes and changes.router_ip == ["route del 0.0.0.0/0 table 101"] and applied_changes == [changes]
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "delay").write_text("0\n")  # faults.set_delay's file wins over the default
    assert follower.delay() == 0.0


def test_the_daemon_is_found_by_its_command_line_only():
    argv = [b"python", b"-s", b"-c", live.LAUNCH.encode(), b"localvpc.live", b"--env", b"abc", b"--run-dir", b"/run/kn_abc"]
    assert live.MODULE.encode() in argv and live._follows(argv, b"--env", b"abc")
    assert not live._follows(argv, b"--env", b"ab")


@pytest.mark.slow
def test_the_moto_shim_counts_the_calls_that_may_change_state(tmp_path):
    from generator.localaws import moto_server

    server = moto_server.start(tmp_path / "moto")
    try:
        ec2 = server.ec2_client("ap-northeast-2")
        first = live.generation(server.url)
        started = time.monotonic()
        assert live.generation(server.url, after=first, wait=0.3) == first and time.monotonic() - started >= 0.25
        assert first is not None, "moto_compat serves no change counter"
        ec2.describe_vpcs()
        assert live.generation(server.url) == first, "a Describe call moved the counter"
        ec2.create_vpc(CidrBlock="10.9.0.0/16")
        assert live.generation(server.url) == first + 1
    finally:
        server.stop()
    assert live.generation(server.url) is None  # no server: the daemon falls back to polling
