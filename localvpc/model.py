"""The plane model: what the local data plane must emulate, as frozen records. Pure.

Owns the types a :class:`Plane` is made of (subnets, route tables and their
routes, security groups and their rules with peers resolved to addresses, hosts
and the Kafka broker each runs, public addresses, the emulated internet's
hosts, the topics to create) and the address plan they live in: emulated public
addresses in 198.51.100.0/24, the emulated internet in 203.0.113.0/24, the NAT
setup script's path. A Plane is built by :func:`localvpc.translation.translate`
and read by :mod:`localvpc.render` and :mod:`localvpc.plane`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

NAT_SETUP_PATH = "/usr/local/sbin/kafkanet-nat-setup"
NAT_MONITOR_PATH = "/usr/local/sbin/kafkanet-nat-monitor"  # a NAT pair's failover monitor

PUBLIC_POOL = ipaddress.ip_network("198.51.100.0/24")
INTERNET_NET = ipaddress.ip_network("203.0.113.0/24")
DOCUMENTATION_NETS = (PUBLIC_POOL, INTERNET_NET)


@dataclass(frozen=True)
class Route:
    destination: str
    kind: str  # "local" | "igw" | "instance" | "blackhole"
    target: str  # "local", igw id, ENI/instance id, or the unusable target
    next_hop: str | None = None  # private IP of the target instance (kind "instance")
    via_host: str | None = None  # its host name (kind "instance")
    reason: str = ""  # why a route is a blackhole


@dataclass(frozen=True)
class RouteTable:
    id: str
    name: str
    table: int  # kernel routing table number in the router namespace
    main: bool
    routes: tuple[Route, ...]


@dataclass(frozen=True)
class Subnet:
    id: str
    name: str
    cidr: str
    az: str
    gateway: str  # the VPC router's address in the subnet (.1)
    route_table: str  # id of the route table the subnet uses (explicit or main)
    map_public_ip: bool


@dataclass(frozen=True)
class SgRule:
    direction: str  # "ingress" | "egress"
    protocol: str  # "all" | "tcp" | "udp" | "icmp" | an IP protocol number
    from_port: int | None  # tcp/udp: first port; icmp: type (None = any)
    to_port: int | None  # tcp/udp: last port; icmp: code (None = any)
    peer: str  # the CIDR or the security group id as AWS shows it
    peer_cidrs: tuple[str, ...]  # addresses the peer stands for (group: its members' /32s)
    description: str = ""


@dataclass(frozen=True)
class SecurityGroup:
    id: str
    name: str
    ingress: tuple[SgRule, ...]
    egress: tuple[SgRule, ...]


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    replication_factor: int  # tansu keeps one copy whatever this says


@dataclass(frozen=True)
class KafkaBroker:
    """What a host's /etc/kafka/server.properties asks of its broker, as tansu runs it (see localvpc.kafkaconf)."""

    listener_url: str  # tcp://ADDRESS:PORT tansu binds in the host's namespace
    advertised_url: str  # tcp://ADDRESS:PORT it gives clients in metadata
    port: int  # the port it listens on
    unhonoured: tuple[str, ...]  # keys of the file tansu accepts but cannot honour


@dataclass(frozen=True)
class Host:
    name: str  # short name: the Name tag without "<env>-", e.g. "broker-1"
    instance_id: str
    name_tag: str
    role: str | None
    eni_id: str
    subnet_id: str
    private_ip: str
    prefix_len: int
    gateway: str
    security_groups: tuple[str, ...]
    source_dest_check: bool
    public_ip: str | None  # emulated (198.51.100.0/24)
    moto_public_ip: str | None  # what moto reports
    kafka: KafkaBroker | None  # from its user data's server.properties; None: no broker
    setup_script: str | None  # NAT_SETUP_PATH from the user data's write_files
    key_name: str | None
    mac: str | None = None  # the primary ENI's MAC as EC2 reports it (IMDS's ``mac``); the instance's veth wears it
    monitor_script: str | None = None  # NAT_MONITOR_PATH from the user data's write_files (a NAT pair's monitor)

    @property
    def kafka_port(self) -> int | None:
        return self.kafka.port if self.kafka else None


@dataclass(frozen=True)
class PublicAddress:
    moto_ip: str
    emulated_ip: str
    kind: str  # "eip" | "launch" | "auto" (re-assigned by EC2, not shown by moto: moto_ip is "auto:<instance id>")
    private_ip: str | None  # None: an Elastic IP associated with nothing
    host: str | None


@dataclass(frozen=True)
class Internet:
    operator_ip: str  # inside an admin CIDR of the bastion's SSH rule
    web_ip: str  # answers HTTP with the caller's address
    outsider_ip: str  # an internet address outside every admin CIDR


@dataclass(frozen=True)
class Plane:
    env: str  # the environment tag the state carries
    region: str
    vpc_id: str
    vpc_cidrs: tuple[str, ...]
    igw_id: str | None
    subnets: tuple[Subnet, ...]
    route_tables: tuple[RouteTable, ...]
    security_groups: tuple[SecurityGroup, ...]
    hosts: tuple[Host, ...]
    public_addresses: tuple[PublicAddress, ...]
    bastion: str | None
    internet: Internet
    notes: tuple[str, ...] = field(default=())
    topics: tuple[Topic, ...] = field(default=())  # from the user data (broker 1's), created on every broker

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def route_table_of(self, host: Host) -> RouteTable:
        subnet = next(s for s in self.subnets if s.id == host.subnet_id)
        return next(t for t in self.route_tables if t.id == subnet.route_table)

    def group(self, group_id: str) -> SecurityGroup:
        return next(g for g in self.security_groups if g.id == group_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
