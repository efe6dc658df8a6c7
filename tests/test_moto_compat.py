"""The moto shim restores EC2's behaviour: an interface that outlives its instance is detached."""

from __future__ import annotations

import boto3
from moto import mock_aws

from generator.localaws.moto_compat import patch


@mock_aws
def test_terminating_an_instance_detaches_its_separately_created_eni(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch()
    ec2 = boto3.client("ec2", region_name="ap-northeast-2")
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
