"""What the plane's services read of the EC2 API's *current* state, with a short cache.

The metadata service and the resolver answer from moto as it is now, not from
the state the plane was built from: an Elastic IP moved through the API shows
up as the instance's ``public-ipv4`` within :data:`TTL`. Every API call goes
through ``run`` (the services daemon runs them on threads that sit in the root
network namespace, where moto listens on loopback). Read-only, except
``AssumeRole`` on moto's STS for an instance profile's credentials, as the EC2
service does on AWS.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from localvpc.model import DOCUMENTATION_NETS

TTL = 0.5  # seconds an answer of the API is reused
CREDENTIALS_MARGIN = _dt.timedelta(minutes=5)  # renew before the expiry, as EC2 does (it renews well ahead)
LIVE_STATES = ("pending", "running")


def private_domain(region: str) -> str:
    return "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"


def private_name(ip: str) -> str:
    return "ip-" + ip.replace(".", "-")


def _iso(value: Any) -> str:
    if isinstance(value, _dt.datetime):
        return value.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


@dataclass
class _Cached:
    at: float
    value: Any


class CloudView:
    """The instances of one VPC as the EC2 API (moto) shows them now.

    ``clients(service)`` makes the boto3 client of a service (lazily, in
    ``run``); ``public_map`` maps a public address as
    moto reports it to the plane's emulated one (None: unknown).
    """

    def __init__(
        self,
        clients: Callable[[str], Any],
        vpc_id: str,
        public_map: Callable[[str], str | None],
        run: Callable[[Callable[[], Any]], Any] = lambda fn: fn(),
        ttl: float = TTL,
    ) -> None:
        self._clients = clients
        self._made: dict[str, Any] = {}
        self._make_lock = threading.Lock()
        self.vpc_id = vpc_id
        self.public_map = public_map
        self._run = run
        self.ttl = ttl
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # --- plumbing --------------------------------------------------------

    def client(self, service: str) -> Any:
        """The boto3 client of ``service`` ("ec2", "iam", "sts"), made at first use."""
        with self._make_lock:
            if service not in self._made:
                self._made[service] = self._clients(service)
            return self._made[service]

    def _cached(self, key: str, ttl: float, fetch: Callable[[], Any]) -> Any:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one fetch at a time per key; the others reuse its answer
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit.at < ttl:
                return hit.value
            value = self._run(fetch)
            self._cache[key] = _Cached(time.monotonic(), value)
            return value

    # --- reads -----------------------------------------------------------

    def instances(self) -> dict[str, dict]:
        """``{instance id: description}`` of every instance of the VPC (any state)."""

        def fetch() -> dict[str, dict]:
            ec2 = self.client("ec2")
            found: dict[str, dict] = {}
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "vpc-id", "Values": [self.vpc_id]}]
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for inst in reservation.get("Instances", []):
                        found[inst["InstanceId"]] = inst
            return found

        return self._cached("instances", self.ttl, fetch)

    def instance(self, instance_id: str) -> dict | None:
        return self.instances().get(instance_id)

    def subnets(self) -> dict[str, dict]:
        def fetch() -> dict[str, dict]:
            ec2 = self.client("ec2")
            subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [self.vpc_id]}])["Subnets"]
            return {s["SubnetId"]: s for s in subnets}

        return self._cached("subnets", self.ttl, fetch)

    def vpc(self) -> dict:
        def fetch() -> dict:
            return self.client("ec2").describe_vpcs(VpcIds=[self.vpc_id])["Vpcs"][0]

        return self._cached("vpc", 10 * self.ttl, fetch)

    def addresses(self) -> list[dict]:
        return self._cached("addresses", self.ttl, lambda: self.client("ec2").describe_addresses().get("Addresses", []))

    def user_data(self, instance_id: str) -> bytes | None:
        def fetch() -> bytes | None:
            import base64

            answer = self.client("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
            value = (answer.get("UserData") or {}).get("Value")
            return base64.b64decode(value) if value else None

        return self._cached(f"user-data/{instance_id}", self.ttl, fetch)

    def zone_ids(self) -> dict[str, str]:
        def fetch() -> dict[str, str]:
            zones = self.client("ec2").describe_availability_zones()["AvailabilityZones"]
            return {z["ZoneName"]: z.get("ZoneId", "") for z in zones}

        return self._cached("zones", 60.0, fetch)

    # --- derived ----------------------------------------------------------

    def public_ip(self, instance_id: str) -> str | None:
        """The instance's public address by AWS's rules, as the plane emulates it (None: it has none).

        An Elastic IP associated with its primary interface wins; otherwise the
        address given at launch, unless that is an Elastic IP's address (moto
        can keep one on an interface it was moved away from).
        """
        inst = self.instance(instance_id)
        if inst is None:
            return None
        enis = inst.get("NetworkInterfaces") or []
        first = enis[0] if enis else {}
        primary = next((e for e in enis if (e.get("Attachment") or {}).get("DeviceIndex") == 0), first)
        eni_id = primary.get("NetworkInterfaceId")
        addresses = self.addresses()
        for address in addresses:
            if (eni_id and address.get("NetworkInterfaceId") == eni_id) or (
                not address.get("NetworkInterfaceId") and address.get("InstanceId") == instance_id
            ):
                return self.public_map(address["PublicIp"])
        launch = inst.get("PublicIpAddress")
        if launch and launch not in {a.get("PublicIp") for a in addresses}:
            return self.public_map(launch)
        return None

    def availability_zone_id(self, instance_id: str) -> str | None:
        inst = self.instance(instance_id)
        if inst is None:
            return None
        subnet = self.subnets().get(inst.get("SubnetId", ""), {})
        if subnet.get("AvailabilityZoneId"):
            return subnet["AvailabilityZoneId"]
        return self.zone_ids().get(inst.get("Placement", {}).get("AvailabilityZone", "")) or None

    def private_names(self, region: str) -> dict[str, str]:
        """``{private DNS name: address}`` of the VPC's live instances (every private address of theirs)."""
        domain = private_domain(region)
        names: dict[str, str] = {}
        for inst in self.instances().values():
            if inst.get("State", {}).get("Name") not in LIVE_STATES:
                continue
            ips = [inst.get("PrivateIpAddress")]
            for eni in inst.get("NetworkInterfaces") or []:
                ips += [p.get("PrivateIpAddress") for p in eni.get("PrivateIpAddresses") or []]
            for ip in ips:
                if ip:
                    names[f"{private_name(ip)}.{domain}"] = ip
        return names

    def role_of(self, instance_id: str) -> str | None:
        """The role name of the instance's profile (None: no profile, or a profile without a role)."""
        inst = self.instance(instance_id)
        arn = ((inst or {}).get("IamInstanceProfile") or {}).get("Arn")
        if not arn:
            return None

        def fetch() -> str | None:
            iam = self.client("iam")
            profile = iam.get_instance_profile(InstanceProfileName=arn.rsplit("/", 1)[-1])["InstanceProfile"]
            roles = profile.get("Roles") or []
            return roles[0]["RoleName"] if roles else None

        return self._cached(f"role/{arn}", 10 * self.ttl, fetch)

    def credentials(self, instance_id: str, role: str) -> dict | None:
        """Temporary credentials of ``role`` for the instance, from moto's STS, renewed before they expire."""
        if self.role_of(instance_id) != role:
            return None
        key = f"credentials/{instance_id}/{role}"
        hit = self._cache.get(key)
        if hit is not None and hit.value["_expires"] - CREDENTIALS_MARGIN > _dt.datetime.now(_dt.timezone.utc):
            return hit.value

        def fetch() -> dict:
            iam, sts = self.client("iam"), self.client("sts")
            arn = iam.get_role(RoleName=role)["Role"]["Arn"]
            creds = sts.assume_role(RoleArn=arn, RoleSessionName=instance_id, DurationSeconds=21600)["Credentials"]
            expires = creds["Expiration"]
            if isinstance(expires, str):
                expires = _dt.datetime.fromisoformat(expires.replace("Z", "+00:00"))
            return {
                "Code": "Success",
                "LastUpdated": _iso(_dt.datetime.now(_dt.timezone.utc)),
                "Type": "AWS-HMAC",
                "AccessKeyId": creds["AccessKeyId"],
                "SecretAccessKey": creds["SecretAccessKey"],
                "Token": creds["SessionToken"],
                "Expiration": _iso(expires),
                "_expires": expires,
            }

        value = self._run(fetch)
        self._cache[key] = _Cached(time.monotonic(), value)
        return value


def static_public_map(mapping: Mapping[str, str]) -> Callable[[str], str | None]:
    """A ``public_map`` from a fixed ``{moto address: emulated address}`` table.

    Documentation-range addresses pass as they are."""

    def lookup(ip: str) -> str | None:
        if ip in mapping:
            return mapping[ip]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if any(addr in net for net in DOCUMENTATION_NETS):
            return ip
        return None

    return lookup
