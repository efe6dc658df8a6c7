"""Checks of integration/test_control_plane.py against a network made by hand in moto.

The suite runs as `kafkanet test` runs it (its own pytest.ini, the plugin, an
inventory), against a moto server on 127.0.0.1 holding a VPC built with boto3:
no terraform, no data plane, no root. Each check must fail exactly where the
network is wrong, naming the resource and what it saw, and pass elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from generator.localaws import moto_server
from tests.conftest import ROOT

SUITE = ROOT / "integration"


@pytest.fixture
def moto(request, tmp_path) -> moto_server.MotoServer:
    state = tmp_path / ".kafkanet"
    request.addfinalizer(lambda: moto_server.stop(state))  # teardown before setup
    return moto_server.start(state)


def _inventory(tmp_path: Path, moto: moto_server.MotoServer, vpc_id: str, subnets: dict[str, str]) -> Path:
    """What the control-plane module needs to collect; the checks selected here read only the network."""
    inventory = {
        "version": 1, "environment": "kn-checks", "target": "local", "region": "ap-northeast-2",
        "aws_endpoint": moto.url, "ssh": {}, "admin_cidrs": ["203.0.113.50/32"],
        "bastion": {"name": "bastion", "instance_id": "i-00000000000000000"}, "brokers": [],
        "kafka": {"port": 9092, "controller_port": 9093, "topics": [], "implementation": "tansu"},
        "network": {"vpc_id": vpc_id, "vpc_cidr": "10.0.0.0/16", "private_subnet_ids": subnets},
    }
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory))
    return path


def _run_checks(tmp_path: Path, inventory: Path, selection: str) -> tuple[int, dict[str, str | None]]:
    """Run the selected control-plane checks as `kafkanet test` does: {test name: failure message or None}."""
    junit = tmp_path / "integration.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(SUITE / "pytest.ini"), "-p", "integration.plugin",
         str(SUITE / "test_control_plane.py"), "--inventory", str(inventory), "--junitxml", str(junit),
         "-k", selection],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert junit.exists(), run.stdout + run.stderr
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        outcomes[case.get("name")] = None if problem is None else problem.get("message")
    return run.returncode, outcomes


def test_private_subnet_that_maps_public_ips_fails_its_check(moto, tmp_path):
    ec2 = moto.ec2_client("ap-northeast-2")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = {
        az: ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"ap-northeast-2{az}")[
            "Subnet"]["SubnetId"]
        for n, az in enumerate("bcd", start=1)
    }
    ec2.modify_subnet_attribute(SubnetId=subnets["c"], MapPublicIpOnLaunch={"Value": True})

    rc, outcomes = _run_checks(tmp_path, _inventory(tmp_path, moto, vpc_id, subnets), "private_subnet_maps_no_public")
    check = "test_private_subnet_maps_no_public_ip"
    assert outcomes == {
        f"{check}[private-b]": None,
        f"{check}[private-c]": (
            f"Failed: private subnet c ({subnets['c']}): MapPublicIpOnLaunch: expected False (an instance launched here "
            "must get no public address; AWS FSBP EC2.15), saw True"
        ),
        f"{check}[private-d]": None,
    }
    assert rc == 1


def test_broker_without_path_mtu_discovery_fails_its_check(moto, tmp_path):
    ec2 = moto.ec2_client("ap-northeast-2")
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone="ap-northeast-2b")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    brokers = []
    for name, icmp in (("broker-1", False), ("broker-2", True)):
        group = ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc_id)["GroupId"]
        if icmp:
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
                "IpProtocol": "icmp", "FromPort": 3, "ToPort": 4, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet["Subnet"]["SubnetId"],
                                     SecurityGroupIds=[group])["Instances"][0]  # fmt: skip
        brokers.append({"name": name, "instance_id": instance["InstanceId"], "private_ip": instance["PrivateIpAddress"]})
    inventory = _inventory(tmp_path, moto, vpc_id, {"b": subnet["Subnet"]["SubnetId"]})
    document = json.loads(inventory.read_text())
    inventory.write_text(json.dumps({**document, "brokers": brokers}))

    rc, outcomes = _run_checks(tmp_path, inventory, "path_mtu")
    assert outcomes["test_broker_lets_path_mtu_discovery_in[broker-2]"] is None
    failed = outcomes["test_broker_lets_path_mtu_discovery_in[broker-1]"]
    assert failed is not None and "broker-1" in failed and "fragmentation-needed" in failed, outcomes
    assert rc == 1
