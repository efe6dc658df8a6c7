"""`kafkanet sweep` removes what killed e2e runs left, and nothing else.

Planted in a real moto server run the way kafkanet runs one for an environment
(under the build root): what a runner killed mid-apply leaves (a VPC with its
subnet, route table, route and association, an attached internet gateway, two
security groups referring to each other, an instance with an Elastic IP, an
attached volume and a spare ENI, a key pair, an IAM role with policies in an
instance profile), all stamped by the provider's default_tags with an expiry
long past; beside it a team environment (tagged kafkanet:env only, as `apply`
leaves it), a run that has not expired yet, and an expired run created only an
hour ago (which --older-than 12h must spare).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from generator.cli import main
from generator.environment import session, sweep
from generator.localaws import moto_server
from generator.module.runstamp import format_time

REGION = "ap-northeast-2"
NOW = datetime.now(timezone.utc)


def _stamp(run_id: str, env: str, created: timedelta, expires: timedelta) -> list[dict]:
    return [
        {"Key": "kafkanet:env", "Value": env},
        {"Key": "kafkanet:run-id", "Value": run_id},
        {"Key": "kafkanet:created-at", "Value": format_time(NOW - created)},
        {"Key": "kafkanet:expires-at", "Value": format_time(NOW + expires)},
    ]


def _spec(kind: str, tags: list[dict]) -> list[dict]:
    return [{"ResourceType": kind, "Tags": tags}]


def _plant_environment(ec2, iam, tags: list[dict], name: str) -> dict[str, str]:
    """The resources of one environment, as the module creates them; returns {kind: id}."""
    ids = {}
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=_spec("vpc", tags))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24", AvailabilityZone=f"{REGION}a",
                               TagSpecifications=_spec("subnet", tags))["Subnet"]["SubnetId"]
    igw = ec2.create_internet_gateway(TagSpecifications=_spec("internet-gateway", tags))
    igw = igw["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    rtb = ec2.create_route_table(VpcId=vpc, TagSpecifications=_spec("route-table", tags))["RouteTable"]
    rtb = rtb["RouteTableId"]
    ec2.create_route(RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assoc = ec2.associate_route_table(RouteTableId=rtb, SubnetId=subnet)["AssociationId"]
    sg_a = ec2.create_security_group(GroupName=f"{name}-nat", Description="nat", VpcId=vpc,
                                     TagSpecifications=_spec("security-group", tags))["GroupId"]
    sg_b = ec2.create_security_group(GroupName=f"{name}-broker", Description="broker", VpcId=vpc,
                                     TagSpecifications=_spec("security-group", tags))["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg_b, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": sg_a}]}])
    ec2.authorize_security_group_ingress(GroupId=sg_a, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "UserIdGroupPairs": [{"GroupId": sg_b}]}])
    key = ec2.create_key_pair(KeyName=f"{name}-key", TagSpecifications=_spec("key-pair", tags))["KeyPairId"]
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, InstanceType="t2.micro", SubnetId=subnet,
                             SecurityGroupIds=[sg_a], KeyName=f"{name}-key",
                             TagSpecifications=_spec("instance", tags))["Instances"][0]["InstanceId"]
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=_spec("elastic-ip", tags))["AllocationId"]
    ec2.associate_address(AllocationId=eip, InstanceId=inst)
    vol = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8, TagSpecifications=_spec("volume", tags))
    ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=inst, Device="/dev/sdf")
    eni = ec2.create_network_interface(SubnetId=subnet, Groups=[sg_b],
                                       TagSpecifications=_spec("network-interface", tags))
    role = f"{name}-nat"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}),
        Tags=tags)
    iam.put_role_policy(RoleName=role, PolicyName="failover", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:ReplaceRoute", "Resource": "*"}]}))
    policy = iam.create_policy(PolicyName=f"{name}-read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}))
    iam.attach_role_policy(RoleName=role, PolicyArn=policy["Policy"]["Arn"])
    iam.create_instance_profile(InstanceProfileName=role, Tags=tags)
    iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
    ids.update(vpc=vpc, subnet=subnet, igw=igw, rtb=rtb, assoc=assoc, sg_a=sg_a, sg_b=sg_b, key=key,
               instance=inst, eip=eip, volume=vol["VolumeId"], eni=eni["NetworkInterface"]["NetworkInterfaceId"],
               role=role)
    return ids


@pytest.fixture
def planted(_build_root, request):
    state = _build_root / "kn-planted" / session.MOTO_DIR
    request.addfinalizer(lambda: moto_server.stop(state))  # registered before the server starts
    moto = moto_server.ensure_running(state)
    ec2 = moto.ec2_client(REGION)
    iam = boto3.client("iam", region_name=REGION, endpoint_url=moto.url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    team_tags = [{"Key": "kafkanet:env", "Value": "team"}, {"Key": "team", "Value": "ttareungyi"}]
    return {
        "ec2": ec2, "iam": iam,
        "dead": _plant_environment(ec2, iam, _stamp("dead01", "seed-dead01", timedelta(days=2), -timedelta(days=1)),
                                   "seed-dead01"),
        "team": _plant_environment(ec2, iam, team_tags, "team"),
        "live": _plant_environment(ec2, iam, _stamp("live01", "seed-live01", timedelta(hours=1), timedelta(hours=3)),
                                   "seed-live01"),
        "young": ec2.create_vpc(CidrBlock="10.1.0.0/16", TagSpecifications=_spec("vpc", _stamp(
            "young1", "seed-young1", timedelta(hours=1), -timedelta(minutes=5))))["Vpc"]["VpcId"],
    }


def _present(ec2, iam, ids: dict[str, str]) -> dict[str, bool]:
    def exists(call, key, **kw):
        try:
            return bool(getattr(ec2, call)(**kw)[key])
        except ec2.exceptions.ClientError:
            return False

    running = [i for r in ec2.describe_instances(InstanceIds=[ids["instance"]])["Reservations"]
               for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    profiles = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    return {
        "instance": bool(running),
        "vpc": exists("describe_vpcs", "Vpcs", VpcIds=[ids["vpc"]]),
        "subnet": exists("describe_subnets", "Subnets", SubnetIds=[ids["subnet"]]),
        "igw": exists("describe_internet_gateways", "InternetGateways", InternetGatewayIds=[ids["igw"]]),
        "rtb": exists("describe_route_tables", "RouteTables", RouteTableIds=[ids["rtb"]]),
        "sg": exists("describe_security_groups", "SecurityGroups", GroupIds=[ids["sg_a"], ids["sg_b"]]),
        # by name: moto ignores KeyPairIds
        "key": ids["key"] in {k["KeyPairId"] for k in ec2.describe_key_pairs()["KeyPairs"]},
        "eip": exists("describe_addresses", "Addresses", AllocationIds=[ids["eip"]]),
        "volume": exists("describe_volumes", "Volumes", VolumeIds=[ids["volume"]]),
        "eni": exists("describe_network_interfaces", "NetworkInterfaces", NetworkInterfaceIds=[ids["eni"]]),
        "role": ids["role"] in roles,
        "profile": ids["role"] in profiles,
    }


def test_a_dry_run_lists_the_expired_runs_with_counts_and_deletes_nothing(planted, capsys):
    assert main(["sweep", "--target", "local", "--region", REGION]) == 0
    out, err = capsys.readouterr()
    # the expired run, all 14 kinds of the allowlist, and the young expired VPC; not the live run, not the team
    assert "dead01 (seed-dead01)" in out and "young1 (seed-young1)" in out
    assert "live01" not in out and "team" not in out
    counts = ("instance 1, network-interface 1, elastic-ip 1, volume 1, security-group 2, route 1, "
              "route-table-association 1, route-table 1, subnet 1, internet-gateway 1, vpc 2, key-pair 1, "
              "instance-profile 1, iam-role 1")
    assert counts in out, out
    assert "sweep dry run: 16 resource(s) would be deleted; nothing was. Pass --yes" in err
    assert all(_present(planted["ec2"], planted["iam"], planted["dead"]).values())


def test_older_than_narrows_and_never_widens(planted, capsys):
    assert main(["sweep", "--target", "local", "--region", REGION, "--older-than", "12h"]) == 0
    out = capsys.readouterr().out
    assert "dead01" in out and "young1" not in out  # created 1 h ago: spared
    assert "live01" not in out  # created 1 h ago but not expired: --older-than 30m cannot widen to it either
    assert main(["sweep", "--target", "local", "--region", REGION, "--older-than", "30m"]) == 0
    assert "live01" not in capsys.readouterr().out


def test_yes_deletes_the_expired_run_in_dependency_order_and_the_team_environment_survives(planted, capsys):
    ec2, iam = planted["ec2"], planted["iam"]
    assert main(["sweep", "--target", "local", "--region", REGION, "--older-than", "12h", "--yes"]) == 0
    out, err = capsys.readouterr()
    assert "sweep deleted 15 of 15 resource(s): instance 1, network-interface 1, elastic-ip 1, volume 1, " \
           "security-group 2, route 1, route-table-association 1, route-table 1, subnet 1, internet-gateway 1, " \
           "vpc 1, key-pair 1, instance-profile 1, iam-role 1" in err, out + err
    assert not any(_present(ec2, iam, planted["dead"]).values()), _present(ec2, iam, planted["dead"])
    assert all(_present(ec2, iam, planted["team"]).values()), _present(ec2, iam, planted["team"])
    assert all(_present(ec2, iam, planted["live"]).values()), _present(ec2, iam, planted["live"])
    assert ec2.describe_vpcs(VpcIds=[planted["young"]])["Vpcs"]  # --older-than spared it
    # a second sweep finds only what --older-than spared
    assert main(["sweep", "--target", "local", "--region", REGION]) == 0
    assert "1 expired resource(s) of run(s) young1 (seed-young1): vpc 1" in capsys.readouterr().out


def test_the_order_is_the_documented_one():
    assert sweep.KINDS.index("instance") < sweep.KINDS.index("elastic-ip") < sweep.KINDS.index("security-group")
    assert sweep.KINDS.index("route-table") < sweep.KINDS.index("subnet") < sweep.KINDS.index("internet-gateway")
    assert sweep.KINDS.index("internet-gateway") < sweep.KINDS.index("vpc") < sweep.KINDS.index("key-pair")
    assert sweep.KINDS[-2:] == ("instance-profile", "iam-role")


def test_aws_without_a_region_is_a_user_error(monkeypatch, capsys):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert main(["sweep", "--target", "aws"]) == 2
    assert "no AWS region: pass --region" in capsys.readouterr().err


def test_an_unknown_region_is_a_user_error(capsys):
    assert main(["sweep", "--target", "local", "--region", "mars-1"]) == 2
    assert "--region 'mars-1'" in capsys.readouterr().err


def test_on_aws_the_default_chain_and_region_are_used(monkeypatch, capsys):
    """The aws target's own code path, offline: moto's in-process mock answers every call."""
    from moto import mock_aws

    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(var, value)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        dead = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=_spec("vpc", _stamp(
            "dead02", "seed-dead02", timedelta(days=1), -timedelta(hours=1))))["Vpc"]["VpcId"]
        team = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=_spec("vpc", [
            {"Key": "kafkanet:env", "Value": "team"}]))["Vpc"]["VpcId"]
        assert main(["sweep", "--target", "aws", "--region", REGION, "--yes"]) == 0
        out, err = capsys.readouterr()
        assert f"aws {REGION}: 1 expired resource(s) of run(s) dead02 (seed-dead02): vpc 1" in out
        assert "sweep deleted 1 of 1 resource(s): vpc 1" in err
        left = {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]}
        assert team in left and dead not in left


def test_nothing_to_sweep_is_one_line(_build_root, capsys):
    assert main(["sweep", "--target", "local"]) == 0
    out, err = capsys.readouterr()
    assert "local: no moto server of any environment is running under the build root" in out
    assert "sweep dry run: 0 resource(s) would be deleted" in err


def test_strays_are_what_the_state_does_not_know_and_nothing_it_does(planted):
    """After an apply cut short, destroy deletes first what the environment's tag finds and its state
    lacks: here an instance and an interface that 'no state recorded'; a disk attached to an instance the
    state knows goes with that instance, and another environment's resources are never candidates."""
    ec2, iam, team = planted["ec2"], planted["iam"], planted["team"]
    known = {team[k] for k in ("vpc", "subnet", "igw", "rtb", "assoc", "sg_a", "sg_b", "key", "eip", "volume")}
    found = sweep.strays(ec2, "team", known)
    assert sorted((f.kind, f.id) for f in found) == [("instance", team["instance"]), ("network-interface", team["eni"])]
    # the disk is attached to an instance the state knows: not a stray even when the state lacks the disk
    assert [f.kind for f in sweep.strays(ec2, "team", (known - {team["volume"]}) | {team["instance"]})] == [
        "network-interface"]
    result = sweep.SweepResult(where="team", found=found)
    sweep.delete(ec2, None, found, result, lambda line: None)
    assert result.errors == []
    present = _present(ec2, iam, team)
    assert not present["instance"] and not present["eni"]
    assert present["vpc"] and present["subnet"] and present["volume"] and present["sg"]
    assert all(_present(ec2, iam, planted["live"]).values()), "another environment's resources were touched"
