"""Exit codes are documented and distinct: 0 passed, 1 checks failed, 2 user error, 3 infra, 4 leftovers.

The e2e mapping is exercised with apply, the suite and destroy replaced by
stand-ins that fail the way the real ones do (they raise the same errors); the
real interrupted and leftover runs are in tests/test_e2e_teardown.py.
"""

from __future__ import annotations

import pytest

from generator import cli
from generator.base import errors
from generator.base.errors import InfraError, LeftoversError, UserError
from generator.cli import build_parser, main
from tests.conftest import ROOT, SEED


def test_the_codes_are_distinct():
    codes = [code for code, _ in errors.EXIT_CODES]
    assert codes == [0, 1, 2, 3, 4, 130]
    assert (UserError("x").exit_code, InfraError("x").exit_code, LeftoversError("x").exit_code) == (2, 3, 4)


def test_help_and_readme_list_every_code():
    text = build_parser().format_help()
    readme = (ROOT / "README.md").read_text()
    for code, meaning in errors.EXIT_CODES:
        assert f"  {code:<4} {meaning}" in text
        assert f"\n| {code} | " in readme, f"README's exit code table lacks {code}"


@pytest.fixture
def stages(monkeypatch):
    """Stand-ins for apply / suite / destroy that record calls and fail on demand."""
    from generator.environment import apply, destroy, suite

    calls: list[str] = []
    plan: dict[str, object] = {"apply": None, "suite": 0, "destroy": None}

    def fake_apply(env, **kw):
        calls.append("apply")
        if plan["apply"]:
            raise plan["apply"]
        env.inventory_path.parent.mkdir(parents=True, exist_ok=True)
        env.inventory_path.write_text("{}")

    def fake_suite(env, args=None):
        calls.append("suite")
        if isinstance(plan["suite"], BaseException):
            raise plan["suite"]
        return plan["suite"]

    def fake_diagnostics(env, why):
        calls.append(f"diagnostics ({why})")
        if plan.get("diagnostics"):
            raise plan["diagnostics"]

    def fake_destroy(env, **kw):
        calls.append("destroy")
        if plan["destroy"]:
            raise plan["destroy"]

    monkeypatch.setattr(apply, "apply", fake_apply)
    monkeypatch.setattr(suite, "run_suite", fake_suite)
    monkeypatch.setattr(destroy, "destroy", fake_destroy)
    monkeypatch.setattr(cli, "_save_diagnostics", fake_diagnostics)
    return calls, plan


def test_a_failed_check_saves_diagnostics_before_destroy(stages):
    calls, plan = stages
    plan["suite"] = 1
    assert main(["e2e", str(SEED)]) == 1
    assert calls == ["apply", "suite", "diagnostics (checks failed)", "destroy"]


def test_a_passing_run_and_an_interrupted_one_save_none(stages):
    calls, plan = stages
    assert main(["e2e", str(SEED)]) == 0
    assert calls == ["apply", "suite", "destroy"]
    calls.clear()
    plan["suite"] = KeyboardInterrupt()
    assert main(["e2e", str(SEED)]) == 130
    assert calls == ["apply", "suite", "destroy"]


def test_an_interrupt_while_saving_diagnostics_still_tears_down(stages):
    calls, plan = stages
    plan.update(suite=1, diagnostics=KeyboardInterrupt())
    assert main(["e2e", str(SEED)]) == 130
    assert calls == ["apply", "suite", "diagnostics (checks failed)", "destroy"]


@pytest.mark.parametrize(
    ("apply_fails", "suite_rc", "destroy_fails", "expected"),
    [
        (None, 0, None, 0),
        (None, 1, None, 1),
        (InfraError("terraform apply failed"), 0, None, 3),
        (None, 1, InfraError("terraform destroy failed"), 3),
        (None, 0, LeftoversError("2 resource(s) remain"), 4),
        (InfraError("terraform apply failed"), 0, LeftoversError("2 resource(s) remain"), 4),
    ],
    ids=["passed", "checks-failed", "apply-failed", "destroy-failed", "leftovers", "apply-failed-then-leftovers"],
)
def test_e2e_exit_code(stages, capsys, apply_fails, suite_rc, destroy_fails, expected):
    calls, plan = stages
    plan.update(apply=apply_fails, suite=suite_rc, destroy=destroy_fails)
    assert main(["e2e", str(SEED)]) == expected
    assert calls[-1] == "destroy"  # teardown ran whatever happened before it
    err = capsys.readouterr().err
    for failure in (apply_fails, destroy_fails):
        if failure is not None:
            assert failure.problems[0] in err


def test_e2e_with_a_bad_spec_is_2(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SEED.read_text().replace("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 8.8.8.0/24"))
    assert main(["e2e", str(spec)]) == 2
    assert "vpc_cidr" in capsys.readouterr().err


def test_durations_parse_and_a_bad_one_is_exit_2(capsys):
    from generator.cli import _duration

    assert [_duration(t) for t in ("45m", "12h", "1h30m", "90s", "90")] == [2700, 43200, 5400, 90, 90]
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        main(["e2e", "ttareungyi", "--max-duration", "soon"])
    assert exited.value.code == 2
    assert "'soon' is not a duration; use e.g. 45m, 12h, 1h30m or 90s" in capsys.readouterr().err
