"""The reference ttareungyi topology, created with plain boto3 calls.

This is what ``terraform apply`` of the seed spec leaves in the EC2 API, written
out by hand: the local data plane's tests, its recorded snapshots and its bench
use it so that they do not depend on Terraform. It must only ever talk to a
local moto server: :func:`create` refuses any endpoint that is not loopback.

``variant=True`` adds what the seed topology lacks but the plane must handle:
restricted egress, a second private route table and routes AWS reports as (or
that behave as) blackholes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from localvpc.errors import PlaneUserError, is_loopback_url

NAT_SETUP_PATH = "/usr/local/sbin/kafkanet-nat-setup"
ADMIN_CIDR = "203.0.113.50/32"
AL2023_FILTER = "al2023-ami-2023.*-kernel-6.1-x86_64"

# A stand-in for what templates/ renders; the plane never reads it from here,
# only from the instance's user data as moto returns it.
NAT_SETUP_SCRIPT = textwrap.dedent(
    """\
    #!/bin/bash
    # kafkanet NAT setup: forward and masquerade traffic from the VPC.
    # Touches only network state; finds its interface from the default route.
    set -euo pipefail
    VPC_CIDR="{vpc_cidr}"
    sysctl -q -w net.ipv4.ip_forward=1
    iface="$(ip -4 route show default | awk '{{for (i = 1; i < NF; i++) if ($i == "dev") {{print $(i + 1); exit}}}}')"
    if [ -z "$iface" ]; then
        echo "kafkanet-nat-setup: no IPv4 default route, cannot pick the outside interface" >&2
        exit 1
    fi
    mkdir -p /etc/sysctl.d
    echo "net.ipv4.ip_forward = 1" > /etc/sysctl.d/90-kafkanet-nat.conf
    nft -f - <<EOF
    table ip kafkanet_nat
    delete table ip kafkanet_nat
    table ip kafkanet_nat {{
        chain postrouting {{
            type nat hook postrouting priority srcnat; policy accept;
            oifname "$iface" ip saddr $VPC_CIDR masquerade
        }}
    }}
    EOF
    echo "kafkanet-nat-setup: forwarding on, masquerading $VPC_CIDR out of $iface"
    """
)

# A stand-in for templates/kafka/server.properties.j2: what the plane reads of a
# broker's user data is this file and, on broker 1, the topics to create.
BROKER_PROPERTIES = textwrap.dedent(
    """\
    # Apache Kafka in KRaft mode (stand-in): broker {node}
    process.roles=broker,controller
    node.id={node}
    controller.quorum.voters=1@10.0.1.10:9093,2@10.0.2.10:9093,3@10.0.3.10:9093
    listeners=PLAINTEXT://{ip}:9092,CONTROLLER://{ip}:9093
    advertised.listeners=PLAINTEXT://{ip}:9092
    listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
    controller.listener.names=CONTROLLER
    inter.broker.listener.name=PLAINTEXT
    log.dirs=/var/lib/kafka/data
    num.partitions=1
    default.replication.factor=3
    min.insync.replicas=2
    auto.create.topics.enable=false
    """
)
TOPICS_JSON = '[{"name": "bike-station-status", "partitions": 3, "replication_factor": 3}]'


def broker_user_data(node: int, ip: str) -> str:
    """``#cloud-config`` writing a broker's server.properties (and on broker 1 its topics), no Kafka install."""
    files = [("/etc/kafka/server.properties", BROKER_PROPERTIES.format(node=node, ip=ip))]
    if node == 1:
        files.append(("/etc/kafkanet/topics.json", TOPICS_JSON + "\n"))
    entries = "".join(
        f"  - path: {path}\n    permissions: '0644'\n    content: |\n{textwrap.indent(text, ' ' * 6)}"
        for path, text in files
    )
    return f"#cloud-config\n# Stand-in for the broker template: the local plane runs tansu.\nwrite_files:\n{entries}"


def nat_user_data(vpc_cidr: str) -> str:
    """``#cloud-config`` that installs and runs the NAT setup script, as cloud-init would."""
    script = NAT_SETUP_SCRIPT.format(vpc_cidr=vpc_cidr)
    body = textwrap.indent(script, " " * 6)
    return (
        "#cloud-config\n"
        "write_files:\n"
        f"  - path: {NAT_SETUP_PATH}\n"
        "    owner: root:root\n"
        "    permissions: '0755'\n"
        "    content: |\n"
        f"{body}"
        "runcmd:\n"
        f"  - [{NAT_SETUP_PATH}]\n"
    )


@dataclass
class Created:
    """Ids of what :func:`create` made, for tests that poke at one of them."""

    vpc_id: str = ""
    igw_id: str = ""
    subnets: dict[str, str] = field(default_factory=dict)  # cidr -> id
    route_tables: dict[str, str] = field(default_factory=dict)  # role -> id
    security_groups: dict[str, str] = field(default_factory=dict)  # role -> id
    instances: dict[str, str] = field(default_factory=dict)  # short name -> id
    eip: str = ""


def _require_loopback(ec2) -> None:
    if not is_loopback_url(ec2.meta.endpoint_url or ""):
        raise PlaneUserError(
            f"reference topology: refusing to create resources at {ec2.meta.endpoint_url} (only a local moto server)"
        )


def _tags(env: str, name: str, **extra: str) -> list[dict[str, str]]:
    tags = {"Name": name, "kafkanet:env": env, "team": "ttareungyi", **extra}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _spec(kind: str, env: str, name: str, **extra: str) -> list[dict]:
    return [{"ResourceType": kind, "Tags": _tags(env, name, **extra)}]


def create(ec2, env: str = "ttareungyi", *, variant: bool = False, public_key: str | None = None) -> Created:
    """Create the reference topology for ``env`` in the EC2 API behind ``ec2`` (moto only)."""
    _require_loopback(ec2)
    region = ec2.meta.region_name
    out = Created()
    vpc_cidr = "10.0.0.0/16"
    vpc = ec2.create_vpc(CidrBlock=vpc_cidr, TagSpecifications=_spec("vpc", env, f"{env}-vpc"))["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    out.vpc_id = vpc
    igw = ec2.create_internet_gateway(TagSpecifications=_spec("internet-gateway", env, f"{env}-igw"))
    out.igw_id = igw["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=out.igw_id, VpcId=vpc)

    def subnet(cidr: str, az: str, name: str, public: bool) -> str:
        sid = ec2.create_subnet(
            VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{region}{az}", TagSpecifications=_spec("subnet", env, name)
        )["Subnet"]["SubnetId"]
        if public:
            ec2.modify_subnet_attribute(SubnetId=sid, MapPublicIpOnLaunch={"Value": True})
        out.subnets[cidr] = sid
        return sid

    public = subnet("10.0.0.0/24", "a", f"{env}-public-a", True)
    private = [subnet(f"10.0.{i}.0/24", az, f"{env}-private-{az}", False) for i, az in ((1, "b"), (2, "c"), (3, "d"))]

    def route_table(role: str) -> str:
        rid = ec2.create_route_table(VpcId=vpc, TagSpecifications=_spec("route-table", env, f"{env}-{role}"))
        out.route_tables[role] = rid["RouteTable"]["RouteTableId"]
        return out.route_tables[role]

    public_rt = route_table("public")
    ec2.create_route(RouteTableId=public_rt, DestinationCidrBlock="0.0.0.0/0", GatewayId=out.igw_id)
    ec2.associate_route_table(RouteTableId=public_rt, SubnetId=public)
    private_rt = route_table("private")
    for sid in private[: 2 if variant else 3]:
        ec2.associate_route_table(RouteTableId=private_rt, SubnetId=sid)

    def group(role: str, description: str) -> str:
        gid = ec2.create_security_group(
            GroupName=f"{env}-{role}",
            Description=description,
            VpcId=vpc,
            TagSpecifications=_spec("security-group", env, f"{env}-{role}"),
        )["GroupId"]
        out.security_groups[role] = gid
        return gid

    nat_sg = group("nat", "NAT instance and SSH bastion")
    private_cidrs = [{"CidrIp": f"10.0.{i}.0/24", "Description": f"private subnet {i}"} for i in (1, 2, 3)]
    ec2.authorize_security_group_ingress(
        GroupId=nat_sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": ADMIN_CIDR, "Description": "admin SSH"}],
            },
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "IpRanges": private_cidrs},
            {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": private_cidrs},
        ],
    )
    broker_sg = group("broker", "Kafka brokers")
    ec2.authorize_security_group_ingress(
        GroupId=broker_sg,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "UserIdGroupPairs": [{"GroupId": nat_sg, "Description": "SSH from the bastion"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 9092,
                "ToPort": 9092,
                "IpRanges": [{"CidrIp": vpc_cidr, "Description": "Kafka clients"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 9093,
                "ToPort": 9093,
                "UserIdGroupPairs": [{"GroupId": broker_sg, "Description": "KRaft controllers"}],
            },
        ],
    )
    if variant:
        # Restricted egress: only Kafka inside the VPC and HTTPS anywhere.
        ec2.revoke_security_group_egress(
            GroupId=broker_sg, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        )
        ec2.authorize_security_group_egress(
            GroupId=broker_sg,
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 9092, "ToPort": 9093, "IpRanges": [{"CidrIp": vpc_cidr}]},
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
            ],
        )

    image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [AL2023_FILTER]}])["Images"][0][
        "ImageId"
    ]
    key_name = None
    if public_key:
        key_name = f"{env}-key"
        ec2.import_key_pair(KeyName=key_name, PublicKeyMaterial=public_key.encode())

    def instance(name: str, subnet_id: str, ip: str, sg: str, itype: str, user_data: str, **tags: str) -> str:
        kwargs = {"KeyName": key_name} if key_name else {}
        iid = ec2.run_instances(
            ImageId=image,
            InstanceType=itype,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet_id,
            PrivateIpAddress=ip,
            SecurityGroupIds=[sg],
            UserData=user_data,
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True, "VolumeSize": 8}}],
            TagSpecifications=_spec("instance", env, f"{env}-{name}", **tags),
            **kwargs,
        )["Instances"][0]["InstanceId"]
        out.instances[name] = iid
        return iid

    nat = instance("nat", public, "10.0.0.10", nat_sg, "t2.micro", nat_user_data(vpc_cidr), **{"kafkanet:role": "nat"})
    ec2.modify_instance_attribute(InstanceId=nat, SourceDestCheck={"Value": False})
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=_spec("elastic-ip", env, f"{env}-nat-eip"))
    out.eip = eip["PublicIp"]
    ec2.associate_address(AllocationId=eip["AllocationId"], InstanceId=nat)
    nat_eni = ec2.describe_instances(InstanceIds=[nat])["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]
    ec2.create_route(
        RouteTableId=private_rt, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=nat_eni["NetworkInterfaceId"]
    )

    for i in (1, 2, 3):
        instance(
            f"broker-{i}",
            private[i - 1],
            f"10.0.{i}.10",
            broker_sg,
            "t3.small",
            broker_user_data(i, f"10.0.{i}.10"),
            **{"kafkanet:role": "broker"},
        )

    if variant:
        # broker-3's subnet gets its own table: default via the NAT, but
        # 203.0.113.64/26 (the emulated web host's part of the internet) goes
        # to an ENI that no instance holds any more: AWS reports such a route
        # as "blackhole" and drops what it matches.
        isolated_rt = route_table("isolated")
        ec2.associate_route_table(RouteTableId=isolated_rt, SubnetId=private[2])
        ec2.create_route(
            RouteTableId=isolated_rt, DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=nat_eni["NetworkInterfaceId"]
        )
        spare = ec2.create_network_interface(SubnetId=private[2], Description="detached spare")["NetworkInterface"]
        ec2.create_route(
            RouteTableId=isolated_rt,
            DestinationCidrBlock="203.0.113.64/26",
            NetworkInterfaceId=spare["NetworkInterfaceId"],
        )
        ec2.delete_network_interface(NetworkInterfaceId=spare["NetworkInterfaceId"])
    return out
