"""The suite's parametrization (one test per host, readable ids) and its shared probes and Kafka access.

Parameters, all from the inventory:

* ``instance``: the bastion and every broker (ids ``bastion``, ``broker-1``...);
* ``broker``: every broker;
* ``private_subnet``: ``(az letter, subnet id)`` (ids ``private-b``...);
* ``public_port``: ports no public address may answer on (ids ``22``, ``80``...);
* ``private_probe``: ``(broker, port)`` on the local target only (ids ``broker-1-22``...);
* ``topic``: the inventory's topics (ids by name).

Session fixtures: ``vantage``/``probes`` (every reachability probe, run
concurrently once, with the positive control), ``non_admin_probe`` (SSH to the
bastion from an internet host outside the admin CIDRs, local target only),
``socks`` (the SOCKS5 port over the bastion, for kafka-python ``proxy_url``)
and ``kafka_config``.

Head start: the checks that wait (a dropped port times out after
``PROBE_BUDGET``, a consumer group takes seconds to join, a fetch crosses the
NAT) are started in background threads when the session starts, by
``_head_start``, for whichever of them the selected tests use; each test then
waits for its own result and asserts exactly what it asserted inline. A
failure in the background (``pytest.fail`` included) is raised again, whole,
by the test that reads it, and only by it: a broken bastion still fails only
the checks that need it.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from integration import probes as probe_mod
from integration import support
from integration.aws import public_addresses
from integration.gate import GATE_KEY, INVENTORY_KEY
from integration.outbound import fetch_through_nat

PROBE_BUDGET = 3.0  # seconds a closed port may take to refuse or time out
KAFKA_BOUND_MS = 15_000
#: session fixtures whose work starts in the background as the session starts, when a selected test uses them
HEAD_START = ("probes", "non_admin_probe", "outbound", "kafka_runs")


@pytest.fixture(scope="session", autouse=True)
def _head_start(request: pytest.FixtureRequest) -> None:
    """Create the background-work fixtures the selected tests use, first thing, so their waits overlap.

    A fixture that fails here (e.g. no SSH to the bastion) is not this
    fixture's failure: pytest keeps it and raises it again for each test that
    requests it, as it would have without the head start.
    """
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for name in HEAD_START:
        if name in used:
            try:
                request.getfixturevalue(name)
            except (Exception, pytest.fail.Exception, pytest.skip.Exception):
                continue


def background(name: str, workers: int = 1):
    """A thread pool for one fixture's background work (its threads named after it)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)


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
class Probed:
    control: probe_mod.Probe
    public: list[PublicTarget]
    results: dict[tuple[str, int], probe_mod.Probe]


@dataclass
class ProbeBatch:
    """Every probe, running in the background from the session's start; reading waits for all of them."""

    running: Future[Probed]

    @property
    def control(self) -> probe_mod.Probe:
        return self.running.result().control

    @property
    def public(self) -> list[PublicTarget]:
        return self.running.result().public

    @property
    def results(self) -> dict[tuple[str, int], probe_mod.Probe]:
        return self.running.result().results

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
def probes(inventory: dict[str, Any], ec2, vantage):
    """Every probe of the no-inbound checks, run concurrently once (the control first among equals)."""

    def run() -> Probed:
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
            done = dict(zip(targets, pool.map(lambda t: probe_mod.probe_tcp(vantage, t[0], t[1], PROBE_BUDGET),
                                              targets)))  # fmt: skip
        return Probed(control=done[(bastion["public_ip"], ssh_port)], public=public, results=done)

    with background("probes") as pool:
        yield ProbeBatch(pool.submit(run))


@dataclass
class NonAdmin:
    address: str  # the internet host outside the admin CIDRs
    control: probe_mod.Probe  # its positive control: the web host answers on the same probe path
    ssh: probe_mod.Probe  # the bastion's SSH, from it


@pytest.fixture(scope="session")
def non_admin_probe(inventory: dict[str, Any]):
    """SSH to the bastion from an internet address outside admin_cidrs, with its positive control (local only);
    None where the inventory has no such vantage (AWS)."""
    outside = inventory.get("non_admin_vantage")
    if not outside:
        yield None
        return
    bastion = inventory["bastion"]

    def run() -> NonAdmin:
        host = f"non-admin host {outside['address']}"
        control = outside["control"]
        try:  # the vantage is the namespace the proxy command dials the control from
            vantage = probe_mod.Vantage.of_proxy_command(outside["proxy_command"], control["address"],
                                                         int(control["port"]))  # fmt: skip
        except probe_mod.VantageError as exc:
            support.fail(host, "vantage point", str(exc))
        try:
            answered = probe_mod.probe_tcp(vantage, control["address"], int(control["port"]), PROBE_BUDGET)
            ssh = probe_mod.probe_tcp(vantage, bastion["public_ip"], int(inventory["ssh"].get("port") or 22),
                                      PROBE_BUDGET)  # fmt: skip
        finally:
            vantage.close()
        return NonAdmin(outside["address"], answered, ssh)

    with background("non-admin") as pool:
        yield pool.submit(run)


# --- outbound through the NAT -----------------------------------------------------------------


@pytest.fixture(scope="session")
def outbound(testinfra_hosts, inventory: dict[str, Any]):
    """Every instance's fetch of the probe URL, started at once: each waits on its own timeouts, so a
    broken NAT costs one host's budget rather than the sum of them. Each test reads its own
    (``.result()`` re-raises that host's failure). Logins to the hosts go one at a time."""
    url = inventory["probe_url"]
    names = [i["name"] for i in support.instances(inventory)]
    login = threading.Lock()

    def run(name: str) -> str:
        with login:
            host = testinfra_hosts[name]
        return fetch_through_nat(name, host, url)

    with background("outbound", workers=len(names)) as pool:
        yield {name: pool.submit(run, name) for name in names}


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


def kafka_settings(socks_server) -> dict[str, Any]:
    """Settings every Kafka client of the suite shares: the proxy and bounded waits."""
    return {
        # socks5h: a broker may advertise its private DNS name; the bastion resolves it inside the VPC
        "proxy_url": socks_server.url_remote_dns,
        "request_timeout_ms": KAFKA_BOUND_MS,
        "bootstrap_timeout_ms": KAFKA_BOUND_MS,
        "reconnect_backoff_max_ms": 1000,
        "client_id": "kafkanet-integration",
    }


@pytest.fixture(scope="session")
def kafka_config(socks) -> dict[str, Any]:
    return kafka_settings(socks)


@dataclass
class KafkaRuns:
    """The Kafka checks that take seconds, running in the background since the session started."""

    produce: Future[dict[str, Any]]  # kafkacheck.produce_and_consume: its throughput figures
    round_trips: dict[str, Future[None]]  # broker name -> kafkacheck.round_trip


@pytest.fixture(scope="session")
def kafka_runs(bastion, socks, kafka_config, inventory: dict[str, Any], pytestconfig: pytest.Config):
    """The produce/consume check with a SOCKS5 port of its own (so the connections it counts through the
    bastion are its own), and every broker's round trip, all at once."""
    # kafka-python: imported here, after pytest_configure set the warning filters
    from integration import kafkacheck

    count = int(pytestconfig.getoption("kafka_records"))
    port = int(inventory["kafka"]["port"])
    allowed = {(name, port) for b in inventory["brokers"] for name in support.broker_names(inventory, b)}
    own = bastion.socks5(allowed=lambda host, p: (host, p) in allowed)
    try:
        with background("kafka", workers=1 + len(inventory["brokers"])) as pool:
            produce = pool.submit(kafkacheck.produce_and_consume, kafka_settings(own), inventory, own, count)
            trips = {b["name"]: pool.submit(kafkacheck.round_trip, dict(b), kafka_config, inventory)
                     for b in inventory["brokers"]}  # fmt: skip
            yield KafkaRuns(produce, trips)
    finally:
        own.close()


@pytest.fixture(scope="session")
def kafka_stats(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Where the produce check leaves its throughput for the terminal summary."""
    record = pytestconfig.stash.get(GATE_KEY, None)
    return record["kafka"] if record is not None else {}
