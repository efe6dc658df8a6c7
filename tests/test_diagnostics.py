"""Diagnostics saved before destroy: a failing check leaves each host's evidence, and it shows the break.

The broken run is a real `kafkanet e2e` (subprocess, local target) of a module
whose NAT setup has lost its masquerade rule (the break of
tests/test_lifecycle_breaks.py); the positive control is the session's healthy
seed, whose saved NAT ruleset has it.
"""

from __future__ import annotations

import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from generator.environment import diagnostics
from generator.environment.session import for_run, open_env
from generator.module.generate import generate
from generator.module.runstamp import RunStamp
from tests.conftest import ROOT, SEED
from tests.envs import (
    KAFKANET,
    e2e_env,
    e2e_spec,
    machine_leftovers,
    moto_alive,
    needs_root,
)
from tests.test_lifecycle_breaks import BREAKS

MASQUERADE_REMOVED = next(b for b in BREAKS if b.name == "nat-masquerade-removed")


def _read(path: Path) -> str:
    assert path.is_file(), f"{path} was not saved"
    return path.read_text()


def test_without_a_plane_the_rendered_configs_are_saved_and_the_gaps_said(tmp_path, _build_root):
    env = open_env(str(SEED), "local")
    generate(env.loaded, env.build_dir)
    diag = diagnostics.collect(env)
    assert "listeners=" in _read(diag.host_file("broker-2", "rendered/etc/kafka/server.properties"))
    assert "masquerade" in _read(diag.host_file("nat", "rendered/usr/local/sbin/kafkanet-nat-setup"))
    summary = _read(diag.path / "summary.txt")
    assert f"/run/kn_{env.name}: no runtime directory (the local data plane is not up)" in summary
    assert f"no network namespace kn_{env.name}_* (the local data plane is not up)" in summary


def test_on_aws_each_host_s_commands_go_through_the_given_runner(tmp_path, _build_root):
    env = open_env(str(SEED), "aws")
    generate(env.loaded, env.build_dir)
    asked = []

    def runner(host, command, timeout):
        asked.append((host, command))
        if "nft" in command:
            return 1, "sudo: nft: command not found\n"
        return 0, f"{host}: {command}\n"

    diag = diagnostics.collect(env, runner, ["bastion", "broker-1"])
    assert {h for h, _ in asked} == {"bastion", "broker-1"}
    assert len(asked) == 2 * len(diagnostics.AWS_HOST)
    assert "journalctl" in _read(diag.host_file("broker-1", "journal.txt"))
    assert "nft: command not found" in _read(diag.host_file("bastion", "nft-ruleset.txt"))
    assert "hosts/bastion/nft-ruleset.txt: exit 1" in _read(diag.path / "summary.txt")


@pytest.mark.terraform
@pytest.mark.root
@pytest.mark.slow
def test_the_healthy_seed_s_evidence_has_the_masquerade(seed, tmp_path):
    diag = diagnostics.collect(seed.env)
    assert diag.path.parent == seed.env.build_dir / "diagnostics"
    assert "masquerade" in _read(diag.host_file("nat", "nft-ruleset.txt"))
    assert "default via" in _read(diag.host_file("broker-1", "routes.txt"))
    for broker in ("broker-1", "broker-2", "broker-3"):
        assert _read(diag.host_file(broker, "tansu.log")) is not None
        assert "listeners=" in _read(diag.host_file(broker, "rendered/etc/kafka/server.properties"))
    assert _read(diag.host_file("nat", "cloud-init-output.log"))  # the NAT script's own output
    assert "table" in _read(diag.path / "namespaces" / "router" / "nft-ruleset.txt")
    assert _read(diag.path / "rendered" / "user-data" / "nat.yaml")
    assert "hosts/nat/nft-ruleset.txt" in _read(diag.path / "summary.txt")


@pytest.mark.terraform
@pytest.mark.root
@pytest.mark.slow
def test_a_failing_e2e_saves_evidence_that_shows_the_broken_masquerade_before_destroy(tmp_path):
    needs_root()
    name, spec = e2e_spec(tmp_path, "dg")
    run_id = "d" + name[-5:]
    env = e2e_env(tmp_path)
    # the run's own module (what e2e would generate), then broken as an infra owner would edit it;
    # this process's build root is the subprocess's (conftest's _build_root: tmp_path/build)
    run = for_run(open_env(str(spec), "local"), run_id, RunStamp.starting_now(run_id, timedelta(hours=2)))
    generate(run.loaded, run.build_dir)
    MASQUERADE_REMOVED.apply(run.build_dir)
    try:
        proc = subprocess.run([str(KAFKANET), "e2e", str(spec), "--run-id", run_id, "--no-generate"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([str(KAFKANET), "destroy", str(spec), "--run-id", run_id], env=env, cwd=ROOT,
                       capture_output=True, timeout=300)  # a no-op when e2e tore it down
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    saved = re.search(r"^kafkanet: diagnostics: (\S+) \((\d+) files", proc.stderr, re.M)
    assert saved, out[-3000:]
    # saved before the teardown began
    assert proc.stderr.index("kafkanet: diagnostics:") < proc.stderr.index("local data plane teardown ...")
    path = Path(saved.group(1))
    assert path.is_relative_to(run.build_dir / "diagnostics")
    ruleset = _read(path / "hosts" / "nat" / "nft-ruleset.txt")
    assert "chain postrouting" in ruleset and "masquerade" not in ruleset, ruleset
    assert _read(path / "hosts" / "nat" / "cloud-init-output.log")
    for broker in ("broker-1", "broker-2", "broker-3"):
        assert (path / "hosts" / broker / "tansu.log").is_file()
        assert "default via" in _read(path / "hosts" / broker / "routes.txt")
    assert machine_leftovers(name) == []
    assert not moto_alive(tmp_path / "build" / name)
