"""Read-only questions to the EC2 API, phrased the way the checks need them.

Only ``describe_*`` calls: the suite never changes the environment. So the
session's client is a :class:`Snapshot`: each distinct question is asked once
and its answer kept for the session (a check still reads exactly the fields it
read before; ~30 checks ask for the same instance).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class Snapshot:
    """An EC2 client whose ``describe_*`` calls are made once per distinct arguments; the rest passes through.

    Thread-safe (boto3 clients are): two threads asking the same question at once may both ask it.
    Each caller gets its own deep copy of the answer.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._answers: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not name.startswith("describe_"):
            return attr

        def ask(**kwargs: Any) -> Any:
            key = (name, json.dumps(kwargs, sort_keys=True, default=str))
            with self._lock:
                found = self._answers.get(key)
            if found is None:
                found = attr(**kwargs)
                with self._lock:
                    found = self._answers.setdefault(key, found)
            return copy.deepcopy(found)

        return ask


def instance(ec2, instance_id: str) -> dict[str, Any]:
    found = [i for r in ec2.describe_instances(InstanceIds=[instance_id])["Reservations"] for i in r["Instances"]]
    if not found:
        raise LookupError(f"the EC2 API knows no instance {instance_id}")
    return found[0]


def security_groups(ec2, inst: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every security group of every network interface of ``inst``."""
    ids = sorted({g["GroupId"] for eni in inst.get("NetworkInterfaces", []) for g in eni.get("Groups", [])}
                 | {g["GroupId"] for g in inst.get("SecurityGroups", [])})  # fmt: skip
    if not ids:
        return []
    return ec2.describe_security_groups(GroupIds=ids)["SecurityGroups"]


@dataclass(frozen=True)
class Source:
    """One source of an ingress rule."""

    group_id: str  # the group holding the rule
    kind: str  # "cidr" | "ipv6" | "prefix-list" | "group"
    value: str  # the CIDR, prefix-list id or source group id
    protocol: str
    ports: str  # "22", "0-65535", "all"

    def __str__(self) -> str:
        return f"{self.group_id}: {self.protocol} {self.ports} from {self.kind} {self.value}"


def _covers(permission: Mapping[str, Any], port: int) -> bool:
    proto = str(permission.get("IpProtocol"))
    if proto == "-1":
        return True
    if proto not in ("tcp", "6"):
        return False
    low, high = permission.get("FromPort"), permission.get("ToPort")
    if low is None or high is None or (low == -1 and high == -1):
        return True
    return int(low) <= port <= int(high)


def ingress_sources(groups: Iterable[Mapping[str, Any]], port: int) -> list[Source]:
    """Every source allowed to reach TCP ``port`` by these groups' ingress rules."""
    out = []
    for group in groups:
        for perm in group.get("IpPermissions", []):
            if not _covers(perm, port):
                continue
            proto = "all" if str(perm.get("IpProtocol")) == "-1" else "tcp"
            low, high = perm.get("FromPort"), perm.get("ToPort")
            ports = "all" if proto == "all" or low is None else (str(low) if low == high else f"{low}-{high}")
            gid = group["GroupId"]
            out += [Source(gid, "cidr", r["CidrIp"], proto, ports) for r in perm.get("IpRanges", [])]
            out += [Source(gid, "ipv6", r["CidrIpv6"], proto, ports) for r in perm.get("Ipv6Ranges", [])]
            out += [Source(gid, "prefix-list", r["PrefixListId"], proto, ports) for r in perm.get("PrefixListIds", [])]
            out += [Source(gid, "group", r["GroupId"], proto, ports) for r in perm.get("UserIdGroupPairs", [])]
    return out


def within(cidr: str, networks: Iterable[str]) -> bool:
    """Whether ``cidr`` lies entirely inside one of ``networks``."""
    net = ipaddress.ip_network(cidr, strict=False)
    return any(
        net.version == other.version and net.subnet_of(other)  # type: ignore[arg-type]
        for other in (ipaddress.ip_network(n, strict=False) for n in networks)
    )


def route_table_of(ec2, vpc_id: str, subnet_id: str) -> dict[str, Any]:
    """The route table a subnet actually uses: its explicit association, else the VPC's main table."""
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["RouteTables"]
    for table in tables:
        if any(a.get("SubnetId") == subnet_id for a in table.get("Associations", [])):
            return table
    for table in tables:
        if any(a.get("Main") for a in table.get("Associations", [])):
            return table
    raise LookupError(f"no route table (explicit or main) applies to {subnet_id} in {vpc_id}")


def describe_route(route: Mapping[str, Any]) -> str:
    keys = ("DestinationCidrBlock", "DestinationIpv6CidrBlock", "DestinationPrefixListId")
    dest = next((route[k] for k in keys if route.get(k)), "?")
    targets = [f"{k}={v}" for k, v in route.items() if k.endswith("Id") and k not in ("DestinationPrefixListId",)]
    return f"{dest} -> {', '.join(targets) or '?'} ({route.get('State', '?')})"


def public_addresses(ec2, vpc_id: str, instance_ids: Iterable[str]) -> dict[str, str]:
    """Every public IPv4 address of the environment -> what holds it, as the EC2 API reports them.

    Launch-time public addresses of the instances, public addresses associated
    with any network interface of the VPC, and every Elastic IP associated with
    one of the environment's instances or interfaces.
    """
    found: dict[str, str] = {}
    wanted = set(instance_ids)
    reservations = ec2.describe_instances(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Reservations"]
    for inst in (i for r in reservations for i in r["Instances"]):
        if inst.get("PublicIpAddress"):
            found.setdefault(inst["PublicIpAddress"], f"instance {inst['InstanceId']}")
    enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["NetworkInterfaces"]
    eni_ids = set()
    for eni in enis:
        eni_ids.add(eni["NetworkInterfaceId"])
        holder = eni.get("Attachment", {}).get("InstanceId") or eni["NetworkInterfaceId"]
        associations = [eni.get("Association") or {}]
        associations += [p.get("Association") or {} for p in eni.get("PrivateIpAddresses", [])]
        for assoc in associations:
            if assoc.get("PublicIp"):
                found.setdefault(assoc["PublicIp"], f"interface {eni['NetworkInterfaceId']} of {holder}")
    for address in ec2.describe_addresses()["Addresses"]:
        if address.get("InstanceId") in wanted or address.get("NetworkInterfaceId") in eni_ids:
            found.setdefault(address["PublicIp"], f"Elastic IP {address.get('AllocationId', '?')}")
    return found
