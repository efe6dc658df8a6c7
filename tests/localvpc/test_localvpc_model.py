"""localvpc.translation, .model, .userdata and the pure plane parts (render, instance), on recorded snapshots (no root)."""

from __future__ import annotations

import base64
import gzip
import ipaddress
import textwrap
import time

import pytest

from localvpc import model, render, userdata
from localvpc.errors import PlaneUserError
from localvpc.translation import translate
from tests.localvpc.helpers import load_snapshot, route_table


def _instances(snap: dict) -> list[dict]:
    return [i for r in snap["reservations"] for i in r["Instances"]]


def _instance(snap: dict, name: str) -> dict:
    return next(i for i in _instances(snap) if any(t["Value"] == f"ttareungyi-{name}" for t in i["Tags"]))


def _user_data(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


# --- hosts and addresses -----------------------------------------------------


def test_hosts_are_named_from_their_name_tag(snap):
    p = translate(snap)
    assert [h.name for h in p.hosts] == ["broker-1", "broker-2", "broker-3", "nat"]
    assert {h.name: h.private_ip for h in p.hosts} == {
        "broker-1": "10.0.1.10",
        "broker-2": "10.0.2.10",
        "broker-3": "10.0.3.10",
        "nat": "10.0.0.10",
    }


def test_hosts_get_their_subnet_prefix_and_gateway(snap):
    p = translate(snap)
    broker = p.host("broker-2")
    assert (broker.prefix_len, broker.gateway) == (24, "10.0.2.1")
    subnet = next(s for s in p.subnets if s.id == broker.subnet_id)
    assert (subnet.cidr, subnet.az, subnet.map_public_ip) == ("10.0.2.0/24", "ap-northeast-2c", False)


def test_roles_come_from_tags_and_kafka_from_the_user_data(snap):
    p = translate(snap)
    assert p.host("nat").role == "nat" and p.host("nat").kafka is None
    assert {h.kafka_port for h in p.hosts if h.role == "broker"} == {9092}
    assert p.host("broker-2").kafka.listener_url == "tcp://10.0.2.10:9092"  # its server.properties
    assert [t.name for t in p.topics] == ["bike-station-status"]  # broker-1's topics.json


def test_nat_is_the_bastion(snap):
    assert translate(snap).bastion == "nat"


def test_source_dest_check_trusts_the_instance_attribute_over_the_eni(snap):
    nat = _instance(snap, "nat")
    assert nat["NetworkInterfaces"][0]["SourceDestCheck"] is True  # moto's ENI view
    p = translate(snap)
    assert p.host("nat").source_dest_check is False
    assert all(h.source_dest_check for h in p.hosts if h.name != "nat")


def test_source_dest_check_falls_back_to_the_instance_field(snap):
    nat = _instance(snap, "nat")
    snap["instance_attributes"][nat["InstanceId"]]["sourceDestCheck"] = None
    assert translate(snap).host("nat").source_dest_check is False


def test_eip_is_remapped_into_the_documentation_range(snap):
    p = translate(snap)
    (eip,) = p.public_addresses
    assert ipaddress.ip_address(eip.moto_ip).is_loopback  # moto hands out 127.x
    assert (eip.emulated_ip, eip.kind, eip.host) == ("198.51.100.10", "eip", "nat")
    assert p.host("nat").public_ip == "198.51.100.10"
    assert p.host("nat").moto_public_ip == eip.moto_ip
    assert all(h.public_ip is None for h in p.hosts if h.name != "nat")


def test_every_public_address_moto_reports_is_remapped(snap):
    broker = _instance(snap, "broker-1")
    broker["PublicIpAddress"] = "54.180.10.20"  # assigned at launch
    p = translate(snap)
    mapping = {a.moto_ip: a for a in p.public_addresses}
    assert mapping["54.180.10.20"].kind == "launch"
    assert mapping["54.180.10.20"].host == "broker-1"
    emulated = [a.emulated_ip for a in p.public_addresses]
    assert len(set(emulated)) == 2
    assert all(ipaddress.ip_address(ip) in model.PUBLIC_POOL for ip in emulated)
    assert p.host("broker-1").public_ip == mapping["54.180.10.20"].emulated_ip


def test_unassociated_eip_is_mapped_but_reaches_nothing(snap):
    snap["addresses"].append({"PublicIp": "127.0.0.99", "AllocationId": "eipalloc-1", "Domain": "vpc"})
    p = translate(snap)
    spare = next(a for a in p.public_addresses if a.moto_ip == "127.0.0.99")
    assert spare.private_ip is None and spare.host is None


def test_translation_is_deterministic(snap):
    assert translate(snap) == translate(load_snapshot())


# --- route tables --------------------------------------------------------------


def test_public_table_sends_default_to_the_internet_gateway(snap):
    p = translate(snap)
    table = p.route_table_of(p.host("nat"))
    assert table.name == "ttareungyi-public"
    assert [(r.destination, r.kind) for r in table.routes] == [("10.0.0.0/16", "local"), ("0.0.0.0/0", "igw")]
    assert table.routes[1].target == p.igw_id


def test_private_table_sends_default_to_the_nat_instance_eni(snap):
    p = translate(snap)
    tables = {p.route_table_of(p.host(f"broker-{i}")).id for i in (1, 2, 3)}
    assert len(tables) == 1
    default = next(r for r in route_table(p, "private").routes if r.destination == "0.0.0.0/0")
    assert (default.kind, default.next_hop, default.via_host) == ("instance", "10.0.0.10", "nat")
    assert default.target == p.host("nat").eni_id


def test_main_table_is_known_and_numbered(snap):
    p = translate(snap)
    main = [t for t in p.route_tables if t.main]
    assert len(main) == 1 and [r.kind for r in main[0].routes] == ["local"]
    assert sorted(t.table for t in p.route_tables) == list(range(100, 100 + len(p.route_tables)))


def test_subnet_without_association_uses_the_mainroute_table(snap):
    private = next(t for t in snap["route_tables"] if any(x["Value"] == "ttareungyi-private" for x in t["Tags"]))
    private["Associations"] = private["Associations"][1:]  # broker-1's subnet loses its association
    p = translate(snap)
    assert p.route_table_of(p.host("broker-1")).main


def test_route_with_blackhole_state_is_a_blackhole(snap):
    private = next(t for t in snap["route_tables"] if any(x["Value"] == "ttareungyi-private" for x in t["Tags"]))
    next(r for r in private["Routes"] if r["DestinationCidrBlock"] == "0.0.0.0/0")["State"] = "blackhole"
    default = next(r for r in route_table(translate(snap), "private").routes if r.destination == "0.0.0.0/0")
    assert default.kind == "blackhole" and "blackhole" in default.reason


def test_route_to_a_stopped_nat_is_a_blackhole(snap):
    nat = _instance(snap, "nat")
    nat["State"] = {"Code": 80, "Name": "stopped"}
    p = translate(snap)
    default = next(r for r in route_table(p, "private").routes if r.destination == "0.0.0.0/0")
    assert default.kind == "blackhole"
    assert "nat" not in [h.name for h in p.hosts]


def test_route_to_a_detached_internet_gateway_is_a_blackhole(snap):
    snap["internet_gateways"] = []
    p = translate(snap)
    default = next(r for r in route_table(p, "public").routes if r.destination == "0.0.0.0/0")
    assert default.kind == "blackhole" and "not attached" in default.reason
    assert p.igw_id is None


def test_route_to_an_unemulated_target_drops_and_says_so(snap):
    private = next(t for t in snap["route_tables"] if any(x["Value"] == "ttareungyi-private" for x in t["Tags"]))
    private["Routes"].append(
        {"DestinationCidrBlock": "172.16.0.0/12", "VpcPeeringConnectionId": "pcx-1", "State": "active"}
    )
    p = translate(snap)
    route = next(r for r in route_table(p, "private").routes if r.destination == "172.16.0.0/12")
    assert (route.kind, route.target) == ("blackhole", "pcx-1")
    assert any("pcx-1" in note for note in p.notes)


def test_routes_are_ordered_most_specific_first(variant_snap):
    routes = route_table(translate(variant_snap), "isolated").routes
    assert [r.destination for r in routes] == ["203.0.113.64/26", "10.0.0.0/16", "0.0.0.0/0"]


# --- the variant: second private table, blackhole, restricted egress ----------


def test_variant_gives_broker_3_its_ownroute_table(variant_snap):
    p = translate(variant_snap)
    assert p.route_table_of(p.host("broker-3")).name == "ttareungyi-isolated"
    assert p.route_table_of(p.host("broker-1")).name == "ttareungyi-private"


def test_variant_route_to_a_deleted_eni_is_a_blackhole(variant_snap):
    raw = next(t for t in variant_snap["route_tables"] if any(x["Value"] == "ttareungyi-isolated" for x in t["Tags"]))
    assert all(r["State"] == "active" for r in raw["Routes"])  # moto does not notice
    route = next(r for r in route_table(translate(variant_snap), "isolated").routes if r.destination == "203.0.113.64/26")
    assert route.kind == "blackhole" and route.reason == "no running instance holds the target"


def test_variant_egress_is_restricted(variant_snap):
    p = translate(variant_snap)
    (group,) = [p.group(g) for g in p.host("broker-1").security_groups]
    assert [(r.protocol, r.from_port, r.to_port, r.peer) for r in group.egress] == [
        ("tcp", 9092, 9093, "10.0.0.0/16"),
        ("tcp", 443, 443, "0.0.0.0/0"),
    ]


# --- security groups -----------------------------------------------------------


def test_group_sourced_rule_resolves_to_the_members_addresses(snap):
    p = translate(snap)
    broker_group = p.group(p.host("broker-1").security_groups[0])
    ssh = next(r for r in broker_group.ingress if r.from_port == 22)
    assert ssh.peer == p.host("nat").security_groups[0]
    assert ssh.peer_cidrs == ("10.0.0.10/32",)
    controller = next(r for r in broker_group.ingress if r.from_port == 9093)
    assert controller.peer == broker_group.id
    assert controller.peer_cidrs == ("10.0.1.10/32", "10.0.2.10/32", "10.0.3.10/32")


def test_nat_group_allows_admin_ssh_and_private_tcp_and_icmp(snap):
    p = translate(snap)
    nat_group = p.group(p.host("nat").security_groups[0])
    assert ("tcp", 22, 22, "203.0.113.50/32") in [
        (r.protocol, r.from_port, r.to_port, r.peer) for r in nat_group.ingress
    ]
    all_tcp = {r.peer for r in nat_group.ingress if r.protocol == "tcp" and r.from_port is None}
    icmp = {r.peer for r in nat_group.ingress if r.protocol == "icmp"}
    assert all_tcp == icmp == {"10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"}
    assert [(r.protocol, r.peer) for r in nat_group.egress] == [("all", "0.0.0.0/0")]


def test_group_with_no_members_matches_nothing(snap):
    group = next(g for g in snap["security_groups"] if g["GroupName"] == "ttareungyi-broker")
    group["IpPermissions"].append(
        {
            "IpProtocol": "tcp",
            "FromPort": 8080,
            "ToPort": 8080,
            "UserIdGroupPairs": [{"GroupId": "sg-nobody"}],
            "IpRanges": [],
        }
    )
    p = translate(snap)
    rule = next(r for r in p.group(group["GroupId"]).ingress if r.from_port == 8080)
    assert rule.peer_cidrs == ()
    assert render.rule_match(rule) is None


def test_instance_with_an_unknown_group_is_refused(snap):
    _instance(snap, "broker-1")["NetworkInterfaces"][0]["Groups"] = [{"GroupId": "sg-gone"}]
    with pytest.raises(PlaneUserError, match="sg-gone"):
        translate(snap)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            model.SgRule("ingress", "tcp", 22, 22, "203.0.113.50/32", ("203.0.113.50/32",)),
            "ip saddr { 203.0.113.50/32 } tcp dport 22",
        ),
        (
            model.SgRule("egress", "tcp", 9092, 9093, "10.0.0.0/16", ("10.0.0.0/16",)),
            "ip daddr { 10.0.0.0/16 } tcp dport 9092-9093",
        ),
        (model.SgRule("egress", "all", None, None, "0.0.0.0/0", ("0.0.0.0/0",)), ""),
        (
            model.SgRule("ingress", "tcp", None, None, "10.0.1.0/24", ("10.0.1.0/24",)),
            "ip saddr { 10.0.1.0/24 } meta l4proto tcp",
        ),
        (
            model.SgRule("ingress", "icmp", None, None, "10.0.1.0/24", ("10.0.1.0/24",)),
            "ip saddr { 10.0.1.0/24 } meta l4proto icmp",
        ),
        (model.SgRule("ingress", "icmp", 8, None, "0.0.0.0/0", ("0.0.0.0/0",)), "icmp type 8"),
        (model.SgRule("ingress", "udp", 53, 53, "0.0.0.0/0", ("0.0.0.0/0",)), "udp dport 53"),
        (model.SgRule("ingress", "50", None, None, "0.0.0.0/0", ("0.0.0.0/0",)), "meta l4proto 50"),
    ],
    ids=["ssh-cidr", "port-range", "all", "all-tcp", "all-icmp", "echo", "udp", "esp"],
)
def test_rule_match(rule, expected):
    assert render.rule_match(rule) == expected


# --- user data -----------------------------------------------------------------


def test_nat_setup_script_is_read_from_the_cloud_config(snap):
    script = translate(snap).host("nat").setup_script
    assert script is not None and script.startswith("#!/bin/bash")
    assert "ip_forward=1" in script and "masquerade" in script


def test_brokers_have_no_setup_script(snap):
    assert all(h.setup_script is None for h in translate(snap).hosts if h.role == "broker")


SCRIPT = "#!/bin/sh\necho hi\n"


@pytest.mark.parametrize("encoding", ["plain", "b64", "gz+b64"])
def test_write_files_encodings(encoding):
    if encoding == "plain":
        entry = "    content: |\n      #!/bin/sh\n      echo hi\n"
    elif encoding == "b64":
        entry = f"    encoding: b64\n    content: {base64.b64encode(SCRIPT.encode()).decode()}\n"
    else:
        entry = f"    encoding: gz+b64\n    content: {base64.b64encode(gzip.compress(SCRIPT.encode())).decode()}\n"
    text = f"#cloud-config\nwrite_files:\n  - path: {model.NAT_SETUP_PATH}\n{entry}"
    assert userdata.write_files(text)[model.NAT_SETUP_PATH] == SCRIPT


def test_gzipped_user_data_is_decoded():
    text = "#cloud-config\nwrite_files: []\n"
    assert userdata.decode_user_data(_user_data(gzip.compress(text.encode()))) == text


def test_multipart_user_data_is_searched():
    body = textwrap.dedent(
        f"""\
        Content-Type: multipart/mixed; boundary="XX"
        MIME-Version: 1.0

        --XX
        Content-Type: text/cloud-config; charset="us-ascii"

        #cloud-config
        write_files:
          - path: {model.NAT_SETUP_PATH}
            content: "#!/bin/sh\\necho hi\\n"
        --XX--
        """
    )
    assert userdata.write_files(body)[model.NAT_SETUP_PATH] == SCRIPT


def test_nat_without_setup_script_gets_a_note(snap):
    nat = _instance(snap, "nat")
    snap["instance_attributes"][nat["InstanceId"]]["userData"] = _user_data("#cloud-config\nruncmd: [[true]]\n")
    p = translate(snap)
    assert p.host("nat").setup_script is None
    assert any(note.startswith("nat: source/dest check is off") for note in p.notes)
    assert translate(load_snapshot()).notes == ()


def test_broken_cloud_config_is_a_note_not_a_crash(snap):
    nat = _instance(snap, "nat")
    snap["instance_attributes"][nat["InstanceId"]]["userData"] = _user_data("#cloud-config\nwrite_files: [\n")
    p = translate(snap)
    assert p.host("nat").setup_script is None
    assert any("cloud-config" in note for note in p.notes)


# --- the emulated internet ------------------------------------------------------


def test_operator_sits_at_the_admin_address(snap):
    internet = translate(snap).internet
    assert internet.operator_ip == "203.0.113.50"
    assert internet.web_ip != internet.outsider_ip
    for ip in (internet.web_ip, internet.outsider_ip):
        assert ipaddress.ip_address(ip) in model.INTERNET_NET and ip != "203.0.113.50"


def test_admin_cidr_outside_the_documentation_range_is_refused(snap):
    group = next(g for g in snap["security_groups"] if g["GroupName"] == "ttareungyi-nat")
    group["IpPermissions"][0]["IpRanges"] = [{"CidrIp": "211.234.5.6/32"}]
    with pytest.raises(PlaneUserError, match="203.0.113"):
        translate(snap)


def test_web_and_outsider_avoid_a_wide_admin_cidr(snap):
    group = next(g for g in snap["security_groups"] if g["GroupName"] == "ttareungyi-nat")
    group["IpPermissions"][0]["IpRanges"] = [{"CidrIp": "203.0.113.64/26"}]
    internet = translate(snap).internet
    net = ipaddress.ip_network("203.0.113.64/26")
    assert ipaddress.ip_address(internet.operator_ip) in net
    assert ipaddress.ip_address(internet.web_ip) not in net
    assert ipaddress.ip_address(internet.outsider_ip) not in net


def test_ssh_open_to_the_world_is_translated_quickly_and_the_outsider_gets_in(snap):
    """0.0.0.0/0 on the bastion's SSH (a misconfiguration the suite must catch): the operator and
    outsider keep their usual places, so the outsider's probe shows the world can reach SSH."""
    group = next(g for g in snap["security_groups"] if g["GroupName"] == "ttareungyi-nat")
    group["IpPermissions"][0]["IpRanges"] = [{"CidrIp": "0.0.0.0/0"}]
    started = time.perf_counter()
    internet = translate(snap).internet
    assert time.perf_counter() - started < 1.0  # no enumeration of 2**32 addresses
    assert internet.operator_ip == "203.0.113.50"
    assert internet.outsider_ip == "203.0.113.66" and internet.web_ip == "203.0.113.80"


def test_outsider_leaves_the_documentation_net_when_admins_hold_all_of_it(snap):
    group = next(g for g in snap["security_groups"] if g["GroupName"] == "ttareungyi-nat")
    group["IpPermissions"][0]["IpRanges"] = [{"CidrIp": "203.0.113.0/24"}]
    internet = translate(snap).internet
    assert ipaddress.ip_address(internet.operator_ip) in model.INTERNET_NET
    assert ipaddress.ip_address(internet.outsider_ip) in model.PUBLIC_POOL
