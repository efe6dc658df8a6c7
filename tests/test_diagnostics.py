"""Diagnostics saved before destroy: a failing check leaves each host's evidence, and it shows the break.

The broken runs are tests/test_lifecycle_breaks.py's: `kafkanet test` on the
session's seed with a break applied saves the evidence, and the one whose NAT
setup lost its masquerade rule must show that; the positive control here is the
healthy seed, whose saved NAT ruleset has it. e2e's order (the evidence before
its teardown) is checked with stand-ins for its steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.base.errors import INTERRUPTED
from generator.environment import diagnostics
from generator.environment.session import open_env
from generator.module.generate import generate
from tests.conftest import SEED


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


@pytest.mark.parametrize(
    ("suite_ends", "said"),
    [("rc 1", "checks failed"), ("deadline", "--max-duration 30 s reached"), ("ctrl-c", None)],
)
def test_e2e_saves_the_evidence_before_its_teardown(monkeypatch, suite_ends, said):
    """e2e's order: apply, the suite, the evidence of a failed check (or of a run out of time), then
    teardown; an interrupted run goes straight to teardown. The steps are stand-ins: the live proof
    that a failing check's evidence shows the break is test_lifecycle_breaks.py's, on the session's
    seed (`kafkanet test` saves it the same way), and the live teardown after a deadline is
    tests/test_run_id_live.py's."""
    from generator import cli
    from generator.environment import apply as applying
    from generator.environment import destroy, suite
    from generator.environment.session import DeadlineReached

    calls: list[str] = []

    def apply(env, **_):
        env.inventory_path.parent.mkdir(parents=True, exist_ok=True)
        env.inventory_path.write_text("{}")
        calls.append("apply")

    def run_suite(env, args):
        calls.append("suite")
        if suite_ends == "deadline":
            raise DeadlineReached("--max-duration of 30 s reached")
        if suite_ends == "ctrl-c":
            raise KeyboardInterrupt
        return 1

    monkeypatch.setattr(applying, "apply", apply)
    monkeypatch.setattr(suite, "run_suite", run_suite)
    monkeypatch.setattr(cli, "_save_diagnostics", lambda env, why: calls.append(f"diagnostics: {why}"))
    monkeypatch.setattr(destroy, "teardown", lambda env, finish, timings: calls.append("teardown"))
    argv = ["e2e", str(SEED), "--run-id", "t1", "--max-duration", "30s"]
    assert cli.main(argv) == {"rc 1": 1, "deadline": 3, "ctrl-c": INTERRUPTED}[suite_ends]
    assert calls == ["apply", "suite", *([f"diagnostics: {said}"] if said else []), "teardown"]
