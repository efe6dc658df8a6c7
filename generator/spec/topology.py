"""Everything derived from a valid spec: subnets, broker placement, static IPs, KRaft quorum.

Pure and deterministic: the same spec always gives the same plan, so the
generated Terraform never churns.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import uuid
from dataclasses import dataclass
from functools import cached_property

from generator.spec.model import (
    FIRST_HOST_OFFSET,
    PREFERRED_SUBNET_PREFIX,
    SMALLEST_SUBNET_PREFIX,
    Spec,
    TopicSpec,
)

Net = ipaddress.IPv4Network


class SubnetPlanError(Exception):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Subnet:
    key: str  # "public" or "private_b": used as the Terraform map key
    role: str  # "public" | "private"
    az_letter: str
    az: str  # full zone name, e.g. ap-northeast-2b
    cidr: Net

    def host(self, offset: int) -> ipaddress.IPv4Address:
        return self.cidr.network_address + offset


@dataclass(frozen=True)
class Broker:
    name: str  # broker-1 ...
    node_id: int
    subnet: Subnet
    private_ip: ipaddress.IPv4Address
    controller: bool  # member of the KRaft controller quorum

    @property
    def az(self) -> str:
        return self.subnet.az


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    replication_factor: int


STANDBY_SUBNET_KEY = "public_standby"


def _carve(spec: Spec) -> tuple[list[Subnet], list[Subnet]]:
    """The public subnets (the active NAT's first) and the private ones."""
    vpc = spec.vpc_cidr
    azs = spec.brokers.azs
    region = spec.region
    nat = spec.nat
    active, *standbys = nat.az_letters
    wanted: list[tuple[str, str, str, Net | None]] = [("public", "public", active, nat.subnet_cidr_for(active))]
    wanted += [(f"private_{a}", "private", a, spec.brokers.subnet_cidrs.get(a)) for a in azs]
    # The standby's subnet comes last and the block size is the single NAT's: adding
    # a standby to a running environment never moves a subnet that exists.
    single_count = len(wanted)
    wanted += [(STANDBY_SUBNET_KEY, "public", a, nat.subnet_cidr_for(a)) for a in standbys]

    problems: list[str] = []
    explicit: list[tuple[str, Net]] = []
    for key, _, letter, cidr in wanted:
        if cidr is None:
            continue
        if key == "public" or key == STANDBY_SUBNET_KEY:
            field = f"nat.subnet_cidrs.{letter}" if nat.is_pair else "nat.subnet_cidr"
        else:
            field = f"brokers.subnet_cidrs.{letter}"
        if not cidr.subnet_of(vpc):
            problems.append(f"{field}: {cidr} is outside vpc_cidr {vpc}; pick a range inside it")
        elif cidr.prefixlen > SMALLEST_SUBNET_PREFIX:
            problems.append(f"{field}: {cidr} is smaller than /28, the smallest subnet AWS allows")
        for other_field, other in explicit:
            if cidr.overlaps(other):
                problems.append(f"{field}: {cidr} overlaps {other_field} {other}; subnets must not overlap")
        explicit.append((field, cidr))
    if problems:
        raise SubnetPlanError(problems)

    auto_count = sum(1 for w in wanted if w[3] is None)
    prefix = max(PREFERRED_SUBNET_PREFIX, vpc.prefixlen + math.ceil(math.log2(max(single_count, 1))))
    if auto_count and prefix > SMALLEST_SUBNET_PREFIX:
        raise SubnetPlanError(
            [f"vpc_cidr: {vpc} is too small for {len(wanted)} subnets of at least /28; use a larger range"]
        )
    # The single NAT's subnets are carved as if there were no standby, so its
    # explicit CIDR can never move them; it must then fit beside them.
    taken = [c for _, c in explicit[: sum(1 for w in wanted[:single_count] if w[3] is not None)]]
    blocks = vpc.subnets(new_prefix=prefix) if auto_count else iter(())
    subnets: list[Subnet] = []
    for key, role, letter, cidr in wanted:
        if cidr is not None and key == STANDBY_SUBNET_KEY:
            for other in subnets:
                if cidr.overlaps(other.cidr):
                    raise SubnetPlanError(
                        [
                            f"nat.subnet_cidrs.{letter}: {cidr} overlaps the {other.role} subnet {other.cidr} "
                            f"({other.az}); subnets must not overlap, pick a free range"
                        ]
                    )
        if cidr is None:
            cidr = next((c for c in blocks if not any(c.overlaps(t) for t in taken)), None)
            if cidr is None and key == STANDBY_SUBNET_KEY:
                raise SubnetPlanError(
                    [
                        f"nat.azs: vpc_cidr {vpc} has no free /{prefix} left for the standby NAT's subnet in "
                        f"AZ {letter}; give one with nat.subnet_cidrs.{letter} (at least a /28 inside {vpc})"
                    ]
                )
            if cidr is None:
                raise SubnetPlanError(
                    [
                        f"vpc_cidr: {vpc} is too small for {len(wanted)} subnets of /{prefix} beside the "
                        "explicit subnet CIDRs; use a larger vpc_cidr or smaller explicit subnets"
                    ]
                )
        taken.append(cidr)
        subnets.append(Subnet(key=key, role=role, az_letter=letter, az=f"{region}{letter}", cidr=cidr))
    public = [s for s in subnets if s.role == "public"]
    return public, [s for s in subnets if s.role == "private"]


def _place_brokers(spec: Spec, private: list[Subnet]) -> list[Broker]:
    count = spec.brokers.broker_count
    voters = 1 if count < 3 else 3 if count < 5 else 5
    per_subnet: dict[str, int] = {}
    brokers = []
    for i in range(count):
        subnet = private[i % len(private)]
        slot = per_subnet.get(subnet.key, 0)
        per_subnet[subnet.key] = slot + 1
        brokers.append(
            Broker(
                name=f"broker-{i + 1}",
                node_id=i + 1,
                subnet=subnet,
                private_ip=subnet.host(FIRST_HOST_OFFSET + slot),
                controller=i < voters,
            )
        )
    return brokers


def _check_capacity(spec: Spec, brokers: list[Broker]) -> None:
    problems = []
    last: dict[str, Broker] = {}
    for b in brokers:
        last[b.subnet.key] = b
    for subnet, highest in ((b.subnet, b.private_ip) for b in last.values()):
        # AWS reserves the last address of every subnet (broadcast)
        if highest >= subnet.cidr.broadcast_address:
            problems.append(
                f"vpc_cidr: {spec.vpc_cidr} is too small: subnet {subnet.cidr} ({subnet.az}) cannot hold "
                f"its hosts from .{FIRST_HOST_OFFSET} up; use a larger vpc_cidr or spread brokers over more AZs"
            )
    if problems:
        raise SubnetPlanError(problems)


def plan_subnets(spec: Spec) -> tuple[list[Subnet], list[Subnet], list[Broker]]:
    public, private = _carve(spec)
    brokers = _place_brokers(spec, private)
    _check_capacity(spec, brokers)
    return public, private, brokers


@dataclass(frozen=True)
class Nat:
    """One NAT instance (each is also a bastion): its Terraform name and its public subnet."""

    name: str  # "nat" (the active at first) or "nat_standby": the aws_instance's name
    subnet: Subnet
    standby: bool

    @property
    def az(self) -> str:
        return self.subnet.az


@dataclass(frozen=True)
class Topology:
    """A validated spec plus everything derived from it."""

    spec: Spec
    public_subnets: list[Subnet]  # the active NAT's first; a pair adds the standby's
    private_subnets: list[Subnet]
    brokers: list[Broker]

    @classmethod
    def from_spec(cls, spec: Spec) -> Topology:
        public, private, brokers = plan_subnets(spec)
        return cls(spec=spec, public_subnets=public, private_subnets=private, brokers=brokers)

    @property
    def public_subnet(self) -> Subnet:
        """The first NAT's public subnet (the only one with a single NAT)."""
        return self.public_subnets[0]

    @property
    def nats(self) -> list[Nat]:
        return [
            Nat(name="nat" if i == 0 else "nat_standby", subnet=s, standby=i > 0)
            for i, s in enumerate(self.public_subnets)
        ]

    @property
    def nat_pair(self) -> bool:
        return len(self.public_subnets) > 1

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def cluster_id(self) -> str:
        """KRaft cluster id: 16 bytes, URL-safe base64 without padding, stable per environment."""
        raw = uuid.uuid5(uuid.NAMESPACE_URL, f"kafkanet://{self.spec.name}").bytes
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @property
    def controllers(self) -> list[Broker]:
        return [b for b in self.brokers if b.controller]

    @property
    def quorum_voters(self) -> str:
        port = self.spec.kafka.controller_port
        return ",".join(f"{b.node_id}@{b.private_ip}:{port}" for b in self.controllers)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{b.private_ip}:{self.spec.kafka.port}" for b in self.brokers)

    @property
    def default_replication_factor(self) -> int:
        return min(3, len(self.brokers))

    @property
    def min_insync_replicas(self) -> int:
        return 2 if len(self.brokers) >= 3 else 1

    @property
    def topics(self) -> list[Topic]:
        return [self._topic(t) for t in self.spec.kafka.topics]

    def _topic(self, t: TopicSpec) -> Topic:
        rf = t.replication_factor if t.replication_factor is not None else self.default_replication_factor
        return Topic(name=t.name, partitions=t.partitions, replication_factor=rf)
