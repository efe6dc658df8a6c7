"""The suite's parametrization (one test per host, readable ids) and its shared probes and Kafka access.

Parameters, all from the inventory:

* ``instance``: the bastion and every broker (ids ``bastion``, ``broker-1``...);
* ``broker``: every broker;
* ``private_subnet``: ``(az letter, subnet id)`` (ids ``private-b``...);
* ``public_port``: ports no public address may answer on (ids ``22``, ``80``...);
* ``private_probe``: ``(broker, port)`` on the local target only (ids ``broker-1-22``...);
* ``topic``: the inventory's topics (ids by name).

Session fixtures: ``vantage``/``probes`` (every reachability probe, run
concurrently once, with the positive control), ``socks`` (the SOCKS5 port
over the bastion, for kafka-python ``proxy_url``) and ``kafka_config``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from integration import probes as probe_mod
from integration import support
from integration.aws import public_addresses
from integration.gate import GATE_KEY, INVENTORY_KEY

PROBE_BUDGET = 3.0  # seconds a closed port may take to refuse or time out
KAFKA_BOUND_MS = 15_000


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    inventory = metafunc.config.stash.get(INVENTORY_KEY, None)
    wanted = {"instance", "broker", "private_subnet", "public_port", "private_probe", "topic"}
    if not wanted & set(metafunc.fixturenames):
        return
    if inventory is None:
        raise pytest.UsageError("integration/ checks a live environment: give --inventory PATH")
    if "instance" in metafunc.fixturenames:
        hosts = support.instances(inventory)
        metafunc.parametrize("instance", hosts, ids=[h["name"] for h in hosts])
    if "broker" in metafunc.fixturenames:
        brokers = [dict(b) for b in inventory["brokers"]]
        metafunc.parametrize("broker", brokers, ids=[b["name"] for b in brokers])
    if "private_subnet" in metafunc.fixturenames:
        subnets = sorted(inventory["network"]["private_subnet_ids"].items())
        metafunc.parametrize("private_subnet", subnets, ids=[f"private-{az}" for az, _ in subnets])
    if "public_port" in metafunc.fixturenames:
        ports = support.public_ports(inventory)
        metafunc.parametrize("public_port", ports, ids=[str(p) for p in ports])
    if "private_probe" in metafunc.fixturenames:
        pairs = support.private_probes(inventory)
        metafunc.parametrize("private_probe", pairs, ids=[f"{b['name']}-{port}" for b, port in pairs])
    if "topic" in metafunc.fixturenames:
        topics = [dict(t) for t in inventory["kafka"]["topics"]]
        metafunc.parametrize("topic", topics, ids=[t["name"] for t in topics])


# --- reachability probes -------------------------------------------------------------------


@pytest.fixture(scope="session")
def vantage(inventory: dict[str, Any], bastion):
    """Where the operator's packets start: the namespace of the session's own proxy command, if any.

    See :mod:`integration.probes`. On the local target the probes must start
    inside the plane, never from this machine's own namespace.
    """
    process = bastion.proxy_process
    if process is None:
        point = probe_mod.Vantage.direct()
    else:
        try:
            what = f"the session's proxy command `{bastion.settings.proxy_command}`"
            point = probe_mod.Vantage.of_process(process.pid, bastion.address, bastion.settings.port, what)
        except probe_mod.VantageError as exc:
            pytest.fail(f"operator side: cannot establish where probes start: {exc}", pytrace=False)
    if support.is_local(inventory) and point.same_as_ours:
        point.close()
        pytest.fail(
            "operator side: on the local target probes must start inside the plane's operator namespace, "
            "but the proxy command dials from this machine's own network namespace; refusing to probe",
            pytrace=False,
        )
    try:
        yield point
    finally:
        point.close()


@dataclass
class PublicTarget:
    aws_ip: str
    holder: str
    dial: str | None  # None: the inventory maps it nowhere


@dataclass
class ProbeBatch:
    control: probe_mod.Probe
    public: list[PublicTarget]
    results: dict[tuple[str, int], probe_mod.Probe] = field(default_factory=dict)

    def require_control(self) -> None:
        """Fail unless the positive control answered: a negative probe alone proves nothing."""
        __tracebackhide__ = True
        support.expect(
            self.control.outcome == probe_mod.OPEN,
            "bastion",
            "positive control (its SSH port through the same probe) did not answer, so no negative probe counts",
            str(self.control),
        )


@pytest.fixture(scope="session")
def probes(inventory: dict[str, Any], ec2, vantage) -> ProbeBatch:
    """Every probe of the no-inbound checks, run concurrently once (the control first among equals)."""
    bastion = inventory["bastion"]
    ids = [h["instance_id"] for h in support.instances(inventory)]
    found = public_addresses(ec2, inventory["network"]["vpc_id"], ids)
    public = [PublicTarget(ip, holder, support.dialable(inventory, ip)) for ip, holder in sorted(found.items())]
    ssh_port = int(inventory["ssh"].get("port") or 22)
    targets = {(bastion["public_ip"], ssh_port)}
    for port in support.public_ports(inventory):
        skip = bastion["public_ip"] if port == ssh_port else None  # the bastion's SSH is the one open port
        targets |= {(t.dial, port) for t in public if t.dial and t.dial != skip}
    targets |= {(b["private_ip"], port) for b, port in support.private_probes(inventory)}
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        done = dict(zip(targets, pool.map(lambda t: probe_mod.probe_tcp(vantage, t[0], t[1], PROBE_BUDGET), targets)))
    return ProbeBatch(control=done[(bastion["public_ip"], ssh_port)], public=public, results=done)


# --- Kafka through the bastion ----------------------------------------------------------------


@pytest.fixture(scope="session")
def socks(bastion, inventory: dict[str, Any]):
    """SOCKS5 on 127.0.0.1 over the bastion; only the brokers' Kafka endpoints may be reached through it."""
    port = int(inventory["kafka"]["port"])
    allowed = {(name, port) for b in inventory["brokers"] for name in support.broker_names(inventory, b)}
    server = bastion.socks5(allowed=lambda host, p: (host, p) in allowed)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def kafka_config(socks) -> dict[str, Any]:
    """Settings every Kafka client of the suite shares: the proxy and bounded waits."""
    return {
        # socks5h: a broker may advertise its private DNS name; the bastion resolves it inside the VPC
        "proxy_url": socks.url_remote_dns,
        "request_timeout_ms": KAFKA_BOUND_MS,
        "bootstrap_timeout_ms": KAFKA_BOUND_MS,
        "reconnect_backoff_max_ms": 1000,
        "client_id": "kafkanet-integration",
    }


@pytest.fixture(scope="session")
def kafka_stats(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Where the produce check leaves its throughput for the terminal summary."""
    record = pytestconfig.stash.get(GATE_KEY, None)
    return record["kafka"] if record is not None else {}
