"""Read an environment's applied state from the EC2 API into a plain-JSON snapshot.

:func:`collect` is the only place that calls the EC2 API: ``describe_*`` calls
(read-only) against a local moto server, never real AWS. Its result is the
input of the pure :func:`localvpc.translation.translate`; recorded snapshots serve as
test fixtures, and :class:`ReplayEC2` plays one back as if it were a client.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from localvpc.errors import PlaneInfraError, PlaneUserError, is_loopback_url

FORMAT = "kafkanet-localvpc-snapshot/1"
ENV_TAG = "kafkanet:env"
LIVE_STATES = ["pending", "running"]


def _jsonable(value: Any) -> Any:
    """Datetimes to ISO strings, bytes to text, recursively; drop ResponseMetadata."""
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, _dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def require_local_endpoint(ec2) -> str:
    """The client's endpoint, if it is loopback (or a replayed snapshot); else a PlaneUserError."""
    url = getattr(ec2.meta, "endpoint_url", "") or ""
    if url.startswith("snapshot:"):
        return url
    if not is_loopback_url(url):
        raise PlaneUserError(
            f"local data plane: the EC2 endpoint {url or '(AWS default)'} is not a local moto server;"
            " the plane only reads state from 127.0.0.1"
        )
    return url


def _pages(ec2, operation: str, key: str, **kwargs: Any) -> list[dict]:
    items: list[dict] = []
    for page in ec2.get_paginator(operation).paginate(**kwargs):
        items.extend(page.get(key, []))
    return items


def collect(ec2, env: str) -> dict:
    """Snapshot of everything the plane needs about ``env`` (VPC tagged ``kafkanet:env=env``)."""
    url = require_local_endpoint(ec2)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        vpcs = _pages(ec2, "describe_vpcs", "Vpcs", Filters=[{"Name": f"tag:{ENV_TAG}", "Values": [env]}])
        if not vpcs:
            raise PlaneUserError(f"local data plane: no VPC tagged {ENV_TAG}={env} at {url}; apply the environment first")
        if len(vpcs) > 1:
            ids = ", ".join(sorted(v["VpcId"] for v in vpcs))
            raise PlaneUserError(f"local data plane: {len(vpcs)} VPCs tagged {ENV_TAG}={env} at {url} ({ids}); expected one")
        vpc_filter = [{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}]
        reservations = _pages(
            ec2,
            "describe_instances",
            "Reservations",
            Filters=vpc_filter + [{"Name": "instance-state-name", "Values": LIVE_STATES}],
        )
        instance_ids = [i["InstanceId"] for r in reservations for i in r.get("Instances", [])]
        attributes: dict[str, dict] = {}
        for iid in sorted(instance_ids):
            user_data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
            sdc = ec2.describe_instance_attribute(InstanceId=iid, Attribute="sourceDestCheck")
            attributes[iid] = {
                "userData": (user_data.get("UserData") or {}).get("Value"),
                "sourceDestCheck": (sdc.get("SourceDestCheck") or {}).get("Value"),
            }
        addresses = ec2.describe_addresses().get("Addresses", [])
        snapshot = {
            "format": FORMAT,
            "env": env,
            "region": ec2.meta.region_name,
            "vpcs": vpcs,
            "subnets": _pages(ec2, "describe_subnets", "Subnets", Filters=vpc_filter),
            "route_tables": _pages(ec2, "describe_route_tables", "RouteTables", Filters=vpc_filter),
            "internet_gateways": _pages(
                ec2,
                "describe_internet_gateways",
                "InternetGateways",
                Filters=[{"Name": "attachment.vpc-id", "Values": [vpcs[0]["VpcId"]]}],
            ),
            "security_groups": _pages(ec2, "describe_security_groups", "SecurityGroups", Filters=vpc_filter),
            "reservations": reservations,
            "addresses": [a for a in addresses if _address_belongs(a, instance_ids, env)],
            "instance_attributes": attributes,
        }
    except (BotoCoreError, ClientError) as exc:
        raise PlaneInfraError(f"local data plane: cannot read the applied state of {env} from {url}: {exc}") from None
    return _jsonable(snapshot)


def _address_belongs(address: Mapping, instance_ids: list[str], env: str) -> bool:
    if address.get("InstanceId") in instance_ids:
        return True
    return any(t.get("Key") == ENV_TAG and t.get("Value") == env for t in address.get("Tags", []))


def save(snapshot: Mapping, path: Path) -> None:
    path.write_text(json.dumps(snapshot, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def load(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise PlaneUserError(f"{path}: not a {FORMAT} snapshot")
    return data


class _Meta:
    def __init__(self, endpoint_url: str, region_name: str) -> None:
        self.endpoint_url = endpoint_url
        self.region_name = region_name


class _Paginator:
    def __init__(self, page: dict) -> None:
        self._page = page

    def paginate(self, **_: Any) -> Iterator[dict]:
        yield self._page


class ReplayEC2:
    """Answers the ``describe_*`` calls :func:`collect` makes from a recorded snapshot.

    Filters are ignored: a snapshot already holds one environment.
    """

    _KEYS = {
        "describe_vpcs": ("Vpcs", "vpcs"),
        "describe_subnets": ("Subnets", "subnets"),
        "describe_route_tables": ("RouteTables", "route_tables"),
        "describe_internet_gateways": ("InternetGateways", "internet_gateways"),
        "describe_security_groups": ("SecurityGroups", "security_groups"),
        "describe_instances": ("Reservations", "reservations"),
        "describe_addresses": ("Addresses", "addresses"),
    }

    def __init__(self, snapshot: Mapping, name: str = "recorded") -> None:
        self._snapshot = snapshot
        self.meta = _Meta(f"snapshot:{name}", snapshot.get("region", "ap-northeast-2"))

    def _answer(self, operation: str) -> dict:
        key, field = self._KEYS[operation]
        return {key: json.loads(json.dumps(self._snapshot.get(field, [])))}

    def get_paginator(self, operation: str) -> _Paginator:
        return _Paginator(self._answer(operation))

    def describe_addresses(self, **_: Any) -> dict:
        return self._answer("describe_addresses")

    def describe_instance_attribute(self, InstanceId: str, Attribute: str) -> dict:  # noqa: N803 (boto3 names)
        recorded = self._snapshot.get("instance_attributes", {}).get(InstanceId, {})
        if Attribute == "userData":
            value = recorded.get("userData")
            return {"InstanceId": InstanceId, "UserData": {"Value": value} if value is not None else {}}
        if Attribute == "sourceDestCheck":
            return {"InstanceId": InstanceId, "SourceDestCheck": {"Value": recorded.get("sourceDestCheck")}}
        raise KeyError(Attribute)
