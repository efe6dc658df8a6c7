"""The local plane's rendering (names, router and gateway rules, sshd), its prerequisites and snapshot reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.base.errors import PrerequisiteError
from generator.environment import localplane
from localvpc import instance, plane, render, snapshot
from localvpc.errors import PlanePrerequisiteError, PlaneUserError
from localvpc.translation import translate
from tests.localvpc.helpers import load_snapshot, route_table

# --- names, rendering, prerequisites ------------------------------------------------


def test_names_fit_the_kernel_limits_and_carry_the_prefix(snap):
    p = translate(snap)
    lay = render.layout("a-long-env-name-12345", p)
    links = [*(n for pair in lay.host_if.values() for n in pair), *lay.router_igw, *lay.igw_inet]
    links += [n for pair in lay.inet_hosts.values() for n in pair]
    assert len(set(links)) == len(links)
    assert all(len(n) <= 15 and n.startswith(render.link_prefix("a-long-env-name-12345")) for n in links)
    assert all(ns.startswith("kn_a-long-env-name-12345_") for ns in lay.namespaces)
    assert len(set(lay.namespaces)) == len(lay.namespaces)


def test_each_instance_veth_wears_its_enis_mac_as_ec2_reports_it(snap):
    p = translate(snap)
    lay = render.layout("macs", p)
    lines = render.render_links(p, lay)
    enis = {i["InstanceId"]: i["NetworkInterfaces"][0]["MacAddress"] for r in snap["reservations"] for i in r["Instances"]}
    for host in p.hosts:
        assert host.mac == enis[host.instance_id].lower()
        hif = lay.host_if[host.name][0]
        (line,) = [x for x in lines if x.startswith(f"link add {hif} ")]
        assert f" address {host.mac} type veth " in line


def test_two_environments_never_share_a_name(snap):
    p = translate(snap)
    a, b = render.layout("alpha", p), render.layout("alpha-2", p)
    assert not set(a.namespaces) & set(b.namespaces)
    assert render.link_prefix("alpha") != render.link_prefix("alpha-2")
    assert not any(ns.startswith(render.netns_prefix("alpha")) for ns in b.namespaces)


@pytest.mark.parametrize("bad", ["", "A", "x", "has_underscore", "a" * 22, "1abc", "../etc"])
def test_environment_names_are_checked(bad):
    with pytest.raises(PlaneUserError):
        render.check_env_name(bad)


def test_router_applies_route_tables_by_input_interface(snap):
    p = translate(snap)
    lay = render.layout("unit", p)
    batch = render.render_router(p, lay).ip_batch
    private = route_table(p, "private").table
    nat_if = lay.host_if["nat"][1]
    assert f"rule add iif {lay.host_if['broker-1'][1]} lookup {private} pref 1000" in batch
    assert f"route add 0.0.0.0/0 via 10.0.0.10 dev {nat_if} onlink table {private}" in batch
    assert f"route add throw 10.0.0.0/16 table {private}" in batch
    assert "route add blackhole 10.0.0.0/16" in batch and "route add blackhole default" in batch


def test_router_renders_blackholes(variant_snap):
    p = translate(variant_snap)
    batch = render.render_router(p, render.layout("unit", p)).ip_batch
    assert f"route add blackhole 203.0.113.64/26 table {route_table(p, 'isolated').table}" in batch


def test_router_nft_checks_source_dest_except_on_the_nat(snap):
    p = translate(snap)
    nft = render.render_router_nft(p, render.layout("unit", p))
    assert 'ip saddr != 10.0.1.10 drop comment "source/dest check"' in nft
    assert "ip saddr != 10.0.0.10" not in nft and "ip daddr != 10.0.0.10" not in nft
    assert "ip saddr { 10.0.0.10/32 } tcp dport 22 accept" in nft  # the bastion's group, resolved


def test_igw_maps_each_public_address_one_to_one(snap):
    p = translate(snap)
    nft = render.render_igw(p, render.layout("unit", p)).nft
    assert "198.51.100.10 : 10.0.0.10" in nft and "10.0.0.10 : 198.51.100.10" in nft


def test_sshd_config_has_what_a_namespace_needs(snap):
    text = instance.sshd_config(translate(snap).host("nat"), Path("/k"), Path("/a"))
    for line in ("PidFile none", "UseDNS no", "StrictModes no", "PasswordAuthentication no"):
        assert line in text.splitlines()


def test_not_root_is_a_prerequisite_error(monkeypatch):
    monkeypatch.setattr(plane.os, "geteuid", lambda: 1000)
    with pytest.raises(PlanePrerequisiteError) as info:
        plane.check_prerequisites()
    assert any("needs root" in p for p in info.value.problems)


def test_the_cli_reports_a_plane_prerequisite_as_its_own_exit_2(monkeypatch):
    monkeypatch.setattr(plane.os, "geteuid", lambda: 1000)
    with pytest.raises(PrerequisiteError) as info, localplane.kafkanet_errors():
        plane.check_prerequisites()
    assert info.value.exit_code == 2 and any("needs root" in p for p in info.value.problems)


def test_teardown_not_root_is_a_prerequisite_error(monkeypatch):
    monkeypatch.setattr(plane.os, "geteuid", lambda: 1000)
    with pytest.raises(PlanePrerequisiteError):
        plane.teardown("someenv")


# --- snapshot reading ------------------------------------------------------------


def test_replay_client_round_trips_a_snapshot():
    recorded = load_snapshot()
    again = snapshot.collect(snapshot.ReplayEC2(recorded), "ttareungyi")
    assert again == recorded


def test_collect_refuses_a_non_local_endpoint():
    class Meta:
        endpoint_url = "https://ec2.ap-northeast-2.amazonaws.com"
        region_name = "ap-northeast-2"

    class Client:
        meta = Meta()

    with pytest.raises(PlaneUserError, match="not a local moto server"):
        snapshot.collect(Client(), "ttareungyi")


def test_no_vpc_for_the_environment_is_a_user_error():
    class Empty(snapshot.ReplayEC2):
        pass

    with pytest.raises(PlaneUserError, match="apply the environment first"):
        snapshot.collect(Empty({"vpcs": [], "region": "ap-northeast-2"}), "nothing")
