"""apply → inventory → plan → destroy of the seed environment on the local target, for real.

One seed environment is applied for the module (under a unique name, its
destroy registered before the apply); a second one with the same VPC CIDR runs
beside it as the nightly would (the IAM-enforced e2e in test_iam_policy_enforce.py,
which asks for the seed, so it runs in the seed's worker while the seed is up);
the last test kills the seed's moto server and proves a destroy still removes
everything.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from generator.environment.apply import plan

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]

EMULATED_PUBLIC = ipaddress.ip_network("198.51.100.0/24")


def test_inventory_describes_the_local_environment(seed):
    inv = seed.inventory
    assert inv["environment"] == seed.name and inv["target"] == "local"
    assert inv["aws_endpoint"].startswith("http://127.0.0.1:")
    assert [b["name"] for b in inv["brokers"]] == ["broker-1", "broker-2", "broker-3"]
    assert [b["private_ip"] for b in inv["brokers"]] == ["10.0.1.10", "10.0.2.10", "10.0.3.10"]
    assert inv["kafka"]["bootstrap_servers"] == "10.0.1.10:9092,10.0.2.10:9092,10.0.3.10:9092"
    assert ipaddress.ip_address(inv["bastion"]["public_ip"]) in EMULATED_PUBLIC
    assert inv["public_ip_map"][inv["bastion"]["aws_public_ip"]] == inv["bastion"]["public_ip"]
    assert Path(inv["ssh"]["private_key"]).stat().st_mode & 0o777 == 0o600
    assert inv["ssh"]["proxy_command"].startswith(f"ip netns exec kn_{seed.name}_operator ")
    assert len(Path(inv["ssh"]["known_hosts"]).read_text().splitlines()) == 4


def test_inventory_command_prints_the_same_document(seed, capsys):
    assert seed.cli("inventory", str(seed.spec)) == 0
    assert json.loads(capsys.readouterr().out) == seed.inventory


def _instances(ec2, name: str) -> dict[str, dict]:
    reservations = ec2.describe_instances(
        Filters=[{"Name": "tag:kafkanet:env", "Values": [name]},
                 {"Name": "instance-state-name", "Values": ["running"]}]
    )["Reservations"]
    return {
        next(t["Value"] for t in i["Tags"] if t["Key"] == "Name"): i
        for r in reservations for i in r["Instances"]
    }


def test_moto_holds_the_designed_network(seed):
    ec2, inv = seed.ec2(), seed.inventory
    net = inv["network"]
    instances = _instances(ec2, seed.name)
    nat = instances[f"{seed.name}-nat"]
    brokers = [instances[f"{seed.name}-broker-{i}"] for i in (1, 2, 3)]

    # private route table: default route to the NAT's ENI, nothing to the IGW
    private_rt = ec2.describe_route_tables(RouteTableIds=[net["private_route_table_id"]])["RouteTables"][0]
    default = [r for r in private_rt["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert len(default) == 1 and default[0]["NetworkInterfaceId"] == nat["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert not any(r.get("GatewayId", "").startswith("igw-") for r in private_rt["Routes"])
    assert {a["SubnetId"] for a in private_rt["Associations"]} == set(net["private_subnet_ids"].values())
    public_rt = ec2.describe_route_tables(RouteTableIds=[net["public_route_table_id"]])["RouteTables"][0]
    assert any(r.get("GatewayId") == net["internet_gateway_id"] for r in public_rt["Routes"])

    # NAT: source/dest check off (the instance attribute), the EIP, IMDSv2
    attr = ec2.describe_instance_attribute(InstanceId=nat["InstanceId"], Attribute="sourceDestCheck")
    assert attr["SourceDestCheck"]["Value"] is False
    eips = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [nat["InstanceId"]]}])["Addresses"]
    assert [e["PublicIp"] for e in eips] == [inv["bastion"]["aws_public_ip"]]
    for inst in [nat, *brokers]:
        assert inst["MetadataOptions"]["HttpTokens"] == "required"

    # brokers: no public address of any kind
    for b in brokers:
        assert "PublicIpAddress" not in b
        assert not ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [b["InstanceId"]]}])["Addresses"]

    # security groups
    sgs = {g["GroupId"]: g for g in ec2.describe_security_groups(
        GroupIds=[net["nat_security_group_id"], net["broker_security_group_id"]])["SecurityGroups"]}
    nat_sg, broker_sg = sgs[net["nat_security_group_id"]], sgs[net["broker_security_group_id"]]
    ssh = [p for p in nat_sg["IpPermissions"] if p.get("FromPort") == 22]
    assert [r["CidrIp"] for p in ssh for r in p["IpRanges"]] == ["203.0.113.50/32"]
    broker_ssh = [p for p in broker_sg["IpPermissions"] if p.get("FromPort") == 22]
    assert [g["GroupId"] for p in broker_ssh for g in p["UserIdGroupPairs"]] == [nat_sg["GroupId"]]
    assert not [r for p in broker_ssh for r in p["IpRanges"]]
    kafka = [p for p in broker_sg["IpPermissions"] if p.get("FromPort") == 9092]
    assert [r["CidrIp"] for p in kafka for r in p["IpRanges"]] == ["10.0.0.0/16"]


def test_plan_right_after_apply_has_no_changes(seed):
    result = plan(seed.env, generate_module=False)
    assert result.changes is False, result.stdout[-2000:]


def test_the_other_target_is_refused_and_nothing_is_touched(seed, capsys):
    state = (seed.env.build_dir / "terraform.tfstate").read_bytes()
    assert seed.cli("destroy", str(seed.spec), "--target", "aws") == 2
    err = capsys.readouterr().err
    assert "was applied with --target local" in err and "--target aws" in err
    assert (seed.env.build_dir / "terraform.tfstate").read_bytes() == state
