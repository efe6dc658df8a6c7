"""The inventory: everything the integration suite may know about a live environment.

Built from terraform outputs (and, on the local target, the data plane's
report). The suite reads this document and the AWS API, nothing else.

Format (version 1)::

    {
      "version": 1,
      "environment": "ttareungyi",
      "target": "local" | "aws",
      "region": "ap-northeast-2",
      "aws_endpoint": "http://127.0.0.1:PORT" | null,   # null: real AWS, standard credential chain
      "aws_credentials_file": "/abs/.kafkanet/moto/moto.iam.json" | null,  # local, IAM enforced: whose keys
      "ssh": {
        "user": "ec2-user",                     # login user on every host
        "private_key": "/abs/path/id_ed25519",
        "known_hosts": "/abs/path/known_hosts",   # per environment; pinned host keys
        "proxy_command": "ip netns exec ... nc %h %p" | null,  # how the operator reaches the bastion
        "port": 22
      },
      "bastion": {
        "name": "bastion", "instance_id": "i-...",
        "public_ip": "198.51.100.10",           # the address to dial (emulated on local)
        "aws_public_ip": "127.0.0.2",           # what the AWS API reports for it
        "private_ip": "10.0.0.10", "az": "ap-northeast-2a"
      },
      "brokers": [
        {"name": "broker-1", "instance_id": "i-...", "node_id": 1,
         "private_ip": "10.0.1.10", "az": "ap-northeast-2b", "controller": true}
      ],
      "kafka": {
        "port": 9092, "controller_port": 9093,
        "bootstrap_servers": "10.0.1.10:9092,...",
        "implementation": "tansu" | "apache-kafka",
        "topics": [{"name": "bike-station-status", "partitions": 3, "replication_factor": 3}]
      },
      "network": {"vpc_id": ..., "vpc_cidr": ..., "public_subnet_id": ...,
                  "private_subnet_ids": {"b": ...}, "public_route_table_id": ...,
                  "private_route_table_id": ..., "internet_gateway_id": ...,
                  "nat_security_group_id": ..., "broker_security_group_id": ...},
      "admin_cidrs": ["203.0.113.50/32"],
      "probe_url": "http://203.0.113.80/",      # answers with the caller's address
      "public_ip_map": {"127.0.0.2": "198.51.100.10"},   # AWS-reported -> dialable (local only)
      "probe_private_addresses": true,           # local only: on AWS never probe private ranges
      "faults": {                                # NAT pair only: what the failover test injects, in order
        "stop": {"by": "api", "about": "..."},   # the EC2 API; "ssh": a command on the active
        "hang": {"by": "command", "about": "...", "pythonpath": "/repo",  # local: the plane's helpers,
                 "inject": ["python", "-m", "localvpc.faults", "hang", "E", "{active}"],  # run by the
                 "undo": [..., "resume", "E", "{active}"]},   # suite; {active}/{standby}: private IPs
        "partition": {"about": "...", "skip": "why"},  # AWS: what the target cannot inject, and why
        ...},
      "nat_monitor_log": {"by": "command", "command": [..., "monitor-log", "E", "{host}"], "pythonpath": ...},
                                                 # NAT pair only: how to read a NAT monitor's log (AWS:
                                                 # {"by": "ssh", "command": "journalctl ..."} on the bastion)
      "non_admin_vantage": {                     # local only (null on AWS): an internet host outside
        "proxy_command": "ip netns exec ... nc %h %p",   # the admin CIDRs, and a port that answers it
        "address": "203.0.113.66", "control": {"address": "203.0.113.80", "port": 80}
      }
    }
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generator.base.errors import UserError
from generator.localaws import moto_server

VERSION = 1
INVENTORY_FILE = ".kafkanet/inventory.json"


def load(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no inventory; run `kafkanet apply SPEC` first") from None
    except ValueError as exc:
        raise UserError(f"{path}: not a valid inventory ({exc}); run `kafkanet apply SPEC` again") from None
    if data.get("version") != VERSION:
        raise UserError(f"{path}: inventory version {data.get('version')!r}, expected {VERSION}; re-run apply")
    return data


def broker_names(inventory: Mapping[str, Any], broker: Mapping[str, Any]) -> set[str]:
    """What a broker may advertise itself as: its private IP or its EC2 private DNS name."""
    ip = broker["private_ip"]
    region = inventory["region"]
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return {ip, f"ip-{ip.replace('.', '-')}.{domain}"}


def ec2_client(inventory: Mapping[str, Any], **client_options: Any):
    """boto3 EC2 for an inventory: its moto server on the local target (loopback only), the standard chain on aws."""
    endpoint = inventory.get("aws_endpoint")
    if endpoint:
        credentials = moto_server.read_credentials(inventory.get("aws_credentials_file"))
        return moto_server.ec2_client(endpoint, inventory["region"], credentials, **client_options)
    if inventory.get("target") == "local":
        raise UserError("target local without aws_endpoint; refusing to call real AWS")
    import boto3

    return boto3.client("ec2", region_name=inventory["region"], **client_options)
