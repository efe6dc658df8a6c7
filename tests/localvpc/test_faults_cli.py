"""localvpc.faults as a command (what a NAT pair's inventory declares for the failover test): user errors exit 2
with one line, before anything is touched. The helpers themselves run on a live plane in
tests/test_nat_failover_live.py (hang, partition, internet) and tests/localvpc/test_live_packets.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localvpc import faults
from tests.conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localvpc.faults", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize(("args", "said"), [
    (("partition", "kn-none", "nat"), "faults: partition takes 2 host(s), got 1: nat"),
    (("cut-internet", "kn-none", "nat"), "faults: cut-internet takes 0 host(s), got 1: nat"),
    (("hang", "kn-none-x1", "10.0.0.4"), "faults: no running plane for kn-none-x1"),
])  # fmt: skip
def test_a_wrong_call_exits_2_with_one_line(args, said):
    done = _run(*args)
    assert done.returncode == 2, done
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(said), done.stderr


def test_every_command_a_pair_inventory_declares_is_a_verb_of_the_helper():
    from generator.environment.apply import faults_of

    declared = faults_of("kn-pair", local=True)
    commands = {f: d for f, d in declared.items() if d.get("by") == "command"}
    assert set(commands) == {"hang", "internet", "partition"}
    for fault, entry in commands.items():
        for which in ("inject", "undo"):
            argv = entry[which]
            assert argv[1:3] == ["-m", "localvpc.faults"] and argv[3] in faults.COMMANDS, (fault, which, argv)
            hosts = [a for a in argv[5:] if a.startswith("{")]
            assert len(hosts) == faults.COMMANDS[argv[3]][1], (fault, which, argv)
    aws = faults_of("kn-pair", local=False)
    assert {f for f, d in aws.items() if d.get("skip")} == {"hang", "partition"}
