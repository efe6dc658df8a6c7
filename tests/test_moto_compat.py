"""The moto shim restores EC2's behaviour: an interface that outlives its instance is detached at
termination; a volume mounted on a running instance does not detach."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from generator.localaws.moto_compat import patch


def _client(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch()
    return boto3.client("ec2", region_name="ap-northeast-2")


@mock_aws
def test_terminating_an_instance_detaches_its_separately_created_eni(monkeypatch):
    ec2 = _client(monkeypatch)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="ap-northeast-2b")
    eni = ec2.create_network_interface(SubnetId=subnet["Subnet"]["SubnetId"], PrivateIpAddress="10.0.1.10")
    eni_id = eni["NetworkInterface"]["NetworkInterfaceId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.small",
        NetworkInterfaces=[{"NetworkInterfaceId": eni_id, "DeviceIndex": 0}],
    )["Instances"][0]["InstanceId"]
    attached = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    assert attached["Status"] == "in-use" and attached["Attachment"]["InstanceId"] == instance

    ec2.terminate_instances(InstanceIds=[instance])
    after = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])["NetworkInterfaces"][0]
    assert after["Status"] == "available" and "Attachment" not in after
    ec2.delete_network_interface(NetworkInterfaceId=eni_id)  # what terraform destroy does next
    assert not ec2.describe_network_interfaces(
        Filters=[{"Name": "network-interface-id", "Values": [eni_id]}]
    )["NetworkInterfaces"]


# --- a volume mounted on a running instance -------------------------------------------------
# EC2 leaves DetachVolume of a mounted volume "busy" while the instance runs; stopping or
# terminating the instance (or Force) releases it. The shim treats every volume on a running
# instance as mounted, as every kafkanet data volume is.


def _instance_with_data_volume(ec2) -> tuple[str, str]:
    """A running instance in ap-northeast-2b with a separately created volume attached at /dev/sdf."""
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.small",  # moto's example AMI
        Placement={"AvailabilityZone": "ap-northeast-2b"},
    )["Instances"][0]["InstanceId"]
    volume = ec2.create_volume(AvailabilityZone="ap-northeast-2b", Size=20, VolumeType="gp3")["VolumeId"]
    ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
    return instance, volume


def _volume(ec2, volume_id: str) -> tuple[str, list[tuple[str, str]]]:
    """(volume state, [(attached instance, attachment state)])."""
    found = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return found["State"], [(a["InstanceId"], a["State"]) for a in found.get("Attachments", [])]


@pytest.fixture
def stuck(monkeypatch):
    """(ec2, instance, volume): a running instance whose data volume a DetachVolume left busy."""
    with mock_aws():
        ec2 = _client(monkeypatch)
        instance, volume = _instance_with_data_volume(ec2)
        ec2.detach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
        assert _volume(ec2, volume) == ("in-use", [(instance, "busy")]), "moto detached a mounted volume"
        yield ec2, instance, volume


def test_detach_from_a_running_instance_sticks(stuck):
    ec2, instance, volume = stuck
    ec2.detach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")  # asking again changes nothing
    assert _volume(ec2, volume) == ("in-use", [(instance, "busy")])
    with pytest.raises(ClientError, match="VolumeInUse"):
        ec2.delete_volume(VolumeId=volume)


def test_stopping_the_instance_releases_a_stuck_volume(stuck):
    ec2, instance, volume = stuck
    ec2.stop_instances(InstanceIds=[instance])  # the OS unmounts on its way down: the detach completes
    assert _volume(ec2, volume) == ("available", [])
    ec2.attach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")
    ec2.detach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf")  # stopped: completes at once
    assert _volume(ec2, volume) == ("available", [])


def test_rebooting_the_instance_releases_a_stuck_volume(stuck):
    ec2, instance, volume = stuck
    ec2.reboot_instances(InstanceIds=[instance])
    assert _volume(ec2, volume) == ("available", [])


def test_terminating_the_instance_releases_a_stuck_volume(stuck):
    ec2, instance, volume = stuck
    ec2.terminate_instances(InstanceIds=[instance])
    assert _volume(ec2, volume) == ("available", [])  # not deleted: it was attached separately
    ec2.delete_volume(VolumeId=volume)  # what terraform destroy does next


def test_force_detaches_from_a_running_instance(stuck):
    ec2, instance, volume = stuck
    ec2.detach_volume(VolumeId=volume, InstanceId=instance, Device="/dev/sdf", Force=True)
    assert _volume(ec2, volume) == ("available", [])
    state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
