"""The post-destroy leftover check finds what is still tagged with the environment."""

from __future__ import annotations

import boto3
from moto import mock_aws

from generator.environment.destroy import leftovers


@mock_aws
def test_leftovers_lists_tagged_resources_and_ignores_others(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ec2 = boto3.client("ec2", region_name="ap-northeast-2")
    tag = lambda env: [{"ResourceType": "vpc", "Tags": [{"Key": "kafkanet:env", "Value": env}]}]  # noqa: E731
    mine = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=tag("mine"))["Vpc"]["VpcId"]
    ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=tag("other"))
    vol = ec2.create_volume(
        AvailabilityZone="ap-northeast-2b", Size=1,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "kafkanet:env", "Value": "mine"}]}],
    )["VolumeId"]
    assert sorted(leftovers(ec2, "mine")) == sorted([mine, vol])
    assert leftovers(ec2, "nobody") == []


@mock_aws
def test_described_leftovers_say_how_each_was_left(monkeypatch):
    """After a destroy the message tells a detached interface from one still on an instance."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ec2 = boto3.client("ec2", region_name="ap-northeast-2")
    mine = [{"Key": "kafkanet:env", "Value": "mine"}]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="ap-northeast-2b")["Subnet"]
    eni = ec2.create_network_interface(SubnetId=subnet["SubnetId"], Description="broker-1",
                                       TagSpecifications=[{"ResourceType": "network-interface", "Tags": mine}],
                                       )["NetworkInterface"]["NetworkInterfaceId"]  # fmt: skip
    vol = ec2.create_volume(AvailabilityZone="ap-northeast-2b", Size=1,
                            TagSpecifications=[{"ResourceType": "volume", "Tags": mine}])["VolumeId"]  # fmt: skip
    said = leftovers(ec2, "mine", described=True)
    assert f"{eni} (available, not attached, 'broker-1')" in said, said
    assert f"{vol} (available)" in said, said
    assert sorted(leftovers(ec2, "mine")) == sorted([eni, vol]), "plain ids by default (the abandoned teardown lists them)"
