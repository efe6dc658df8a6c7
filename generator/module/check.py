"""Every static check on a module directory, generated or hand-edited: ``kafkanet check DIR``.

The tools, each run with a bounded timeout and all of them at once (they only read
the directory; terraform's init runs in a scratch copy, so the directory gets no
``.terraform`` and no lock file it did not have):

* ``terraform fmt -check -recursive`` and ``terraform validate`` (after
  ``terraform init -backend=false`` with the project's CLI config, which the
  caller passes: ``generator.terraform.tfcli.write_cli_config`` writes it);
* ``shellcheck`` on every shell script the user data installs (``write_files``
  entries with a ``#!/bin/bash``-like shebang);
* ``systemd-analyze verify`` on every systemd unit the user data installs, in a
  staged root laid out as the instance (see :func:`_stage`);
* ``cloud-init schema`` on every user-data document;
* ``checkov`` from the project's own venv (``.venv-checkov``).

:func:`check_module` returns the findings, one per problem, printed by the CLI as
``FILE:LINE: tool: message``; a line of an extracted script or unit is given as
the user-data document's own line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from generator.base.errors import PrerequisiteError, UserError
from generator.module import check_userdata, userdata
from generator.module.toolrun import (
    Finding,
    Runs,
    one_line,
    sort_key,
    timed_out,
    tool_env,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"  # `make install` puts it there (it pins its own libraries)


def checkov_binary() -> Path | None:
    """The checkov of a checkout's own venv, else the one on PATH (an installed kafkanet)."""
    if os.access(CHECKOV, os.X_OK):
        return CHECKOV
    found = shutil.which("checkov")
    return Path(found) if found else None
#: checkov without the Bridgecrew platform: no mapping download, no package scan
CHECKOV_ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}

#: Budget of one run of each tool, seconds. A run that takes longer is killed and is a finding.
DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "terraform fmt": 60.0,
    "terraform init": 180.0,
    "terraform validate": 120.0,
    "shellcheck": 60.0,
    "systemd-analyze": 60.0,
    "cloud-init": 60.0,
    "checkov": 300.0,
}

_INSTALL = "run `make install` (it installs every prerequisite)"
_TOOLS_ON_PATH = {
    "terraform": "install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install)",
    "shellcheck": _INSTALL,
    "systemd-analyze": _INSTALL,
    "cloud-init": _INSTALL,
}


def require_module(directory: Path | str) -> Path:
    """``directory`` if it is a Terraform module; UserError (exit 2) naming the fix otherwise."""
    path = Path(directory)
    if not path.is_dir():
        raise UserError(f"{path}: no such directory")
    if not any(path.glob("*.tf")) and not any(path.glob("*.tf.json")):
        raise UserError(f"{path}: not a Terraform module (no .tf file in it); write one with "
                        f"`kafkanet generate SPEC --out {path}`")  # fmt: skip
    return path


def require_tools() -> None:
    """PrerequisiteError with one line per missing tool, each naming how to get it."""
    missing = [f"{tool} not found on PATH: {fix}" for tool, fix in _TOOLS_ON_PATH.items() if not shutil.which(tool)]
    if checkov_binary() is None:
        missing.append(f"checkov not found at {CHECKOV} nor on PATH: {_INSTALL}, or pip install checkov")
    if missing:
        raise PrerequisiteError(*missing)


def _cli_config(given: Path | str | None) -> Path | None:
    """The CLI config terraform runs with; None: terraform's own (the user's, the registry)."""
    if given is None:
        return None
    path = Path(given)
    if not path.is_file():
        raise PrerequisiteError(f"terraform CLI config {path} does not exist: {_INSTALL}")
    return path.resolve()


# ------------------------------------------------------------------ terraform

_TF_ERROR = re.compile(r"^Error: (.+)$")
_TF_WHERE = re.compile(r"^\s+on (\S+) line (\d+)")
_HUNK = re.compile(r"^@@ -(\d+)")


def _terraform_text(text: str, show: Callable[[str], str], module: str, tool: str) -> list[Finding]:
    """Findings from terraform's human output: each ``Error: summary``, at its ``on FILE line N``."""
    found: list[Finding] = []
    lines = [line.strip("│╷╵").rstrip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if not (error := _TF_ERROR.match(line.strip())):
            continue
        where = next((w for w in map(_TF_WHERE.match, lines[i + 1:i + 4]) if w), None)
        found.append(Finding(show(where[1]), int(where[2]), tool, error[1]) if where
                     else Finding(module, None, tool, error[1]))  # fmt: skip
    return list(dict.fromkeys(found))  # init prints a configuration error twice


def _fmt_findings(stdout: str, show: Callable[[str], str]) -> list[Finding]:
    """One finding per badly formatted file, at the first line ``terraform fmt`` would change.

    ``-check -diff`` prints each file's name, then its unified diff.
    """
    first: dict[str, int | None] = {}
    current, line, in_hunk = "", 0, False
    for text in stdout.splitlines():
        if text.startswith("--- old/"):
            current, in_hunk = text[len("--- old/"):], False
            first.setdefault(current, None)
        elif text.startswith("+++ new/"):
            continue
        elif hunk := _HUNK.match(text):
            line, in_hunk = int(hunk[1]), True
        elif in_hunk and text[:1] in ("-", "+"):
            if first[current] is None:
                first[current] = line
            line += text[0] == "-"  # counts lines of the file as it is
        elif in_hunk and text[:1] in (" ", ""):
            line += 1
        else:  # the next file's name
            in_hunk = False
            first.setdefault(text.strip(), None)
    return [Finding(show(name), at, "terraform fmt", "not formatted as `terraform fmt` writes it")
            for name, at in first.items()]  # fmt: skip


def _terraform_fmt(module: Path, show: Callable[[str], str], env: dict[str, str], runs: Runs) -> list[Finding]:
    argv = ["terraform", "fmt", "-check", "-diff", "-recursive", "-no-color"]
    result = runs.run("terraform fmt", argv, cwd=module, env=env)
    if result is None:
        return [timed_out(show("."), "terraform fmt", runs)]
    if result.returncode == 0:
        return []
    if result.returncode == 3:
        return _fmt_findings(result.stdout, show)
    return _terraform_text(result.stderr, show, show("."), "terraform fmt") or [
        Finding(show("."), None, "terraform fmt", f"exit {result.returncode}: {one_line(result.stderr)[:300]}")
    ]


def snapshot(module: Path, into: Path) -> Path:
    """A copy of the module as it stands now, for :func:`check_module` (``shown_as`` the module) while
    something else (``kafkanet apply``) goes on writing in the module directory."""
    return _scratch_copy(module, into)


def _scratch_copy(module: Path, scratch: Path) -> Path:
    """The module's files without dot-directories (``.terraform``, ``.kafkanet``) and state."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if (n.startswith(".") and os.path.isdir(os.path.join(directory, n)))
                or ".tfstate" in n or n.endswith(".tfplan")}  # fmt: skip

    return Path(shutil.copytree(module, scratch / "module", ignore=ignore, symlinks=False))


def _validate_findings(stdout: str, show: Callable[[str], str], module: str) -> list[Finding] | None:
    try:
        report = json.loads(stdout)
        diagnostics = report["diagnostics"]
    except (ValueError, KeyError, TypeError):
        return None
    found = []
    for diag in diagnostics:
        text = diag.get("summary", "")
        if diag.get("detail"):
            text = f"{text}: {diag['detail']}"
        if diag.get("severity") == "warning":
            text = f"warning: {text}"
        where = diag.get("range") or {}
        if where.get("filename"):
            file, line = show(where["filename"]), where["start"]["line"]
        else:
            file, line = module, None
        found.append(Finding(file, line, "terraform validate", one_line(text)))
    return found


def _terraform_validate(
    module: Path, show: Callable[[str], str], env: dict[str, str], scratch: Path, runs: Runs
) -> list[Finding]:
    copy = _scratch_copy(module, scratch)
    env = {**env, "TF_DATA_DIR": str(copy / ".terraform")}  # never the user's TF_DATA_DIR
    # -backend=false: validate needs no state, and an S3 backend may not be reachable from here
    init = runs.run("terraform init", ["terraform", "init", "-backend=false", "-input=false", "-no-color"],
                    cwd=copy, env=env)  # fmt: skip
    if init is None:
        return [timed_out(show("."), "terraform init", runs)]
    validate = runs.run("terraform validate", ["terraform", "validate", "-json", "-no-color"], cwd=copy, env=env)
    if validate is None:
        return [timed_out(show("."), "terraform validate", runs)]
    found = _validate_findings(validate.stdout, show, show("."))
    if init.returncode != 0 and not found:
        return _terraform_text(init.stdout + init.stderr, show, show("."), "terraform init") or [
            Finding(show("."), None, "terraform init", f"exit {init.returncode}")
        ]
    if found is None:
        text = one_line(validate.stdout + validate.stderr)[:300]
        return [Finding(show("."), None, "terraform validate", f"exit {validate.returncode}: {text}")]
    return found


# ------------------------------------------------------------------ checkov


def checkov_argv(directory: Path) -> list[str]:
    """checkov on a module directory, a JSON report on stdout (not ``--quiet``: it leaves out parsing errors)."""
    return [str(checkov_binary() or CHECKOV), "-d", str(directory), "--framework", "terraform", "--skip-download", "-o", "json"]


def _checkov(module: Path, show: Callable[[str], str], runs: Runs) -> list[Finding]:
    result = runs.run("checkov", checkov_argv(module), env=tool_env(**CHECKOV_ENV))
    if result is None:
        return [timed_out(show("."), "checkov", runs)]
    try:
        report = json.loads(result.stdout)
    except ValueError:
        text = one_line(result.stderr or result.stdout)[:300]
        return [Finding(show("."), None, "checkov", f"exit {result.returncode}: {text}")]
    found = []
    for part in report if isinstance(report, list) else [report]:
        results = part.get("results", {}) if isinstance(part, dict) else {}
        for c in results.get("failed_checks", []):
            line = (c.get("file_line_range") or [None])[0]
            text = f"{c['check_id']}: {c.get('check_name', '')} ({c.get('resource', '?')})"
            found.append(Finding(show(c.get("file_path", "").lstrip("/")), line, "checkov", text))
        for path in results.get("parsing_errors", []):
            name = Path(path).relative_to(module.resolve()) if Path(path).is_relative_to(module.resolve()) else path
            found.append(Finding(show(str(name).lstrip("/")), None, "checkov", "could not parse the file"))
    return found


# ------------------------------------------------------------------ the check


def check_module(
    directory: Path | str,
    *,
    cli_config: Path | str | None = None,
    timeouts: Mapping[str, float] | None = None,
    shown_as: Path | str | None = None,
    runs: Runs | None = None,
) -> list[Finding]:
    """Every static check on the module in ``directory``; the findings, sorted (empty: clean).

    ``cli_config`` is terraform's CLI config for the offline provider mirror
    (``generator.terraform.tfcli.write_cli_config`` writes it; None: terraform's
    own configuration, as on a machine that installs providers from the registry). ``timeouts`` overrides :data:`DEFAULT_TIMEOUTS`.
    ``shown_as``: the directory the findings name (default ``directory``), when ``directory`` is a :func:`snapshot`.
    ``runs``: the caller's, to stop the tools from another thread (``runs.stop()``); default: one of its own.
    UserError (exit 2) for a directory that is not a module or a missing tool.
    """
    module = require_module(directory)
    require_tools()
    config = _cli_config(cli_config)
    runs = runs if runs is not None else Runs({**DEFAULT_TIMEOUTS, **(timeouts or {})})

    shown = Path(shown_as) if shown_as is not None else module

    def show(name: str) -> str:  # a file the tool names relative to the module, as the user named the module
        return str(shown / name)

    documents = userdata.load_all(module)
    tf_env = tool_env(TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
    if config is not None:
        tf_env["TF_CLI_CONFIG_FILE"] = str(config)
    with tempfile.TemporaryDirectory(prefix="kafkanet-check-") as tmp:
        scratch = Path(tmp)
        # the slow ones first: checkov (seconds of imports) and terraform validate (the provider's schema)
        jobs: list[Callable[[], list[Finding]]] = [
            lambda: _checkov(module, show, runs),
            lambda: _terraform_validate(module, show, tf_env, scratch, runs),
            lambda: _terraform_fmt(module, show, tf_env, runs),
        ]
        for document in documents:
            jobs.append(lambda d=document: check_userdata.cloud_init(d, runs))
            if any(u.is_unit for u in document.units):
                jobs.append(lambda d=document: check_userdata.systemd_verify(d, scratch, runs))
            for script in document.scripts:
                jobs.append(lambda s=script: check_userdata.shellcheck(s, scratch, runs))
            for script in document.python_scripts:
                jobs.append(lambda s=script: check_userdata.python_syntax(s))
        pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="kafkanet-check")
        try:
            futures = [pool.submit(job) for job in jobs]
            findings = [finding for future in futures for finding in future.result()]
        except BaseException:  # Ctrl-C, SIGTERM, a bug: no tool is left running
            runs.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if shown != module:  # the user-data checks name their documents by path
        inside = f"{module}{os.sep}"
        findings = [dataclasses.replace(f, file=str(shown / f.file[len(inside):])) if f.file.startswith(inside) else f
                    for f in findings]  # fmt: skip
    return sorted(dict.fromkeys(findings), key=sort_key)
