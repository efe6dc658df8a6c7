"""Whether a replaced broker has rejoined its cluster, asked through the bastion (AWS target).

During a roll (:mod:`generator.environment.roll`) the next broker is replaced
only once the previous one is back: a surviving broker, reached through the
bastion with the environment's pinned host keys (the replaced broker's keys
are new, so it is never the one asked), must reach the new broker's Kafka
(``kafka-broker-api-versions.sh``) and report no under-replicated partition
(``kafka-topics.sh --describe --under-replicated-partitions`` prints nothing).
Polled with a bound; the failure names the broker and what was seen last.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping
from typing import Any

from generator.access.ssh import Bastion, RunResult
from generator.base.errors import InfraError

KAFKA_HOME = "/opt/kafka"
BUDGET = 20 * 60.0  # a new broker installs Java and Kafka through the NAT first
INTERVAL = 15.0
COMMAND_TIMEOUT = 60.0


def rejoin_command(new_address: str, asked_address: str, port: int) -> str:
    new, asked = shlex.quote(f"{new_address}:{port}"), shlex.quote(f"{asked_address}:{port}")
    return (
        f"{KAFKA_HOME}/bin/kafka-broker-api-versions.sh --bootstrap-server {new} >/dev/null && "
        f"{KAFKA_HOME}/bin/kafka-topics.sh --bootstrap-server {asked} --describe --under-replicated-partitions"
    )


def rejoined_through_bastion(
    inventory: Mapping[str, Any],
    *,
    connect: Callable[[Mapping[str, Any]], Any] = lambda inv: Bastion.from_inventory(inv).connect(),
    budget: float = BUDGET,
    interval: float = INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Callable[[str], None]:
    """A ``rejoined(name)`` for the roll: returns once broker ``name`` is back, InfraError after ``budget``."""
    port = int(inventory["kafka"]["port"])

    def rejoined(name: str) -> None:
        brokers = {b["name"]: b for b in inventory["brokers"]}
        others = [b for b in inventory["brokers"] if b["name"] != name]
        if name not in brokers or not others:
            raise InfraError(f"{name}: no other broker to ask whether it rejoined; check it by hand before going on")
        asked = others[0]
        command = rejoin_command(brokers[name]["private_ip"], asked["private_ip"], port)
        deadline = clock() + budget
        seen = "nothing yet"
        with connect(inventory) as bastion:
            while True:
                result: RunResult = bastion.run(asked["name"], command, timeout=COMMAND_TIMEOUT)
                if result.ok and not result.stdout.strip():
                    return
                seen = (f"under-replicated partitions: {result.stdout.strip().splitlines()[:3]}" if result.ok
                        else f"exit {result.rc}: {(result.stderr or result.stdout).strip()[-200:]}")  # fmt: skip
                if clock() + interval > deadline:
                    raise InfraError(
                        f"{name} has not rejoined after {budget:.0f} s (asked {asked['name']} through the bastion); "
                        f"last seen: {seen}"
                    )
                sleep(interval)

    return rejoined
