"""``kafkanet sweep``: remove what killed e2e runs left behind, by tag and age, in dependency order.

The in-process teardown cannot run when the runner itself dies (a cancelled CI
job, a lost machine), so the nightly has a sweeper, as Gruntwork runs
cloud-nuke and karpenter runs its own. Its candidates are only resources
carrying ``kafkanet:run-id`` (which only ``kafkanet e2e`` sets, through the
provider's ``default_tags``) whose ``kafkanet:expires-at`` has passed;
``--older-than`` narrows that set (``kafkanet:created-at`` older than it) and
never widens it. A team environment (``kafkanet apply``) carries no run id and
is never a candidate. Only the resource types of :data:`KINDS` are touched, in
that order (dependents before what they depend on). Without ``yes`` nothing is
deleted: the candidates are listed with a count per type.

Where the API is: on AWS, the default credential chain and the region given;
on the local target only the moto servers kafkanet runs for environments under
the build root, each on 127.0.0.1, with fake credentials (never the chain).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from generator.module.runstamp import (
    CREATED_AT_TAG,
    EXPIRES_AT_TAG,
    RUN_ID_TAG,
    format_time,
    parse_time,
)

ENV_TAG = "kafkanet:env"

#: The allowlist, in deletion order: instances; then ENIs, addresses (disassociated
#: first) and volumes; security groups; routes, route-table associations, route
#: tables and subnets; internet gateways (detached first); VPCs; key pairs;
#: instance profiles and roles (their policies first).
KINDS = (
    "instance",
    "network-interface",
    "elastic-ip",
    "volume",
    "security-group",
    "route",
    "route-table-association",
    "route-table",
    "subnet",
    "internet-gateway",
    "vpc",
    "key-pair",
    "instance-profile",
    "iam-role",
)

#: Bounded waits for what deletes asynchronously (terminating instances, detaching volumes).
WAIT_DELAY, WAIT_ATTEMPTS = 5, 60


@dataclass(frozen=True)
class Found:
    kind: str
    id: str
    run_id: str
    env: str
    created_at: datetime | None
    expires_at: datetime
    extra: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        return dict(self.extra).get(key)

    def line(self) -> str:
        created = format_time(self.created_at) if self.created_at else "?"
        return (f"{self.kind:<24} {self.id:<28} run {self.run_id} ({self.env or '?'}), "
                f"created {created}, expired {format_time(self.expires_at)}")  # fmt: skip


@dataclass
class SweepResult:
    where: str
    found: list[Found] = field(default_factory=list)
    deleted: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(f.kind for f in self.found)


def _tags(items: Iterable[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items or ()}


class _Select:
    """Whether a resource's tags make it a candidate."""

    def __init__(self, now: datetime, older_than: timedelta | None) -> None:
        self.now, self.older_than = now, older_than

    def __call__(self, kind: str, rid: str, tags: dict[str, str], **extra: Any) -> Found | None:
        run_id = tags.get(RUN_ID_TAG)
        if not run_id:
            return None  # no run id: a team environment's, or nobody's: never a candidate
        expires = parse_time(tags.get(EXPIRES_AT_TAG, ""))
        if expires is None or expires > self.now:
            return None
        created = parse_time(tags.get(CREATED_AT_TAG, ""))
        if self.older_than is not None and (created is None or created > self.now - self.older_than):
            return None  # narrows, never widens: without a creation time it is not "older than"
        return Found(kind, rid, run_id, tags.get(ENV_TAG, ""), created, expires, tuple(sorted(extra.items())))


def _pages(client, call: str, key: str, **kwargs: Any) -> list[dict]:
    if client.can_paginate(call):
        return [item for page in client.get_paginator(call).paginate(**kwargs) for item in page[key]]
    return getattr(client, call)(**kwargs)[key]


_RUN_FILTER = [{"Name": "tag-key", "Values": [RUN_ID_TAG]}]


def find(ec2, iam, now: datetime, older_than: timedelta | None = None, *,
         pick: Callable[..., Found | None] | None = None, where: list[dict] | None = None) -> list[Found]:  # fmt: skip
    """Every candidate in the region of ``ec2`` (and, with ``iam``, the account's IAM), in :data:`KINDS` order.

    ``pick`` and ``where`` (EC2 filters) replace the sweep's choice (expired run resources) for
    another one: an environment's resources that its state does not know (:func:`strays`)."""
    pick = pick or _Select(now, older_than)
    where = where or _RUN_FILTER
    found: list[Found | None] = []
    for r in _pages(ec2, "describe_instances", "Reservations", Filters=[*where, {
            "Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]):  # fmt: skip
        found += [pick("instance", i["InstanceId"], _tags(i.get("Tags"))) for i in r["Instances"]]
    for eni in _pages(ec2, "describe_network_interfaces", "NetworkInterfaces", Filters=where):
        found.append(pick("network-interface", eni["NetworkInterfaceId"], _tags(eni.get("TagSet")),
                          attached=tuple(filter(None, [(eni.get("Attachment") or {}).get("InstanceId")]))))  # fmt: skip
    for addr in ec2.describe_addresses(Filters=where)["Addresses"]:
        found.append(pick("elastic-ip", addr["AllocationId"], _tags(addr.get("Tags")),
                          association=addr.get("AssociationId")))  # fmt: skip
    for vol in _pages(ec2, "describe_volumes", "Volumes", Filters=where):
        found.append(pick("volume", vol["VolumeId"], _tags(vol.get("Tags")),
                          attached=tuple(a["InstanceId"] for a in vol.get("Attachments", []) if a.get("InstanceId"))))  # fmt: skip
    for sg in _pages(ec2, "describe_security_groups", "SecurityGroups", Filters=where):
        if sg.get("GroupName") != "default":  # a VPC's default group goes with the VPC
            found.append(pick("security-group", sg["GroupId"], _tags(sg.get("Tags"))))
    tables = _pages(ec2, "describe_route_tables", "RouteTables", Filters=where)
    for rt in tables:  # routes and associations carry no tags of their own: their table's
        tags = _tags(rt.get("Tags"))
        for route in rt.get("Routes", []):
            dest = route.get("DestinationCidrBlock")
            if dest and route.get("GatewayId") != "local" and route.get("Origin") != "CreateRouteTable":
                found.append(pick("route", f"{rt['RouteTableId']}:{dest}", tags, table=rt["RouteTableId"], dest=dest))
        for assoc in rt.get("Associations", []):
            if not assoc.get("Main"):
                found.append(pick("route-table-association", assoc["RouteTableAssociationId"], tags))
    for rt in tables:
        if not any(a.get("Main") for a in rt.get("Associations", [])):  # a main table goes with its VPC
            found.append(pick("route-table", rt["RouteTableId"], _tags(rt.get("Tags"))))
    for sn in _pages(ec2, "describe_subnets", "Subnets", Filters=where):
        found.append(pick("subnet", sn["SubnetId"], _tags(sn.get("Tags"))))
    for igw in _pages(ec2, "describe_internet_gateways", "InternetGateways", Filters=where):
        vpcs = tuple(a["VpcId"] for a in igw.get("Attachments", []))
        found.append(pick("internet-gateway", igw["InternetGatewayId"], _tags(igw.get("Tags")), vpcs=vpcs))
    for vpc in _pages(ec2, "describe_vpcs", "Vpcs", Filters=where):
        found.append(pick("vpc", vpc["VpcId"], _tags(vpc.get("Tags"))))
    for kp in ec2.describe_key_pairs(Filters=where)["KeyPairs"]:
        found.append(pick("key-pair", kp["KeyPairId"], _tags(kp.get("Tags")), name=kp.get("KeyName")))
    if iam is not None:
        for prof in _pages(iam, "list_instance_profiles", "InstanceProfiles"):
            # list calls carry no tags; get_* does (on AWS and in moto alike)
            got = iam.get_instance_profile(InstanceProfileName=prof["InstanceProfileName"])["InstanceProfile"]
            tags = _tags(got.get("Tags"))
            found.append(pick("instance-profile", prof["InstanceProfileName"], tags,
                              roles=tuple(r["RoleName"] for r in prof.get("Roles", []))))  # fmt: skip
        for role in _pages(iam, "list_roles", "Roles"):
            tags = _tags(iam.get_role(RoleName=role["RoleName"])["Role"].get("Tags"))
            found.append(pick("iam-role", role["RoleName"], tags))
    return [f for f in found if f is not None]


def strays(ec2, env_name: str, known: set[str], now: datetime | None = None) -> list[Found]:
    """``env_name``'s EC2 resources (tag ``kafkanet:env``) whose ids ``known`` (its state's) lacks.

    An apply cut short can leave such: a create whose call reached the API but whose answer
    terraform never recorded (the provider cancels calls in flight on an interrupt; a SIGKILL
    loses what the last state write did not hold). Left there, they block the destroy of what
    they sit in (an instance in a subnet: the subnet's DependencyViolation retried for minutes).
    Routes are no candidates (their ids are not terraform's); a stray table takes its routes along.
    """
    now = now or datetime.now(timezone.utc)

    def pick(kind: str, rid: str, tags: dict[str, str], **extra: Any) -> Found | None:
        if kind == "route" or rid in known or any(i in known for i in extra.get("attached", ())):
            return None  # (a disk or interface of an instance the state knows goes with it)
        expires = parse_time(tags.get(EXPIRES_AT_TAG, "")) or now
        return Found(kind, rid, tags.get(RUN_ID_TAG, ""), env_name, parse_time(tags.get(CREATED_AT_TAG, "")),
                     expires, tuple(sorted(extra.items())))  # fmt: skip

    return find(ec2, None, now, pick=pick, where=[{"Name": f"tag:{ENV_TAG}", "Values": [env_name]}])


# ------------------------------------------------------------------ deletes


def _wait(ec2, waiter: str, **kwargs: Any) -> None:
    ec2.get_waiter(waiter).wait(**kwargs, WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": WAIT_ATTEMPTS})


def _delete_instances(ec2, iam, items: list[Found]) -> None:
    ids = [f.id for f in items]
    ec2.terminate_instances(InstanceIds=ids)
    _wait(ec2, "instance_terminated", InstanceIds=ids)


def _delete_eni(ec2, iam, f: Found) -> None:
    # asked again: terminating the instances may have detached (or deleted) it meanwhile
    now = ec2.describe_network_interfaces(NetworkInterfaceIds=[f.id])["NetworkInterfaces"]
    attachment = (now[0].get("Attachment") or {}) if now else {}
    if attachment.get("AttachmentId") and attachment.get("Status") in ("attaching", "attached"):
        ec2.detach_network_interface(AttachmentId=attachment["AttachmentId"], Force=True)
        _wait(ec2, "network_interface_available", NetworkInterfaceIds=[f.id])
    ec2.delete_network_interface(NetworkInterfaceId=f.id)


def _delete_address(ec2, iam, f: Found) -> None:
    if f.get("association"):
        ec2.disassociate_address(AssociationId=f.get("association"))
    ec2.release_address(AllocationId=f.id)


def _delete_volume(ec2, iam, f: Found) -> None:
    # asked again: a terminated instance's volumes are detached by then (or deleted with it)
    now = ec2.describe_volumes(VolumeIds=[f.id])["Volumes"]
    if now and now[0].get("State") == "in-use":
        ec2.detach_volume(VolumeId=f.id, Force=True)
        _wait(ec2, "volume_available", VolumeIds=[f.id])
    ec2.delete_volume(VolumeId=f.id)


def _delete_security_groups(ec2, iam, items: list[Found]) -> None:
    # groups of a run refer to each other (brokers allow the bastion's group): empty them all first
    groups = ec2.describe_security_groups(GroupIds=[f.id for f in items])["SecurityGroups"]
    for sg in groups:
        if sg.get("IpPermissions"):
            ec2.revoke_security_group_ingress(GroupId=sg["GroupId"], IpPermissions=sg["IpPermissions"])
        if sg.get("IpPermissionsEgress"):
            ec2.revoke_security_group_egress(GroupId=sg["GroupId"], IpPermissions=sg["IpPermissionsEgress"])


def _delete_igw(ec2, iam, f: Found) -> None:
    for vpc in f.get("vpcs") or ():
        ec2.detach_internet_gateway(InternetGatewayId=f.id, VpcId=vpc)
    ec2.delete_internet_gateway(InternetGatewayId=f.id)


def _delete_profile(ec2, iam, f: Found) -> None:
    for role in f.get("roles") or ():
        iam.remove_role_from_instance_profile(InstanceProfileName=f.id, RoleName=role)
    iam.delete_instance_profile(InstanceProfileName=f.id)


def _delete_role(ec2, iam, f: Found) -> None:
    for prof in iam.list_instance_profiles_for_role(RoleName=f.id)["InstanceProfiles"]:
        iam.remove_role_from_instance_profile(InstanceProfileName=prof["InstanceProfileName"], RoleName=f.id)
    for pol in iam.list_attached_role_policies(RoleName=f.id)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=f.id, PolicyArn=pol["PolicyArn"])
    for name in iam.list_role_policies(RoleName=f.id)["PolicyNames"]:
        iam.delete_role_policy(RoleName=f.id, PolicyName=name)
    iam.delete_role(RoleName=f.id)


Deleter = Callable[[Any, Any, Found], None]
_ONE: dict[str, Deleter] = {
    "network-interface": _delete_eni,
    "elastic-ip": _delete_address,
    "volume": _delete_volume,
    "security-group": lambda ec2, iam, f: ec2.delete_security_group(GroupId=f.id),
    "route": lambda ec2, iam, f: ec2.delete_route(RouteTableId=f.get("table"), DestinationCidrBlock=f.get("dest")),
    "route-table-association": lambda ec2, iam, f: ec2.disassociate_route_table(AssociationId=f.id),
    "route-table": lambda ec2, iam, f: ec2.delete_route_table(RouteTableId=f.id),
    "subnet": lambda ec2, iam, f: ec2.delete_subnet(SubnetId=f.id),
    "internet-gateway": _delete_igw,
    "vpc": lambda ec2, iam, f: ec2.delete_vpc(VpcId=f.id),
    # by name: moto ignores KeyPairId here (AWS takes either)
    "key-pair": lambda ec2, iam, f: ec2.delete_key_pair(KeyName=f.get("name")),
    "instance-profile": _delete_profile,
    "iam-role": _delete_role,
}
#: Kinds handled as a batch before their one-by-one deletes.
_BATCH = {"instance": _delete_instances, "security-group": _delete_security_groups}


def delete(ec2, iam, found: list[Found], result: SweepResult, say: Callable[[str], None]) -> None:
    """Delete ``found`` kind by kind in :data:`KINDS` order; a failure is recorded and the rest goes on."""
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    failures = (ClientError, BotoCoreError, WaiterError)
    for kind in KINDS:
        items = [f for f in found if f.kind == kind]
        if not items:
            continue
        if kind in _BATCH:
            try:
                _BATCH[kind](ec2, iam, items)
            except failures as exc:
                result.errors.append(f"{kind} {', '.join(f.id for f in items)}: {exc}")
                continue  # their dependents will fail and say so too
            if kind == "instance":
                result.deleted[kind] += len(items)
                say(f"  deleted {len(items)} {kind}(s)")
                continue
        for item in items:
            try:
                _ONE[kind](ec2, iam, item)
            except failures as exc:
                result.errors.append(f"{kind} {item.id}: {exc}")
            else:
                result.deleted[kind] += 1
        if result.deleted[kind]:
            say(f"  deleted {result.deleted[kind]} {kind}(s)")


def sweep(where: str, ec2, iam, *, now: datetime | None = None, older_than: timedelta | None = None,
          yes: bool = False, say: Callable[[str], None] = print) -> SweepResult:  # fmt: skip
    """List (and with ``yes`` delete) the expired run resources of one API endpoint and region."""
    now = now or datetime.now(timezone.utc)
    result = SweepResult(where=where, found=find(ec2, iam, now, older_than))
    counts = result.counts()
    if not result.found:
        return result  # the caller sums up: one line per empty region would drown the rest
    runs = sorted({f"{f.run_id} ({f.env})" if f.env else f.run_id for f in result.found})
    say(f"{where}: {len(result.found)} expired resource(s) of run(s) {', '.join(runs)}: "
        + ", ".join(f"{kind} {counts[kind]}" for kind in KINDS if counts[kind]))  # fmt: skip
    for f in result.found:
        say(f"  {f.line()}")
    if yes:
        delete(ec2, iam, result.found, result, say)
    return result


# ------------------------------------------------------------------ where


def _local_endpoints() -> list[tuple[str, str]]:
    """(label, URL) of every moto server kafkanet runs for an environment under the build root."""
    from generator.environment.session import MOTO_DIR
    from generator.localaws import moto_server
    from generator.module.loaded import build_root

    found = []
    for state in sorted(build_root().glob(f"*/{MOTO_DIR}")):
        moto = moto_server.find_running(state, budget=1.0)
        if moto is not None:
            found.append((state.parent.parent.name, moto.url))
    return found


def _local_clients(url: str, region: str):
    """EC2 and IAM on one local moto server: loopback only, fake credentials, never the default chain."""
    from generator.localaws import moto_server

    # both refuse anything but a loopback URL
    return moto_server.ec2_client(url, region), moto_server.client("iam", url, region)


def run(target: str, region: str | None, older_than: timedelta | None, yes: bool,
        say: Callable[[str], None] = print) -> list[SweepResult]:  # fmt: skip
    """``kafkanet sweep``: every place of the target, one :class:`SweepResult` each."""
    from generator.base.errors import PrerequisiteError, UserError
    from generator.spec.regions import REGION_AZS

    if region is not None and region not in REGION_AZS:
        raise UserError(f"--region {region!r}: use one of {', '.join(sorted(REGION_AZS))}")
    results = []
    if target == "local":
        endpoints = _local_endpoints()
        if not endpoints:
            say("local: no moto server of any environment is running under the build root: nothing to sweep")
        for label, url in endpoints:
            for i, reg in enumerate([region] if region else sorted(REGION_AZS)):
                ec2, iam = _local_clients(url, reg)
                results.append(sweep(f"local {label} ({url}) {reg}", ec2, iam if i == 0 else None,
                                     older_than=older_than, yes=yes, say=say))  # fmt: skip
        return results
    import boto3
    from botocore.config import Config

    session = boto3.Session(region_name=region)
    if session.get_credentials() is None:
        raise PrerequisiteError("no AWS credentials found (environment, ~/.aws/credentials, SSO or instance role): "
                                "configure them (e.g. `aws configure` or AWS_PROFILE)")  # fmt: skip
    if session.region_name is None:
        raise UserError("no AWS region: pass --region (e.g. --region ap-northeast-2) or set AWS_REGION")
    config = Config(connect_timeout=10, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"})
    ec2, iam = session.client("ec2", config=config), session.client("iam", config=config)
    results.append(sweep(f"aws {session.region_name}", ec2, iam, older_than=older_than, yes=yes, say=say))
    return results


def nothing_found(results: list[SweepResult]) -> str | None:
    """The line saying where was looked, when nothing was found anywhere."""
    if any(r.found for r in results):
        return None
    return f"no expired e2e run resources in {len(results)} place(s) looked at" + (
        f" ({', '.join(r.where for r in results)})" if len(results) <= 3 else "")
