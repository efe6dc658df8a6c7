"""Assertion helpers, a bounded poll, and inventory accessors for the integration suite.

Every failure names the host, the property and what was seen, in one line:
``broker-2: outbound source address: expected 198.51.100.10 (bastion public IP), saw 10.0.2.10``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pytest

from generator.environment import inventory as inventory_mod

T = TypeVar("T")

Inventory = Mapping[str, Any]


# --- failing clearly ----------------------------------------------------------------


def fail(host: str, prop: str, seen: object) -> None:
    """Fail the test with ``host: property: seen``."""
    __tracebackhide__ = True
    pytest.fail(f"{host}: {prop}: {seen}", pytrace=False)


def expect(condition: object, host: str, prop: str, seen: object) -> None:
    """Fail with ``host: property: seen`` unless ``condition`` holds."""
    __tracebackhide__ = True
    if not condition:
        fail(host, prop, seen)


def expect_equal(actual: object, expected: object, host: str, prop: str, what: str = "") -> None:
    """Fail with ``host: property: expected X (what), saw Y`` unless equal."""
    __tracebackhide__ = True
    if actual != expected:
        fail(host, prop, f"expected {expected!r}{f' ({what})' if what else ''}, saw {actual!r}")


# --- waiting with a budget --------------------------------------------------------------


class Transient(Exception):
    """Raised by a poll check for an observation that may change by itself (boot, propagation)."""


def poll(
    description: str,
    check: Callable[[], T],
    *,
    attempts: int,
    interval: float,
    transient: tuple[type[BaseException], ...] = (Transient,),
) -> T:
    """Call ``check`` until it returns; retry only ``transient`` errors, ``attempts`` times, ``interval`` apart.

    On exhaustion the test fails with what was awaited, how long, and the last
    thing seen. Any other exception propagates at once.
    """
    __tracebackhide__ = True
    started = time.monotonic()
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            return check()
        except transient as exc:
            last = exc
            if attempt < attempts:
                time.sleep(interval)
    pytest.fail(
        f"{description}: still not true after {attempts} attempts over {time.monotonic() - started:.1f} s; "
        f"last seen: {last}",
        pytrace=False,
    )
    raise AssertionError("unreachable")  # pytest.fail raises


# --- the inventory -------------------------------------------------------------------------


def instances(inventory: Inventory) -> list[dict[str, Any]]:
    """The bastion, then the brokers: every instance of the environment."""
    return [dict(inventory["bastion"]), *(dict(b) for b in inventory["brokers"])]


def host_label(host: Mapping[str, Any]) -> str:
    return f"{host['name']} ({host['instance_id']})"


def is_local(inventory: Inventory) -> bool:
    return inventory.get("target") == "local"


def kafka_implementation(inventory: Inventory) -> str:
    return str(inventory["kafka"].get("implementation", "apache-kafka"))


def is_tansu(inventory: Inventory) -> bool:
    return kafka_implementation(inventory) == "tansu"


def public_ports(inventory: Inventory) -> list[int]:
    """Ports that no public address may answer on (22 except the bastion's)."""
    kafka = inventory["kafka"]
    ports = [22, 80, 443, int(kafka["port"]), int(kafka["controller_port"])]
    return list(dict.fromkeys(ports))


def private_probes(inventory: Inventory) -> list[tuple[dict[str, Any], int]]:
    """(broker, port) pairs to probe on private addresses: local target only, never on AWS."""
    if not inventory.get("probe_private_addresses") or not is_local(inventory):
        return []
    ports = list(dict.fromkeys([int(inventory["ssh"].get("port") or 22), int(inventory["kafka"]["port"])]))
    return [(dict(b), port) for b in inventory["brokers"] for port in ports]


def dialable(inventory: Inventory, aws_ip: str) -> str | None:
    """Where the operator dials a public address the AWS API reports (None: no emulated counterpart)."""
    if not is_local(inventory):
        return aws_ip
    return (inventory.get("public_ip_map") or {}).get(aws_ip)


def broker_names(inventory: Inventory, broker: Mapping[str, Any]) -> set[str]:
    """What a broker may advertise itself as: its private IP or its EC2 private DNS name."""
    return inventory_mod.broker_names(inventory, broker)
