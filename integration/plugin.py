"""The integration suite's pytest plugin: options, markers, session fixtures and the session gate.

``pytest -p integration.plugin integration/ --inventory PATH`` checks a live
environment through its inventory (see :mod:`generator.environment.inventory`);
``kafkanet test`` runs exactly that, from a checkout or a wheel. The checkout's
root ``conftest.py`` loads this plugin for the unit tests in ``tests/`` too:
nothing here acts unless ``--inventory`` is given or an integration test is
collected, and the fixtures are only built on request.

Session fixtures: ``inventory`` (the parsed document), ``ec2`` (boto3, the
inventory's endpoint; each describe call made once, :class:`integration.aws.Snapshot`), ``bastion`` (:class:`generator.access.ssh.Bastion`, the one SSH
transport of the session) and ``testinfra_hosts`` (``bastion``, ``broker-1``...
as testinfra hosts over that same transport).

The gate: on top of pytest's own verdict the session fails when a check other
than a ``real_kafka`` one on tansu was skipped, or when fewer checks ran than
the inventory implies (:mod:`integration.gate`). A per-host summary ends the
terminal report; JUnit XML (``--junitxml``) carries a ``host`` property per case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from integration.gate import GATE_KEY, INVENTORY_KEY

INTEGRATION = Path(__file__).resolve().parent  # this suite, in a checkout or a wheel
ROOT = INTEGRATION.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("kafkanet", "kafkanet integration suite")
    group.addoption(
        "--inventory",
        metavar="PATH",
        default=None,
        help="inventory JSON of a live environment (`kafkanet inventory SPEC`); required to run integration/",
    )
    group.addoption(
        "--kafka-records",
        metavar="N",
        type=int,
        default=200,
        help="records the produce/consume check sends through the bastion (default 200)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_kafka: needs Apache Kafka (cluster metadata, replication); skipped when the brokers are tansu"
    )
    config.addinivalue_line("markers", "host(name): what a check is about, for the per-host summary and JUnit")
    config.addinivalue_line(
        "markers", "local_only: needs a vantage point only the local plane has; skipped, with the reason, on AWS"
    )
    config.addinivalue_line(
        "markers", "nat_pair: needs two NATs (bastion.standby); not collected for a single NAT, run last otherwise"
    )
    path = config.getoption("inventory", default=None)
    if not path and any(_names_integration(config, arg) for arg in config.args):
        raise pytest.UsageError("integration/ checks a live environment: give --inventory PATH")
    if path:
        from generator.base.errors import UserError
        from generator.environment.inventory import load

        try:
            inventory = load(Path(path).expanduser())
        except UserError as exc:
            raise pytest.UsageError("; ".join(exc.problems)) from None
        config.stash[INVENTORY_KEY] = inventory
        # kafka-python 3.0 loads its protocol schemas with importlib.resources' legacy API
        config.addinivalue_line("filterwarnings", "ignore:read_text is deprecated:DeprecationWarning")
        config.addinivalue_line("filterwarnings", "ignore:open_text is deprecated:DeprecationWarning")
        config.stash[GATE_KEY] = {"results": {}, "modules": set(), "problems": [], "notes": [], "kafka": {}}


def _names_integration(config: pytest.Config, arg: str) -> bool:
    path = Path(str(arg).split("::")[0])
    path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
    path = path.resolve()
    return path == INTEGRATION or INTEGRATION in path.parents


def _in_integration(path: Path) -> bool:
    return INTEGRATION in Path(path).resolve().parents


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if _in_integration(item.path)]
    if not ours:
        return
    inventory = config.stash.get(INVENTORY_KEY, None)
    if inventory is None:
        raise pytest.UsageError("integration/ checks a live environment: give --inventory PATH")
    from integration import gate

    for item in ours:
        if item.get_closest_marker(gate.REAL_KAFKA) and inventory["kafka"].get("implementation") == "tansu":
            item.add_marker(pytest.mark.skip(reason=gate.REAL_KAFKA_REASON))
        item.user_properties.append(("host", _host_of(item)))
    # A NAT pair's failover checks stop and break NATs: they run after every other check. A single NAT
    # has nothing to fail over to: they are left out (not skipped), so its suite's counts are unchanged.
    pair = [item for item in ours if item.get_closest_marker(gate.NAT_PAIR)]
    if pair:
        rest = [item for item in items if item not in pair]
        if gate.has_nat_pair(inventory):
            items[:] = rest + pair
        else:
            config.hook.pytest_deselected(items=pair)
            items[:] = rest
            record = config.stash.get(GATE_KEY, None)
            if record is not None:
                record["notes"].append(f"nat failover: not run: {gate.NAT_PAIR_REASON}")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Record what will run (after every plugin's selection) for the gate and the summary."""
    record = session.config.stash.get(GATE_KEY, None)
    if record is None:
        return
    from integration import gate

    for item in session.items:
        if _in_integration(item.path):
            host = dict(item.user_properties).get("host", "environment")
            real_kafka = item.get_closest_marker(gate.REAL_KAFKA) is not None
            local_only = item.get_closest_marker(gate.LOCAL_ONLY) is not None
            record["results"][item.nodeid] = gate.Result(
                item.nodeid, item.path.name, host, real_kafka=real_kafka, local_only=local_only
            )


def _host_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("host")
    if marker is not None and marker.args:
        return str(marker.args[0])
    params = getattr(getattr(item, "callspec", None), "params", {})
    for name in ("instance", "broker", "private_probe"):
        value = params.get(name)
        if isinstance(value, tuple):
            value = value[0]
        if isinstance(value, dict) and "name" in value:
            return str(value["name"])
    if "private_subnet" in params:
        return "network"
    return "environment"


def pytest_collectstart(collector: pytest.Collector) -> None:
    if isinstance(collector, pytest.Module) and _in_integration(collector.path):
        record = collector.config.stash.get(GATE_KEY, None)
        if record is not None:
            record["modules"].add(collector.path.name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    record = item.config.stash.get(GATE_KEY, None)
    result = record["results"].get(report.nodeid) if record else None
    if result is not None:
        _record(result, report)
    return report


def _record(result: Any, report: pytest.TestReport) -> None:
    result.duration += report.duration
    if report.when == "call":
        result.outcome = "skipped" if report.skipped else report.outcome
    elif report.failed:  # a setup or teardown error
        result.outcome = "error"
    elif report.skipped and report.when == "setup":
        result.outcome = "skipped"
    if report.skipped and isinstance(report.longrepr, tuple):
        result.reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed and not result.reason:
        result.reason = _first_line(report)


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("Failed: ")[:300]
    return "failed"


def _narrowed(config: pytest.Config) -> str:
    """Why this run is not the whole suite (empty when it is)."""
    option = config.option
    if getattr(option, "keyword", ""):
        return f"-k {option.keyword}"
    if getattr(option, "markexpr", ""):
        return f"-m {option.markexpr}"
    if getattr(option, "deselect", None):
        return "--deselect"
    if getattr(option, "lf", False):
        return "--lf"
    if any("::" in str(arg) for arg in config.args):
        return "test ids given"
    return ""


def _whole_suite_requested(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(str(arg).split("::")[0])
        path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        if path.resolve() in (INTEGRATION, ROOT):
            return True
    return False


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    record = config.stash.get(GATE_KEY, None)
    if not record or not record["results"]:
        return
    from integration import gate

    narrowed = _narrowed(config)
    if narrowed:
        record["notes"].append(f"completeness check off: selection narrowed ({narrowed})")
    interrupted = exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
    record["problems"] = gate.problems(
        record["results"].values(),
        config.stash[INVENTORY_KEY],
        record["modules"],
        check_counts=not narrowed and not interrupted and not config.option.maxfail,
        all_modules_requested=_whole_suite_requested(config),
    )
    if record["problems"] and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ARG001
    record = config.stash.get(GATE_KEY, None)
    if not record or not record["results"]:
        return
    from integration import gate

    inventory = config.stash[INVENTORY_KEY]
    terminalreporter.section("kafkanet: per-host results")
    terminalreporter.write_line(
        f"environment {inventory['environment']} (target {inventory['target']}, "
        f"kafka {inventory['kafka'].get('implementation')}), inventory {config.getoption('inventory')}"
    )
    for line in gate.summary_lines(record["results"].values()):
        terminalreporter.write_line(line)
    kafka = record.get("kafka") or {}
    if kafka:
        terminalreporter.write_line(
            f"kafka produce through the bastion: {kafka['records']} records, {kafka['bytes']} bytes in "
            f"{kafka['seconds']:.2f} s = {kafka['records'] / kafka['seconds']:.0f} records/s, "
            f"{kafka['bytes'] / kafka['seconds'] / 1024:.1f} KiB/s (acks=all, bootstrap {kafka['bootstrap']})"
        )
    for note in record["notes"]:
        terminalreporter.write_line(f"note: {note}")
    for problem in record["problems"]:
        terminalreporter.write_line(f"SESSION FAILED: {problem}", red=True, bold=True)


# --- session fixtures ------------------------------------------------------------------


@pytest.fixture(scope="session")
def inventory(pytestconfig: pytest.Config) -> dict[str, Any]:
    """The inventory given with --inventory (version 1)."""
    found = pytestconfig.stash.get(INVENTORY_KEY, None)
    if found is None:
        raise pytest.UsageError("this check needs a live environment: give --inventory PATH")
    return found


@pytest.fixture(scope="session")
def ec2(inventory: dict[str, Any]):
    """boto3 EC2 client: the inventory's endpoint (dummy credentials) on local, the standard chain on aws."""
    from botocore.config import Config

    from generator.base.errors import KafkanetError
    from generator.environment.inventory import ec2_client

    config = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 4, "mode": "standard"})
    from integration.aws import Snapshot

    try:  # refuses anything but a loopback endpoint on the local target
        return Snapshot(ec2_client(inventory, config=config))  # the suite only reads: each question once
    except KafkanetError as exc:
        raise pytest.UsageError(f"inventory: {exc}") from None


@pytest.fixture(scope="session")
def bastion(inventory: dict[str, Any]):
    """The session's one SSH transport to the bastion (through ssh.proxy_command when set)."""
    from generator.access.ssh import Bastion
    from generator.base.errors import KafkanetError

    if inventory.get("target") == "local" and not inventory["ssh"].get("proxy_command"):
        raise pytest.UsageError("inventory: target local needs ssh.proxy_command (the operator namespace); refusing "
                                "to dial emulated addresses from this machine's own network")
    session = Bastion.from_inventory(inventory)
    try:
        session.connect()
    except KafkanetError as exc:
        session.close()
        pytest.fail("\n".join(exc.problems), pytrace=False)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def testinfra_hosts(bastion, inventory: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    """``{"bastion": Host, "broker-1": Host, ...}`` over the session transport (each connects on first use)."""
    from integration.hosts import TestinfraHosts, write_guard_config

    return TestinfraHosts(bastion, inventory, write_guard_config(tmp_path_factory.mktemp("testinfra")))
