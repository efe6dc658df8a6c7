"""Subnet carving, broker placement and the KRaft quorum."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.module.loaded import load_spec
from generator.spec.model import Spec
from generator.spec.regions import REGION_AZS
from generator.spec.topology import Topology
from tests.conftest import SEED, SPECS

N = ipaddress.IPv4Network


def test_seed_carving_is_the_familiar_layout():
    topo = Topology.from_spec(load_spec(SEED))
    assert topo.public_subnet.cidr == N("10.0.0.0/24") and topo.public_subnet.az == "ap-northeast-2a"
    assert [(s.az, str(s.cidr)) for s in topo.private_subnets] == [
        ("ap-northeast-2b", "10.0.1.0/24"),
        ("ap-northeast-2c", "10.0.2.0/24"),
        ("ap-northeast-2d", "10.0.3.0/24"),
    ]
    assert [(b.name, str(b.private_ip), b.az) for b in topo.brokers] == [
        ("broker-1", "10.0.1.10", "ap-northeast-2b"),
        ("broker-2", "10.0.2.10", "ap-northeast-2c"),
        ("broker-3", "10.0.3.10", "ap-northeast-2d"),
    ]
    assert topo.quorum_voters == "1@10.0.1.10:9093,2@10.0.2.10:9093,3@10.0.3.10:9093"
    assert topo.bootstrap_servers == "10.0.1.10:9092,10.0.2.10:9092,10.0.3.10:9092"


def test_five_brokers_round_robin_with_a_five_voter_quorum():
    topo = Topology.from_spec(load_spec(SPECS / "virginia-five.yaml"))
    assert [(b.name, b.subnet.az_letter, str(b.private_ip)) for b in topo.brokers] == [
        ("broker-1", "a", "10.20.1.10"),
        ("broker-2", "b", "10.20.2.10"),
        ("broker-3", "c", "10.20.3.10"),
        ("broker-4", "a", "10.20.1.11"),
        ("broker-5", "b", "10.20.2.11"),
    ]
    assert [b.node_id for b in topo.controllers] == [1, 2, 3, 4, 5]


def test_four_brokers_have_three_voters_and_explicit_cidrs_are_kept():
    topo = Topology.from_spec(load_spec(SPECS / "team-state.yaml"))
    assert [b.controller for b in topo.brokers] == [True, True, True, False]
    assert topo.public_subnet.cidr == N("10.42.200.0/24")
    # b is explicit; c is carved from what is left, skipping nothing it overlaps
    assert [str(s.cidr) for s in topo.private_subnets] == ["10.42.10.0/24", "10.42.0.0/24"]


def test_small_vpc_gets_smaller_subnets():
    topo = Topology.from_spec(load_spec(SPECS / "ireland-one.yaml"))
    assert topo.public_subnet.cidr == N("192.168.50.0/25")
    assert [str(s.cidr) for s in topo.private_subnets] == ["192.168.50.128/25"]
    assert topo.default_replication_factor == 1 and topo.min_insync_replicas == 1


def test_cluster_id_is_stable_and_kraft_shaped():
    a = Topology.from_spec(load_spec(SEED)).cluster_id
    assert a == Topology.from_spec(load_spec(SEED)).cluster_id
    assert len(a) == 22 and "=" not in a


def _spec(vpc: str, region: str, nat_az: str, azs: list[str], count: int) -> Spec:
    return Spec.model_validate(
        {
            "name": "prop",
            "region": region,
            "vpc_cidr": vpc,
            "admin_cidrs": ["203.0.113.1/32"],
            "nat": {"az": nat_az},
            "brokers": {"azs": azs, "count": count},
        }
    )


@st.composite
def topologies(draw):
    base = draw(st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]))
    prefix = draw(st.integers(min_value=16, max_value=24))
    parent = N(base)
    prefix = max(prefix, parent.prefixlen)
    index = draw(st.integers(min_value=0, max_value=2 ** (prefix - parent.prefixlen) - 1))
    vpc = N((int(parent.network_address) + index * 2 ** (32 - prefix), prefix))
    region = draw(st.sampled_from(sorted(REGION_AZS)))
    letters = REGION_AZS[region]
    azs = draw(st.lists(st.sampled_from(letters), min_size=1, max_size=len(letters), unique=True))
    nat_az = draw(st.sampled_from(letters))
    count = draw(st.integers(min_value=1, max_value=3 * len(azs)))
    return _spec(str(vpc), region, nat_az, azs, count)


@settings(max_examples=300, deadline=None)
@given(topologies())
def test_carved_subnets_never_overlap_and_stay_inside_the_vpc(spec):
    topo = Topology.from_spec(spec)
    subnets = [topo.public_subnet, *topo.private_subnets]
    assert len(subnets) == 1 + len(spec.brokers.azs)
    for i, a in enumerate(subnets):
        assert a.cidr.subnet_of(spec.vpc_cidr)
        assert a.cidr.prefixlen <= 28
        for b in subnets[i + 1 :]:
            assert not a.cidr.overlaps(b.cidr), (a, b)
    ips = [b.private_ip for b in topo.brokers]
    assert len(set(ips)) == len(ips)
    for b in topo.brokers:
        # inside its subnet, clear of the 4 reserved at the start and the broadcast at the end
        assert b.private_ip in b.subnet.cidr
        assert int(b.private_ip) - int(b.subnet.cidr.network_address) >= 4
        assert b.private_ip < b.subnet.cidr.broadcast_address


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7])
def test_quorum_size_is_odd_and_at_most_five(count):
    topo = Topology.from_spec(_spec("10.0.0.0/16", "ap-northeast-2", "a", ["b", "c", "d"], count))
    voters = len(topo.controllers)
    assert voters % 2 == 1 and voters <= min(count, 5)
