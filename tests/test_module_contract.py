"""The generated module against the real tools: terraform fmt/init/validate, shellcheck, checkov."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from generator.module import userdata
from generator.module.check import CHECKOV, CHECKOV_ENV, checkov_argv
from generator.module.check_userdata import SHELLCHECK_ARGS
from generator.module.generate import generate
from generator.module.render import BROKER_SCRIPT_PATH, NAT_SCRIPT_PATH
from generator.terraform.tfcli import write_cli_config
from tests.conftest import ROOT, SEED, SPECS, require

pytestmark = pytest.mark.terraform

MODULE_SPECS = {
    "seed": SEED,
    "sandbox": ROOT / "environments" / "sandbox.yaml",
    "virginia-five": SPECS / "virginia-five.yaml",
    "ireland-one": SPECS / "ireland-one.yaml",
    "team-state": SPECS / "team-state.yaml",
}


@pytest.fixture(scope="session")
def tf_env(tmp_path_factory) -> dict[str, str]:
    require("terraform")
    rc = write_cli_config(tmp_path_factory.mktemp("tfcli") / "terraform.rc")
    return {**os.environ, "TF_CLI_CONFIG_FILE": str(rc), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}


@pytest.fixture(scope="session")
def modules(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for key, spec in MODULE_SPECS.items():
        out[key] = generate(spec, tmp_path_factory.mktemp("mod") / key).out_dir
    return out


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("key", list(MODULE_SPECS))
def test_fmt_init_validate(key, modules, tf_env):
    mod = modules[key]
    fmt = _run(["terraform", "fmt", "-check", "-diff", "-recursive"], mod, tf_env)
    assert fmt.returncode == 0, f"terraform fmt -check failed for {key}:\n{fmt.stdout}{fmt.stderr}"
    # -backend=false: the S3 backend of team-state cannot be reached here; validate does not need it
    init = _run(["terraform", "init", "-input=false", "-no-color", "-backend=false"], mod, tf_env)
    assert init.returncode == 0, f"terraform init failed for {key}:\n{init.stdout}{init.stderr}"
    assert "hashicorp/aws v5.100.0" in init.stdout
    validate = _run(["terraform", "validate", "-no-color", "-json"], mod, tf_env)
    result = json.loads(validate.stdout)
    assert result["valid"] and result["error_count"] == 0, validate.stdout
    assert result["warning_count"] == 0, [d["summary"] for d in result["diagnostics"]]


def _scripts(mod: Path) -> list[tuple[str, str]]:
    return [(f"{doc.path.stem}:{s.path}", s.content) for doc in userdata.load_all(mod) for s in doc.scripts]


@pytest.mark.parametrize("key", list(MODULE_SPECS))
def test_setup_scripts_pass_shellcheck(key, modules, tmp_path):
    require("shellcheck")
    scripts = _scripts(modules[key])
    labels = {label.split(":", 1)[1] for label, _ in scripts}
    assert {NAT_SCRIPT_PATH, BROKER_SCRIPT_PATH} <= labels, labels
    for label, content in scripts:
        path = tmp_path / (label.replace("/", "_").replace(":", "_") + ".sh")
        path.write_text(content)
        result = subprocess.run(
            ["shellcheck", *SHELLCHECK_ARGS, "--shell=bash", str(path)], capture_output=True, text=True
        )
        assert result.returncode == 0, f"shellcheck on {label} of {key}:\n{result.stdout}"


def test_shellcheck_really_checks(tmp_path):
    """Positive control: the same invocation flags a classic mistake."""
    require("shellcheck")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $DIR/*\n")
    assert subprocess.run(["shellcheck", *SHELLCHECK_ARGS, str(bad)], capture_output=True).returncode != 0


SKIP_RE = re.compile(r"#checkov:skip=(CKV2?_AWS_\d+):\s*(.*)$")


@pytest.mark.parametrize("key", ["seed", "virginia-five", "team-state"])
def test_checkov_passes_and_every_skip_has_a_reason(key, modules):
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} missing: run `make install`")
    mod = modules[key]
    for tf in mod.glob("*.tf"):
        for line in tf.read_text().splitlines():
            if "checkov:skip" in line:
                match = SKIP_RE.search(line)
                assert match and len(match[2]) > 20, f"{tf.name}: skip without a real reason: {line.strip()}"
    env = {**os.environ, **CHECKOV_ENV}
    result = subprocess.run(checkov_argv(mod), capture_output=True, text=True, env=env, timeout=300)
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert result.returncode == 0 and not failed, failed
    assert report["summary"]["passed"] > 40  # the scan really ran over the module
