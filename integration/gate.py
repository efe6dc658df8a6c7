"""The session gate: how many checks the inventory implies, which skips are allowed, the per-host summary.

Pure functions over what the run reported; the root ``conftest.py`` wires
them to pytest's hooks. The expected counts are written out per module on
purpose, independently of the parametrization in ``integration/conftest.py``:
an inventory that parametrizes to fewer checks than it should (an empty
broker list, a lost topic, a module that stopped collecting) fails the run
instead of passing quietly. Change both together when adding a check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

INVENTORY_KEY = pytest.StashKey[dict]()  # the parsed --inventory
GATE_KEY = pytest.StashKey[dict]()  # results, collected modules, problems, notes, kafka throughput

REAL_KAFKA = "real_kafka"
LOCAL_ONLY = "local_only"
NAT_PAIR = "nat_pair"
NAT_PAIR_REASON = "a single NAT (the inventory has no bastion.standby): nothing to fail over to"
REAL_KAFKA_REASON = (
    "needs Apache Kafka: the local target runs tansu, where every broker reports node id 111 "
    "and keeps its own store (no cluster metadata, no replication); runs on target aws"
)


def expected_counts(inventory: Mapping[str, Any]) -> dict[str, int]:
    """Module file name -> number of tests the inventory implies (skipped real-Kafka ones included)."""
    brokers = len(inventory["brokers"])
    instances = brokers + 1
    subnets = len(inventory["network"]["private_subnet_ids"])
    topics = len(inventory["kafka"]["topics"])
    kafka = inventory["kafka"]
    public_ports = len({22, 80, 443, int(kafka["port"]), int(kafka["controller_port"])})
    private_ports = len({int(inventory["ssh"].get("port") or 22), int(kafka["port"])})
    probe_private = bool(inventory.get("probe_private_addresses")) and inventory.get("target") == "local"
    return {
        # per broker: private subnet, no public address, SSH source, Kafka port source, controller port source;
        # per instance: IMDSv2, encrypted root volume; per private subnet: default via NAT, no IGW route,
        # no public IP on launch; NAT source/dest check, NAT Elastic IP, bastion SSH sources.
        "test_control_plane.py": 6 * brokers + 2 * instances + 3 * subnets + 3,
        # per instance: outbound HTTP seen as the bastion's public address
        "test_outbound.py": instances,
        # positive control, public addresses found, one per public port, bastion SSH from a non-admin
        # address (skipped on AWS), private (broker, port) pairs on local
        "test_no_inbound.py": 3 + public_ports + (brokers * private_ports if probe_private else 0),
        # per topic: exists; produce/consume N; per broker round trip; real Kafka: brokers in metadata,
        # replication factor per topic
        "test_kafka.py": topics + 1 + brokers + 1 + topics,
        # a NAT pair only: the failover matrix, one check per fault (stop, hang, masquerade, forwarding,
        # internet, partition; hang and partition local_only), then the steady watch after the last recovery
        **({"test_nat_failover.py": 7} if has_nat_pair(inventory) else {}),
    }


def has_nat_pair(inventory: Mapping[str, Any]) -> bool:
    return bool((inventory.get("bastion") or {}).get("standby"))


def describe_inventory(inventory: Mapping[str, Any]) -> str:
    return (
        f"{len(inventory['brokers'])} brokers, {len(inventory['network']['private_subnet_ids'])} private subnets, "
        f"{len(inventory['kafka']['topics'])} topics, probe_private_addresses="
        f"{bool(inventory.get('probe_private_addresses'))}"
    )


@dataclass
class Result:
    nodeid: str
    module: str  # file name, e.g. "test_kafka.py"
    host: str
    outcome: str = "pending"  # passed | failed | error | skipped
    reason: str = ""  # skip reason or first failure line
    duration: float = 0.0
    real_kafka: bool = False
    local_only: bool = False


def allowed_skip(result: Result, inventory: Mapping[str, Any]) -> bool:
    """Real-Kafka checks may skip where the brokers are tansu; local-only checks on AWS. Nothing else."""
    if result.real_kafka:
        return inventory["kafka"].get("implementation") == "tansu"
    return result.local_only and inventory.get("target") != "local"


def problems(
    results: Iterable[Result],
    inventory: Mapping[str, Any],
    collected_modules: Iterable[str],
    *,
    check_counts: bool,
    all_modules_requested: bool,
) -> list[str]:
    """Why the session must fail although pytest may count no failure (empty: it need not)."""
    results = list(results)
    out = []
    for r in results:
        if r.outcome == "skipped" and not allowed_skip(r, inventory):
            out.append(f"{r.nodeid} was skipped ({r.reason or 'no reason'}); only real_kafka checks on tansu may skip")
    if check_counts:
        expected = expected_counts(inventory)
        modules = set(collected_modules)
        if all_modules_requested:
            for name in sorted(set(expected) - modules):
                out.append(f"{name} was not collected; the inventory implies {expected[name]} checks there")
        for name in sorted(modules & set(expected)):
            ran = sum(1 for r in results if r.module == name and r.outcome != "pending")
            if ran < expected[name]:
                implied = f"the inventory implies {expected[name]} ({describe_inventory(inventory)})"
                out.append(f"{name}: {ran} checks ran, {implied}")
    return out


def summary_lines(results: Iterable[Result]) -> list[str]:
    """A per-host table, then one line per failure naming host and check."""
    by_host: dict[str, list[Result]] = {}
    for r in results:
        by_host.setdefault(r.host, []).append(r)
    order = sorted(by_host, key=_host_order)
    width = max([len(h) for h in order] + [4])
    lines = [f"{'host':<{width}}  passed  failed  skipped  seconds"]
    for host in order:
        rs = by_host[host]
        count = {o: sum(1 for r in rs if r.outcome == o) for o in ("passed", "failed", "error", "skipped")}
        lines.append(
            f"{host:<{width}}  {count['passed']:>6}  {count['failed'] + count['error']:>6}  {count['skipped']:>7}"
            f"  {sum(r.duration for r in rs):>7.1f}"
        )
    for host in order:
        for r in by_host[host]:
            if r.outcome in ("failed", "error"):
                lines.append(f"FAILED {host}: {r.nodeid.split('::')[-1]}: {r.reason}")
    return lines


def _host_order(host: str) -> tuple[int, str]:
    if host == "bastion":
        return (0, "")
    if host.startswith("broker-"):
        tail = host.removeprefix("broker-")
        return (1, tail.zfill(6) if tail.isdigit() else tail)
    return (2, host)
