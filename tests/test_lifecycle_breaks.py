"""The integration suite catches broken networks.

On the session's seed environment (applied once): the unbroken environment
passes; then each misconfiguration is applied to the generated Terraform as an
incremental change (`kafkanet apply --no-generate` after editing the build
directory, as an infra owner would), the suite runs (`kafkanet test`), it must
exit 1, and the set of failing test ids must equal the set written here by
hand. Each break starts from a freshly generated module, so the apply that
introduces one break also reverts the previous one. The module ends by killing
the environment's moto server and destroying it: nothing may be left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.environment import diagnostics, session
from generator.localaws import moto_server

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]

BROKERS = ("broker-1", "broker-2", "broker-3")
OUTBOUND = {f"test_outbound.py::test_outbound_http_seen_as_bastion_public_ip[{b}]" for b in BROKERS}


@dataclass(frozen=True)
class Break:
    name: str
    file: str
    old: str  # exact text (or a regex when regex=True) that must be in the generated file
    new: str
    expected: frozenset[str]
    regex: bool = False

    def apply(self, build_dir: Path) -> None:
        path = build_dir / self.file
        text = path.read_text()
        if self.regex:
            changed, count = re.subn(self.old, self.new, text, flags=re.M)
        else:
            count = text.count(self.old)
            changed = text.replace(self.old, self.new)
        assert count == 1, f"break {self.name}: expected one match of {self.old!r} in {self.file}, found {count}"
        path.write_text(changed)


BREAKS = [
    Break(
        "nat-source-dest-check-on", "nat.tf",
        "  source_dest_check = false\n", "  source_dest_check = true\n",
        frozenset({"test_control_plane.py::test_nat_source_dest_check_off"} | OUTBOUND),
    ),
    Break(
        "private-default-route-removed", "network.tf",
        'resource "aws_route" "private_nat" {\n'
        "  route_table_id         = aws_route_table.private.id\n"
        '  destination_cidr_block = "0.0.0.0/0"\n'
        "  network_interface_id   = aws_instance.nat.primary_network_interface_id\n"
        "}\n",
        "",
        frozenset({f"test_control_plane.py::test_private_default_route_via_nat[private-{az}]" for az in "bcd"}
                  | OUTBOUND),
    ),
    Break(
        # packets only: no API check can see a script's contents, the outbound checks must
        "nat-masquerade-removed", "user-data/nat.yaml",
        r"^\s+oifname .* masquerade\n", "", frozenset(OUTBOUND), regex=True,
    ),
    Break(
        "broker-1-elastic-ip", "kafka.tf",
        "\n# The Kafka log lives on its own volume",
        '\nresource "aws_eip" "broker_1" {\n  domain   = "vpc"\n'
        '  instance = aws_instance.broker["broker-1"].id\n}\n\n# The Kafka log lives on its own volume',
        # the broker's group still drops internet sources, so no packet check changes; the API check does
        frozenset({"test_control_plane.py::test_broker_has_no_public_address[broker-1]"}),
    ),
    Break(
        # API only: the brokers keep the interfaces they were created with, so no packet check changes
        "private-subnets-map-public-ips", "network.tf",
        "  cidr_block        = each.value.cidr\n",
        "  cidr_block        = each.value.cidr\n\n  map_public_ip_on_launch = true\n",
        frozenset({f"test_control_plane.py::test_private_subnet_maps_no_public_ip[private-{az}]" for az in "bcd"}),
    ),
    Break(
        "bastion-ssh-open-to-the-world", "nat.tf",
        "  cidr_ipv4         = each.value\n", '  cidr_ipv4         = "0.0.0.0/0"\n',  # the one nat_ssh rule
        frozenset({
            "test_control_plane.py::test_bastion_ssh_only_from_admin_cidrs",
            "test_no_inbound.py::test_bastion_ssh_closed_to_non_admin_addresses",
        }),
    ),
    Break(
        "kafka-port-closed", "kafka.tf",
        "  ingress {\n"
        '    description = "Kafka clients inside the VPC"\n'
        '    protocol    = "tcp"\n'
        "    from_port   = local.kafka_port\n"
        "    to_port     = local.kafka_port\n"
        "    cidr_blocks = [local.vpc_cidr]\n"
        "  }\n\n",
        "",
        frozenset(
            {f"test_control_plane.py::test_broker_kafka_ports_only_from_vpc[{b}-kafka]" for b in BROKERS}
            | {f"test_kafka.py::test_broker_round_trip[{b}]" for b in BROKERS}
            | {"test_kafka.py::test_topic_exists[bike-station-status]",
               "test_kafka.py::test_produce_and_consume_all_records"}
        ),
    ),
]


def failing_ids(junit: Path) -> set[str]:
    failed = set()
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").rsplit(".", 1)[-1]
            failed.add(f"{module}.py::{case.get('name')}")
    return failed


def run_suite(seed) -> tuple[int, set[str]]:
    junit = seed.env.build_dir / "reports" / "integration.xml"
    junit.unlink(missing_ok=True)
    rc = seed.cli("test", str(seed.spec))
    return rc, failing_ids(junit) if junit.exists() else set()


def test_unbroken_environment_passes(seed):
    rc, failed = run_suite(seed)
    assert (rc, failed) == (0, set())


@pytest.mark.parametrize("brk", BREAKS, ids=[b.name for b in BREAKS])
def test_suite_catches(brk: Break, seed):
    assert seed.cli("generate", str(seed.spec)) == 0  # pristine module: reverts the previous break
    brk.apply(seed.env.build_dir)
    assert seed.cli("apply", str(seed.spec), "--no-generate", "--no-check") == 0  # broken on purpose
    saved_before = set(_diagnostics(seed))
    rc, failed = run_suite(seed)
    assert rc == 1, f"{brk.name}: the suite passed on a broken network"
    assert failed == set(brk.expected), (
        f"{brk.name}: unexpected failures {sorted(failed - brk.expected)}, "
        f"missing failures {sorted(brk.expected - failed)}"
    )
    # a failed check leaves each host's evidence; the broken masquerade shows in the NAT's saved ruleset
    saved = sorted(set(_diagnostics(seed)) - saved_before)
    assert len(saved) == 1, f"{brk.name}: `kafkanet test` failed and saved {len(saved)} diagnostics folders"
    for broker in BROKERS:
        assert "default via" in (saved[0] / "hosts" / broker / "routes.txt").read_text()
    ruleset = (saved[0] / "hosts" / "nat" / "nft-ruleset.txt").read_text()
    assert "chain postrouting" in ruleset
    assert ("masquerade" in ruleset) == (brk.name != "nat-masquerade-removed"), ruleset


def _diagnostics(seed) -> list[Path]:
    folder = seed.env.build_dir / diagnostics.DIR
    return [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []


def test_destroy_after_the_moto_server_died_removes_everything(seed, capsys):
    server = moto_server.find_running(seed.env.path(session.MOTO_DIR))
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    assert seed.cli("destroy", str(seed.spec)) == 0
    assert "its resources died with it" in capsys.readouterr().err
    assert f"kn_{seed.name}_" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not (seed.env.build_dir / "terraform.tfstate").exists()
    assert not (seed.env.build_dir / "ssh_config").exists(), "destroy leaves no ssh_config to a dead environment"
    assert moto_server.find_running(seed.env.path(session.MOTO_DIR)) is None
    procs = subprocess.run(["pgrep", "-f", f"kn_{seed.name}_"], capture_output=True, text=True).stdout
    assert procs == ""
