"""A throw-away live environment for developing the integration suite (root, local target).

Not part of the suite: the suite only ever reads the inventory. This builds
what ``kafkanet apply`` will build on the local target, without Terraform:
a moto server (127.0.0.1), the reference ttareungyi topology created in it
with boto3 (:mod:`localvpc.reference`), the local data plane built from what
moto holds, and an inventory (format version 1, see :mod:`generator.environment.inventory`)
written from :class:`localvpc.PlaneInfo` and ``describe_*`` answers::

    python -m tests.devenv up   [--state DIR] [--env NAME]   # prints the inventory path
    python -m tests.devenv rebuild [--state DIR]             # re-read moto, rebuild the plane
    python -m tests.devenv down [--state DIR]

``down`` stops everything ``up`` started (the plane's namespaces and
processes, the moto server), also after a crash. The state directory
(default ``build/devenv``) keeps the key, host keys, known_hosts and
``inventory.json``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

from generator.base.errors import KafkanetError, UserError
from generator.environment.inventory import VERSION
from generator.localaws import moto_server
from generator.module.keys import ensure_key, key_paths
from localvpc.errors import PlaneError, PlaneUserError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE = ROOT / "build" / "devenv"
REGION = "ap-northeast-2"
KAFKA_PORT = 9092
CONTROLLER_PORT = 9093
TOPICS = [{"name": "bike-station-status", "partitions": 3, "replication_factor": 3}]
RECORD = "devenv.json"


def ec2_client(endpoint: str):
    return moto_server.ec2_client(endpoint, REGION)


def _record(state: Path) -> dict[str, Any]:
    try:
        return json.loads((state / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def up(state: Path = DEFAULT_STATE, env: str | None = None) -> Path:
    """Start moto, create the reference topology, build the plane; return the inventory path."""
    from localvpc import (  # needs root and the plane's tools; import late
        plane,
        reference,
    )

    state = Path(state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    if _record(state).get("env"):
        down(state)
    env = env or f"dev{secrets.token_hex(3)}"
    # Record first: if anything below fails or is interrupted, `down` still finds it.
    (state / RECORD).write_text(json.dumps({"env": env}) + "\n")
    try:
        server = moto_server.start(state / "moto")
        ec2 = ec2_client(server.url)
        key, public = ensure_key(state, env)
        created = reference.create(ec2, env, public_key=public)
        info = plane.build(env, ec2, key, state)
        inventory = make_inventory(env, ec2, server.url, key, state, info, created)
    except BaseException:
        down(state)
        raise
    path = state / "inventory.json"
    path.write_text(json.dumps(inventory, indent=2, ensure_ascii=False) + "\n")
    return path


def rebuild(state: Path = DEFAULT_STATE) -> Path:
    """Rebuild the plane from what moto holds now (after a change made with boto3)."""
    from localvpc import plane

    state = Path(state).resolve()
    env = _record(state).get("env")
    server = moto_server.find_running(state / "moto")
    if not env or server is None:
        raise UserError(f"devenv: nothing running under {state}; run `python -m tests.devenv up` first")
    key, _ = key_paths(state)
    info = plane.build(env, ec2_client(server.url), key, state)
    (state / "known_hosts").write_text(info.known_hosts())
    return state / "inventory.json"


def down(state: Path = DEFAULT_STATE) -> None:
    """Tear down the plane and stop the moto server recorded under ``state``; idempotent."""
    from localvpc import plane

    state = Path(state).resolve()
    env = _record(state).get("env")
    try:
        if env:
            plane.teardown(env)
    finally:
        moto_server.stop(state / "moto")
        (state / RECORD).unlink(missing_ok=True)


def make_inventory(env: str, ec2, endpoint: str, key: Path, state: Path, info, created) -> dict[str, Any]:
    """The inventory (version 1) of the dev environment, from the plane's report and the EC2 API."""
    known_hosts = state / "known_hosts"
    known_hosts.write_text(info.known_hosts())
    instances = {
        i["InstanceId"]: i
        for r in ec2.describe_instances(Filters=[{"Name": "vpc-id", "Values": [created.vpc_id]}])["Reservations"]
        for i in r["Instances"]
    }

    def az(instance_id: str) -> str:
        return instances[instance_id]["Placement"]["AvailabilityZone"]

    nat = info.hosts[info.bastion]
    brokers = sorted((h for h in info.hosts.values() if h.kafka_port), key=lambda h: h.name)
    vpc = ec2.describe_vpcs(VpcIds=[created.vpc_id])["Vpcs"][0]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [created.vpc_id]}])["Subnets"]
    public_subnet = next(s for s in subnets if s.get("MapPublicIpOnLaunch"))
    private = {s["AvailabilityZone"][-1]: s["SubnetId"] for s in subnets if not s.get("MapPublicIpOnLaunch")}
    return {
        "version": VERSION,
        "environment": env,
        "target": "local",
        "region": REGION,
        "aws_endpoint": endpoint,
        "ssh": {
            "user": info.ssh_user,
            "private_key": str(key),
            "known_hosts": str(known_hosts),
            "proxy_command": info.proxy_command,
            "port": 22,
        },
        "bastion": {
            "name": "bastion",
            "instance_id": nat.instance_id,
            "public_ip": nat.public_ip,
            "aws_public_ip": nat.moto_public_ip,
            "private_ip": nat.private_ip,
            "az": az(nat.instance_id),
        },
        "brokers": [
            {
                "name": b.name,
                "instance_id": b.instance_id,
                "node_id": index,
                "private_ip": b.private_ip,
                "az": az(b.instance_id),
                "controller": True,
            }
            for index, b in enumerate(brokers, start=1)
        ],
        "kafka": {
            "port": KAFKA_PORT,
            "controller_port": CONTROLLER_PORT,
            "bootstrap_servers": ",".join(f"{b.private_ip}:{b.kafka_port}" for b in brokers),
            "implementation": "tansu",
            "topics": TOPICS,
        },
        "network": {
            "vpc_id": created.vpc_id,
            "vpc_cidr": vpc["CidrBlock"],
            "public_subnet_id": public_subnet["SubnetId"],
            "private_subnet_ids": dict(sorted(private.items())),
            "public_route_table_id": created.route_tables["public"],
            "private_route_table_id": created.route_tables["private"],
            "internet_gateway_id": created.igw_id,
            "nat_security_group_id": created.security_groups["nat"],
            "broker_security_group_id": created.security_groups["broker"],
        },
        "admin_cidrs": ["203.0.113.50/32"],
        "probe_url": info.probe_url,
        "public_ip_map": dict(info.public_ip_map),
        "probe_private_addresses": True,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.devenv", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "rebuild", "down"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state directory (default build/devenv)")
    parser.add_argument("--env", help="environment name for `up` (default dev + random hex)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            print(up(args.state, args.env))
        elif args.command == "rebuild":
            print(rebuild(args.state))
        else:
            down(args.state)
    except (KafkanetError, PlaneError) as exc:
        for line in exc.problems:
            print(f"devenv: {line}", file=sys.stderr)
        return 2 if isinstance(exc, (UserError, PlaneUserError)) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
