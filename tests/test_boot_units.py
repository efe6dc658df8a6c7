"""The systemd units of the user data, checked by systemd itself.

`systemd-analyze verify` (systemd 252 here, as on AL2023) runs on every unit
the user data delivers, through `kafkanet check`'s own systemd check (a staged
root holding everything write_files writes). A line systemd rejects is only a
warning to it: "Invalid syntax, ignoring" still exits 0 and the setting is
silently dropped (the heap of 24d1c87), so any finding at all fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from generator.module import check_userdata, userdata
from generator.module.check import DEFAULT_TIMEOUTS
from generator.module.generate import render_for
from generator.module.loaded import load
from generator.module.toolrun import Runs
from tests.bootkit import KEY, cloud_configs
from tests.conftest import SEED, SPECS, require

UNIT_DIR = "/etc/systemd/system/"
SPEC_FILES = {"seed": SEED, "virginia-five": SPECS / "virginia-five.yaml"}

# What each instance must run as units (not as a heredoc in a script, where
# nothing verifies them): the NAT's network setup and its package install; a
# broker's setup and Kafka; node 1's topic creation when the spec has topics.
EXPECTED_UNITS = {
    "nat": {"kafkanet-nat-packages.service", "kafkanet-nat.service"},
    "broker-1": {"kafkanet-broker-setup.service", "kafka.service", "kafkanet-topics.service"},
    "broker-2": {"kafkanet-broker-setup.service", "kafka.service"},
}


def _documents(spec: Path, directory: Path) -> dict[str, userdata.UserData]:
    """{user-data file stem: document} of the module rendered from ``spec`` into ``directory``."""
    for name, text in render_for(load(spec), KEY).items():
        if name.startswith("user-data/"):
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text)
    return {doc.path.stem: doc for doc in userdata.load_all(directory)}


CASES = [(spec, host) for spec in SPEC_FILES for host in ("nat", "broker-1", "broker-2")]


@pytest.mark.parametrize("spec,host", CASES, ids=[f"{s}-{h}" for s, h in CASES])
def test_every_unit_in_the_user_data_passes_systemd_analyze_verify(spec, host, tmp_path):
    """The units are files of the module, so `kafkanet check`'s systemd-analyze verify sees them all
    (tests/test_check.py shows that the same check reports the heap line of 24d1c87's unit)."""
    require("systemd-analyze")
    doc = _documents(SPEC_FILES[spec], tmp_path / "module")[host]
    units = {entry.unit_name for entry in doc.units}
    missing = EXPECTED_UNITS[host] - units
    assert not missing, f"{host}: {sorted(missing)} not delivered by write_files, so nothing can verify them"
    findings = check_userdata.systemd_verify(doc, tmp_path, Runs(DEFAULT_TIMEOUTS))
    assert [str(f) for f in findings] == []


# --- retries and reboots (finding 11) -------------------------------------------------


def _settings(text: str) -> dict[tuple[str, str], str]:
    """{(section, key): value} of a unit file (the last assignment wins, as for these keys)."""
    section, out = "", {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        else:
            key, _, value = line.partition("=")
            out[(section, key.strip())] = value.strip()
    return out


def _seconds(span: str) -> float:
    """A systemd time span as used here: 90, 90s, 30min, 1h, 2h 30min."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+)\s*([a-z]*)", span):
        total += int(number) * units[unit]
    return total


def _retries_for_at_least(unit: dict, seconds: float) -> bool:
    """Whether a unit that fails at once, every time, keeps being restarted for `seconds`.

    It is restarted RestartSec after each failure; the start limit (default 5 starts
    in 10 s) stops it once more than StartLimitBurst starts fall in StartLimitIntervalSec.
    """
    restart_sec = _seconds(unit.get(("Service", "RestartSec"), "100ms"))
    interval = _seconds(unit.get(("Unit", "StartLimitIntervalSec"), "10s"))
    burst = int(unit.get(("Unit", "StartLimitBurst"), "5"))
    if interval == 0 or restart_sec <= 0:
        return interval == 0
    starts_per_interval = int(interval // restart_sec) + 1
    return starts_per_interval <= burst or burst * restart_sec >= seconds


@pytest.mark.parametrize("host", ["broker-1", "broker-2"])
def test_broker_setup_and_topics_retry_and_come_back_after_a_reboot(host):
    cloud = cloud_configs()[host]
    units = {e["path"][len(UNIT_DIR):]: _settings(e["content"]) for e in cloud["write_files"]
             if e["path"].startswith(UNIT_DIR)}  # fmt: skip
    retried = ["kafkanet-broker-setup.service"] + (["kafkanet-topics.service"] if host == "broker-1" else [])
    assert set(retried) <= set(units), f"{host}: no unit runs {set(retried) - set(units)}"
    enabled = next(c for c in cloud["runcmd"] if c[:2] == ["systemctl", "enable"])[2:]
    for name in [*retried, "kafka.service"]:
        unit = units[name]
        assert unit.get(("Service", "Restart")) == "on-failure", name
        assert _seconds(unit.get(("Service", "RestartSec"), "0")) >= 10, name
        assert _retries_for_at_least(unit, 15 * 60), f"{name}: its start limit ends the retries early"
        assert unit.get(("Install", "WantedBy")) == "multi-user.target", f"{name}: not started at boot"
        assert name in enabled, f"{name}: never enabled, so a reboot does not start it"
    assert "kafkanet-broker-setup.service" in units["kafka.service"][("Unit", "Requires")].split()
    assert "kafkanet-broker-setup.service" in units["kafka.service"][("Unit", "After")].split()
    # after a failed first attempt nothing but the setup itself starts what waits for it
    started = units["kafkanet-broker-setup.service"][("Service", "ExecStartPost")].split()
    assert started[:3] == ["/usr/bin/systemctl", "--no-block", "start"]
    assert set(started[3:]) == {"kafka.service", *(["kafkanet-topics.service"] if host == "broker-1" else [])}
    if host == "broker-1":
        topics = units["kafkanet-topics.service"]
        assert "kafka.service" in topics[("Unit", "After")].split()
        assert "kafka.service" in topics[("Unit", "Requires")].split()
    assert ["systemctl", "start", "--no-block", "kafkanet-broker-setup.service"] in cloud["runcmd"]
