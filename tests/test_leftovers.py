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
