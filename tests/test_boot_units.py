"""The systemd units of the user data, checked by systemd itself.

`systemd-analyze verify` (systemd 252 here, as on AL2023) runs on every unit
the user data delivers, in a staged root holding everything write_files
writes. A line systemd rejects is only a warning to it: "Invalid syntax,
ignoring" still exits 0 and the setting is silently dropped (the heap of
24d1c87), so any output at all fails the test; and before it checks anything,
the check must report that line of 24d1c87's unit exactly as the audit did.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.bootkit import cloud_configs
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


def stage(cloud: dict, root: Path) -> list[str]:
    """Write every write_files entry under root; return the names of the units among them."""
    # The distribution's own units (sysinit.target, network-online.target...), which the
    # units depend on; without them verify reports "Unit sysinit.target not found".
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = []
    for entry in cloud["write_files"]:
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(entry["content"])
        target.chmod(int(str(entry["permissions"]), 8))
        if entry["path"].startswith(UNIT_DIR):
            units.append(entry["path"][len(UNIT_DIR):])
    # Commands the units run that the user data does not deliver (Kafka's start script,
    # systemctl): stand-ins, so that "is not executable" reports nothing about the unit.
    for unit in units:
        for line in (root / UNIT_DIR.lstrip("/") / unit).read_text().splitlines():
            match = re.match(r"^Exec\w+=[-@:+!]*(\S+)", line)
            if match and not (root / match[1].lstrip("/")).exists():
                command = root / match[1].lstrip("/")
                command.parent.mkdir(parents=True, exist_ok=True)
                command.write_text("#!/bin/sh\nexit 0\n")
                command.chmod(0o755)
    return units


def verify(root: Path, units: list[str]) -> str:
    """systemd-analyze verify's output (stdout and stderr) for units in the staged root."""
    require("systemd-analyze")
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", *units],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = (result.stdout + result.stderr).strip()
    return out if out or result.returncode == 0 else f"exit {result.returncode} without a word"


# The unit 24d1c87's broker-setup.sh wrote with a heredoc, as bash expanded it on a
# t3.small (MemTotal 1939800 kB: heap 947 MiB): the unquoted heredoc kept the "\ ".
UNIT_OF_24D1C87 = r"""[Unit]
Description=Apache Kafka 3.9.1 (KRaft) broker-1
Wants=network-online.target
After=network-online.target
RequiresMountsFor=/var/lib/kafka

[Service]
User=kafka
Environment=KAFKA_HEAP_OPTS=-Xms947m\ -Xmx947m
ExecStart=/opt/kafka/bin/kafka-server-start.sh /etc/kafka/server.properties
Restart=on-failure
LimitNOFILE=100000

[Install]
WantedBy=multi-user.target
"""


@pytest.fixture(scope="module")
def checked_verify(tmp_path_factory):
    """verify, once it has reported the heap line of 24d1c87's unit exactly as the audit saw it
    (a check that says nothing about that line would pass anything)."""
    root = tmp_path_factory.mktemp("control") / "root"
    cloud = {"write_files": [{"path": UNIT_DIR + "kafka.service", "content": UNIT_OF_24D1C87, "permissions": "0644"}]}
    out = verify(root, stage(cloud, root))
    assert out == f"{root}/etc/systemd/system/kafka.service:9: Invalid syntax, ignoring: " + (
        r"KAFKA_HEAP_OPTS=-Xms947m\ -Xmx947m"
    ), out
    return verify


CASES = [(spec, host) for spec in SPEC_FILES for host in ("nat", "broker-1", "broker-2")]


@pytest.mark.parametrize("spec,host", CASES, ids=[f"{s}-{h}" for s, h in CASES])
def test_every_unit_in_the_user_data_passes_systemd_analyze_verify(spec, host, tmp_path, checked_verify):
    cloud = cloud_configs(SPEC_FILES[spec])[host]
    units = stage(cloud, tmp_path / "root")
    missing = EXPECTED_UNITS[host] - set(units)
    assert not missing, f"{host}: {sorted(missing)} not delivered by write_files, so nothing can verify them"
    assert checked_verify(tmp_path / "root", units) == ""


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
