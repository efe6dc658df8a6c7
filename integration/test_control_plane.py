"""Control plane: what the EC2 API says about the environment (read-only describe calls)."""

from __future__ import annotations

from typing import Any

import pytest

from integration import aws
from integration.support import expect, expect_equal, fail, host_label


def _nat_enis(nat: dict[str, Any]) -> set[str]:
    return {eni["NetworkInterfaceId"] for eni in nat.get("NetworkInterfaces", [])}


# --- brokers --------------------------------------------------------------------------------


def test_broker_in_private_subnet(broker, ec2, inventory):
    inst = aws.instance(ec2, broker["instance_id"])
    private = inventory["network"]["private_subnet_ids"]
    expect(
        inst.get("SubnetId") in private.values(),
        broker["name"],
        "subnet",
        f"{inst.get('SubnetId')} is not one of the private subnets {sorted(private.values())}",
    )


def test_broker_has_no_public_address(broker, ec2):
    inst = aws.instance(ec2, broker["instance_id"])
    seen = []
    if inst.get("PublicIpAddress"):
        seen.append(f"PublicIpAddress {inst['PublicIpAddress']}")
    for eni in inst.get("NetworkInterfaces", []):
        if (eni.get("Association") or {}).get("PublicIp"):
            seen.append(f"{eni['NetworkInterfaceId']} associated with {eni['Association']['PublicIp']}")
    eips = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [broker["instance_id"]]}])["Addresses"]
    seen += [f"Elastic IP {a['PublicIp']}" for a in eips]
    expect(not seen, host_label(broker), "public address (brokers must have none)", "; ".join(seen))


def test_broker_ssh_only_from_bastion_group(broker, ec2, inventory):
    groups = aws.security_groups(ec2, aws.instance(ec2, broker["instance_id"]))
    bastion = aws.instance(ec2, inventory["bastion"]["instance_id"])
    bastion_groups = {g["GroupId"] for g in bastion.get("SecurityGroups", [])}
    port = int(inventory["ssh"].get("port") or 22)
    sources = aws.ingress_sources(groups, port)
    wrong = [s for s in sources if not (s.kind == "group" and s.value in bastion_groups)]
    expect(
        not wrong,
        broker["name"],
        f"SSH ({port}) sources other than the bastion's security groups {sorted(bastion_groups)}",
        "; ".join(map(str, wrong)),
    )
    expect(sources, broker["name"], f"SSH ({port}) from the bastion", "no ingress rule allows it at all")


def test_broker_lets_path_mtu_discovery_in(broker, ec2):
    """ICMP "fragmentation needed" (type 3 code 4) from anywhere: the NAT hands it on with the
    remote router's address; without it a path below the VPC's 9001-byte MTU black-holes."""
    groups = aws.security_groups(ec2, aws.instance(ec2, broker["instance_id"]))
    rules = [
        (p.get("FromPort"), p.get("ToPort"), r.get("CidrIp"))
        for g in groups for p in g.get("IpPermissions", []) if p.get("IpProtocol") == "icmp"
        for r in p.get("IpRanges", [])
    ]  # fmt: skip
    expect(
        any(kind in (3, -1) and code in (4, -1) and cidr == "0.0.0.0/0" for kind, code, cidr in rules),
        broker["name"],
        "ICMP fragmentation-needed (type 3 code 4) allowed in from 0.0.0.0/0",
        f"ICMP rules: {rules or 'none'}",
    )


@pytest.mark.parametrize("which", ["port", "controller_port"], ids=["kafka", "controller"])
def test_broker_kafka_ports_only_from_vpc(broker, which, ec2, inventory):
    port = int(inventory["kafka"][which])
    vpc_id = inventory["network"]["vpc_id"]
    vpc = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]
    vpc_cidrs = [a["CidrBlock"] for a in vpc.get("CidrBlockAssociationSet", [])]
    vpc_cidrs = vpc_cidrs or [inventory["network"]["vpc_cidr"]]
    groups = aws.security_groups(ec2, aws.instance(ec2, broker["instance_id"]))
    sources = aws.ingress_sources(groups, port)
    in_vpc = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    vpc_groups = {g["GroupId"] for g in in_vpc}
    wrong = [
        s
        for s in sources
        if not ((s.kind == "cidr" and aws.within(s.value, vpc_cidrs)) or (s.kind == "group" and s.value in vpc_groups))
    ]
    expect(
        not wrong,
        broker["name"],
        f"{which.replace('_', ' ')} {port} sources outside the VPC {vpc_cidrs}",
        "; ".join(map(str, wrong)),
    )
    # ... and the port must actually be open to its clients: the whole VPC for Kafka, the
    # brokers themselves (their own group, or a CIDR covering the VPC) for the controller.
    own = {g["GroupId"] for g in groups}
    admitted = [
        s for s in sources
        if (s.kind == "cidr" and any(aws.within(c, [s.value]) for c in vpc_cidrs))
        or (which == "controller_port" and s.kind == "group" and s.value in own)
    ]
    expect(admitted, broker["name"], f"{which.replace('_', ' ')} {port} admitted from its clients in the VPC",
           "no rule admits them: " + ("; ".join(map(str, sources)) or "no rule for the port at all"))  # fmt: skip


# --- every instance -----------------------------------------------------------------------------


def test_imdsv2_required(instance, ec2):
    options = aws.instance(ec2, instance["instance_id"]).get("MetadataOptions") or {}
    disabled = options.get("HttpEndpoint") == "disabled"
    expect(
        disabled or options.get("HttpTokens") == "required",
        host_label(instance),
        "IMDSv2 (metadata HttpTokens)",
        f"expected 'required', saw {options.get('HttpTokens')!r} (endpoint {options.get('HttpEndpoint')!r})",
    )


def test_root_volume_encrypted(instance, ec2):
    inst = aws.instance(ec2, instance["instance_id"])
    root = inst.get("RootDeviceName")
    mapping = [m for m in inst.get("BlockDeviceMappings", []) if m.get("DeviceName") == root]
    if not mapping or not mapping[0].get("Ebs", {}).get("VolumeId"):
        fail(host_label(instance), "root volume", f"no EBS volume mapped at root device {root!r}")
    volume_id = mapping[0]["Ebs"]["VolumeId"]
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    expect(volume.get("Encrypted") is True, host_label(instance), f"root volume {volume_id} encrypted",
           volume.get("Encrypted"))  # fmt: skip


# --- private route tables -------------------------------------------------------------------


def test_private_default_route_via_nat(private_subnet, ec2, inventory):
    az, subnet_id = private_subnet
    table = aws.route_table_of(ec2, inventory["network"]["vpc_id"], subnet_id)
    nat = aws.instance(ec2, inventory["bastion"]["instance_id"])
    defaults = [r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    label = f"private subnet {az} ({subnet_id}, {table['RouteTableId']})"
    if not defaults:
        fail(label, "default route", "none (brokers would have no outbound internet)")
    route = defaults[0]
    via_nat = route.get("InstanceId") == nat["InstanceId"] or route.get("NetworkInterfaceId") in _nat_enis(nat)
    expect(
        via_nat,
        label,
        f"0.0.0.0/0 target (expected the NAT instance {nat['InstanceId']} or its interface)",
        aws.describe_route(route),
    )
    expect_equal(route.get("State"), "active", label, "0.0.0.0/0 route state")


def test_private_route_table_has_no_igw_route(private_subnet, ec2, inventory):
    az, subnet_id = private_subnet
    table = aws.route_table_of(ec2, inventory["network"]["vpc_id"], subnet_id)
    to_igw = [r for r in table.get("Routes", []) if str(r.get("GatewayId", "")).startswith("igw-")]
    expect(
        not to_igw,
        f"private subnet {az} ({subnet_id}, {table['RouteTableId']})",
        "routes to an internet gateway",
        "; ".join(aws.describe_route(r) for r in to_igw),
    )


# --- private subnets ------------------------------------------------------------------------


def test_private_subnet_maps_no_public_ip(private_subnet, ec2):
    az, subnet_id = private_subnet
    subnet = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
    expect_equal(
        subnet.get("MapPublicIpOnLaunch"),
        False,
        f"private subnet {az} ({subnet_id})",
        "MapPublicIpOnLaunch",
        "an instance launched here must get no public address; AWS FSBP EC2.15",
    )


# --- the NAT instance / bastion ----------------------------------------------------------------


@pytest.mark.host("bastion")
def test_nat_source_dest_check_off(ec2, inventory):
    bastion = inventory["bastion"]
    answer = ec2.describe_instance_attribute(InstanceId=bastion["instance_id"], Attribute="sourceDestCheck")
    value = answer.get("SourceDestCheck", {}).get("Value")
    expect(
        value is False,
        host_label(bastion),
        "source/dest check (instance attribute; must be off to forward for the private subnets)",
        f"{value!r}",
    )


@pytest.mark.host("bastion")
def test_nat_elastic_ip_attached(ec2, inventory):
    bastion = inventory["bastion"]
    eips = ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [bastion["instance_id"]]}])["Addresses"]
    addresses = [a["PublicIp"] for a in eips]
    expected = bastion.get("aws_public_ip") or bastion["public_ip"]
    expect(
        expected in addresses,
        host_label(bastion),
        f"Elastic IP {expected} (the inventory's) attached",
        f"attached Elastic IPs: {addresses or 'none'}",
    )


@pytest.mark.host("bastion")
def test_bastion_ssh_only_from_admin_cidrs(ec2, inventory):
    bastion = inventory["bastion"]
    groups = aws.security_groups(ec2, aws.instance(ec2, bastion["instance_id"]))
    port = int(inventory["ssh"].get("port") or 22)
    admin = list(inventory["admin_cidrs"])
    vpc = [inventory["network"]["vpc_cidr"]]
    sources = aws.ingress_sources(groups, port)
    # From outside the VPC only the admin CIDRs; inside it, the NAT's forwarding rules for the private subnets.
    wrong = [
        s
        for s in sources
        if not (s.kind == "cidr" and (aws.within(s.value, admin) or aws.within(s.value, vpc)))
        and not (s.kind == "group" and s.value in {g["GroupId"] for g in groups})
    ]
    expect(not wrong, host_label(bastion), f"SSH ({port}) sources outside the admin CIDRs {admin}",
           "; ".join(map(str, wrong)))  # fmt: skip
    admitted = [s for s in sources if s.kind == "cidr" and aws.within(s.value, admin)]
    expect(admitted, host_label(bastion), f"SSH ({port}) from the admin CIDRs {admin}", "no rule admits them")
