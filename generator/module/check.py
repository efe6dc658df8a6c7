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

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from generator.base.errors import PrerequisiteError, UserError
from generator.module import userdata
from generator.module.userdata import UserData, WriteFile

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
#: checkov without the Bridgecrew platform: no mapping download, no package scan
CHECKOV_ENV = {"BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
SHELLCHECK_ARGS = ("--severity=style",)  # every level, style included

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
#: this machine's system units, copied into each staged root (/lib is a link to /usr/lib on Debian 12)
UNIT_SOURCES = tuple(Path(d) for d in ("/usr/lib/systemd/system", "/lib/systemd/system") if not Path(d).is_symlink())
_EXEC_KEYS = ("ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")
#: where systemd looks for a program named without a directory
_EXEC_SEARCH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class Finding:
    """One problem a tool reported: ``FILE:LINE: tool: message`` (no LINE when the tool gave none)."""

    file: str
    line: int | None
    tool: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.tool}: {self.message}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sort_key(finding: Finding) -> tuple[str, int, str, str]:
    return finding.file, finding.line or 0, finding.tool, finding.message


# ------------------------------------------------------------------ prerequisites


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
    if not os.access(CHECKOV, os.X_OK):
        missing.append(f"checkov not found at {CHECKOV}: {_INSTALL}")
    if missing:
        raise PrerequisiteError(*missing)


def _cli_config(given: Path | str | None) -> Path:
    if given is None:
        given = os.environ.get("TF_CLI_CONFIG_FILE")
        if not given:
            raise PrerequisiteError(
                "no terraform CLI config: pass cli_config (generator.terraform.tfcli.write_cli_config "
                "writes it) or set TF_CLI_CONFIG_FILE"
            )
    path = Path(given)
    if not path.is_file():
        raise PrerequisiteError(f"terraform CLI config {path} does not exist: {_INSTALL}")
    return path.resolve()


# ------------------------------------------------------------------ running tools


class _Runs:
    """Tool processes, each in its own process group, with a timeout; all killed on the way out."""

    def __init__(self, timeouts: Mapping[str, float]) -> None:
        self.timeouts = timeouts
        self._live: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def run(
        self, tool: str, argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str] | None:
        """The finished run, or None when it outlived its budget (it is killed then)."""
        proc = subprocess.Popen(
            argv, cwd=cwd, env=dict(env) if env is not None else _env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
        )  # fmt: skip
        with self._lock:
            self._live.add(proc)
            if self._stopping:
                _kill(proc)
        try:
            stdout, stderr = proc.communicate(timeout=self.timeouts[tool])
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.communicate()
            return None
        finally:
            with self._lock:
                self._live.discard(proc)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            for proc in self._live:
                _kill(proc)


def _kill(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the tool and its children (terraform's provider)
    except (ProcessLookupError, PermissionError):
        pass


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # our path is not theirs
    env["LC_ALL"] = "C.UTF-8"  # shellcheck reads UTF-8 only under a UTF-8 locale; messages in English
    env.update(extra)
    return env


def _timed_out(file: str, tool: str, runs: _Runs) -> Finding:
    return Finding(file, None, tool, f"timed out after {runs.timeouts[tool]:g} s")


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


def _terraform_fmt(module: Path, show: Callable[[str], str], env: dict[str, str], runs: _Runs) -> list[Finding]:
    argv = ["terraform", "fmt", "-check", "-diff", "-recursive", "-no-color"]
    result = runs.run("terraform fmt", argv, cwd=module, env=env)
    if result is None:
        return [_timed_out(str(module), "terraform fmt", runs)]
    if result.returncode == 0:
        return []
    if result.returncode == 3:
        return _fmt_findings(result.stdout, show)
    return _terraform_text(result.stderr, show, str(module), "terraform fmt") or [
        Finding(str(module), None, "terraform fmt", f"exit {result.returncode}: {_one_line(result.stderr)[:300]}")
    ]


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
        found.append(Finding(file, line, "terraform validate", _one_line(text)))
    return found


def _terraform_validate(
    module: Path, show: Callable[[str], str], env: dict[str, str], scratch: Path, runs: _Runs
) -> list[Finding]:
    copy = _scratch_copy(module, scratch)
    env = {**env, "TF_DATA_DIR": str(copy / ".terraform")}  # never the user's TF_DATA_DIR
    # -backend=false: validate needs no state, and an S3 backend may not be reachable from here
    init = runs.run("terraform init", ["terraform", "init", "-backend=false", "-input=false", "-no-color"],
                    cwd=copy, env=env)  # fmt: skip
    if init is None:
        return [_timed_out(str(module), "terraform init", runs)]
    validate = runs.run("terraform validate", ["terraform", "validate", "-json", "-no-color"], cwd=copy, env=env)
    if validate is None:
        return [_timed_out(str(module), "terraform validate", runs)]
    found = _validate_findings(validate.stdout, show, str(module))
    if init.returncode != 0 and not found:
        return _terraform_text(init.stdout + init.stderr, show, str(module), "terraform init") or [
            Finding(str(module), None, "terraform init", f"exit {init.returncode}")
        ]
    if found is None:
        text = _one_line(validate.stdout + validate.stderr)[:300]
        return [Finding(str(module), None, "terraform validate", f"exit {validate.returncode}: {text}")]
    return found


# ------------------------------------------------------------------ scripts and units


def _shellcheck(script: WriteFile, scratch: Path, runs: _Runs) -> list[Finding]:
    handle, name = tempfile.mkstemp(prefix="script-", dir=scratch)  # documents may share names and paths
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(script.content)
    path = Path(name)
    result = runs.run("shellcheck", ["shellcheck", *SHELLCHECK_ARGS, "--format=json1", str(path)])
    doc = str(script.document)
    if result is None:
        return [_timed_out(doc, "shellcheck", runs)]
    try:
        comments = json.loads(result.stdout)["comments"]
    except (ValueError, KeyError, TypeError):
        return [Finding(doc, script.line, "shellcheck",
                        f"{script.path}: exit {result.returncode}: {_one_line(result.stderr)[:300]}")]  # fmt: skip
    found = []
    for c in comments:
        text = f"SC{c['code']} ({c['level']}): {c['message']}"
        line = script.document_line(c["line"])
        if line is None:
            found.append(Finding(doc, script.line, "shellcheck", f"{script.path} line {c['line']}: {text}"))
        else:
            found.append(Finding(doc, line, "shellcheck", text))
    return found


def _executables(unit_text: str) -> list[str]:
    """The programs a unit's Exec*= lines run (prefixes like ``-`` and ``+`` removed)."""
    programs = []
    for raw in unit_text.splitlines():
        key, sep, value = raw.strip().partition("=")
        if not sep or key.strip() not in _EXEC_KEYS:
            continue
        try:
            words = shlex.split(value.strip().lstrip("-@:+!"))
        except ValueError:
            continue  # systemd-analyze reports the line
        if words and "$" not in words[0] and "%" not in words[0]:
            programs.append(words[0])
    return programs


def _stage(document: UserData, root: Path) -> None:
    """Lay ``root`` out as the instance, as far as ``systemd-analyze verify`` looks at it.

    The document's ``write_files`` entries at their paths and modes (a unit's
    ExecStart= on a script the document installs without the x bit is a real
    finding); this machine's own system units (so ``sysinit.target`` and
    ``network-online.target`` exist, as on any systemd host); and an executable
    stub for every other program a unit runs (packages and downloads put those
    there at boot: a missing one here is noise, not a finding). Drop-ins
    (``kafka.service.d/*.conf``) are staged too, so they are checked with their
    unit when the user data installs that unit.
    """
    for directory in UNIT_SOURCES:
        if directory.is_dir() and not (root / directory.relative_to("/")).exists():
            shutil.copytree(directory, root / directory.relative_to("/"), symlinks=True)
    for entry in document.write_files:
        path = PurePosixPath(entry.path)
        if path.is_absolute() and ".." not in path.parts:
            _place(root / path.relative_to("/"), entry.content, entry.mode & 0o7777)
    for unit in document.units:
        for program in _executables(unit.content):
            candidates = [program] if program.startswith("/") else [f"{d}/{program}" for d in _EXEC_SEARCH]
            if not any((root / c.lstrip("/")).exists() for c in candidates):
                _place(root / candidates[0].lstrip("/"), "#!/bin/sh\n", 0o755)


def _place(target: Path, content: str, mode: int) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
        target.chmod(mode)
    except OSError:
        pass  # two entries in each other's way: cloud-init fails on it at boot too, not our finding to invent


_UNIT_LINE = re.compile(r"^(?P<file>/\S+?):(?P<line>\d+): (?P<message>.+)$")
_UNIT_NAMED = re.compile(r"^(?P<unit>[^\s/:]+): (?P<message>.+)$")


def _systemd_verify(document: UserData, scratch: Path, runs: _Runs) -> list[Finding]:
    root = Path(tempfile.mkdtemp(prefix="stage-", dir=scratch))
    _stage(document, root)
    units = [u for u in document.units if u.is_unit]
    # --root: units, their dependencies and the programs they run are looked up in the staged root;
    # --recursive-errors=no: a problem in one of this machine's own units is not the module's
    argv = ["systemd-analyze", "verify", f"--root={root}", "--man=no", "--recursive-errors=no", "--no-pager",
            *(u.path for u in units)]  # fmt: skip
    doc = str(document.path)
    result = runs.run("systemd-analyze", argv)
    if result is None:
        return [_timed_out(doc, "systemd-analyze", runs)]
    by_path = {str(root / u.path.lstrip("/")): u for u in document.units}
    by_name = {u.unit_name: u for u in units}
    found = []
    for text in (result.stdout + result.stderr).splitlines():
        if not text.strip():
            continue
        if (m := _UNIT_LINE.match(text)) and m["file"] in by_path:
            entry = by_path[m["file"]]
            line = entry.document_line(int(m["line"]))
            if line is None:
                found.append(Finding(doc, entry.line, "systemd-analyze", f"{entry.path}:{m['line']}: {m['message']}"))
            else:
                found.append(Finding(doc, line, "systemd-analyze", f"{entry.path}: {m['message']}"))
        elif (m := _UNIT_NAMED.match(text)) and m["unit"] in by_name:
            entry = by_name[m["unit"]]
            found.append(Finding(doc, entry.line, "systemd-analyze", f"{entry.path}: {m['message']}"))
        else:
            found.append(Finding(doc, None, "systemd-analyze", text.replace(str(root), "").strip()))
    if result.returncode != 0 and not found:
        found.append(Finding(doc, None, "systemd-analyze", f"exit {result.returncode}"))
    return found


# ------------------------------------------------------------------ cloud-init

_ERRORS = "Cloud config schema errors: "
_DEPRECATIONS = "Cloud config schema deprecations: "
_FORMAT_PATH = r"format-l\d+\.c\d+"


def _paths(node: object, prefix: str = "") -> Iterable[str]:
    """Every key path of a document as cloud-init names it: ``write_files.0.content``."""
    if isinstance(node, yaml.MappingNode):
        pairs = [(k.value, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
    elif isinstance(node, yaml.SequenceNode):
        pairs = [(str(i), v) for i, v in enumerate(node.value)]
    else:
        return
    for key, value in pairs:
        path = f"{prefix}{key}"
        yield path
        yield from _paths(value, f"{path}.")


def _schema_problems(text: str, document: UserData) -> list[tuple[str, str]]:
    """``[(path, message)]`` from cloud-init's ``path: message, path: message`` line.

    cloud-init joins the problems with ", ", which messages may contain too; a
    problem starts only where a key path of this very document (or a
    ``format-lN.cM`` position) follows.
    """
    known = sorted(set(_paths(document.node)), key=len, reverse=True)
    alternatives = "|".join([_FORMAT_PATH, *map(re.escape, known)])
    starts = list(re.finditer(rf"(?:^|, )({alternatives}): ", text))
    problems = []
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        problems.append((match[1], text[match.end():end]))
    if not problems and text.strip():
        problems.append(("", text))
    return problems


def _schema_line(path: str, document: UserData) -> int | None:
    if position := re.fullmatch(r"format-l(\d+)\.c\d+", path):
        return int(position[1])
    return document.line_of(path)


def _cloud_init(document: UserData, runs: _Runs) -> list[Finding]:
    doc = str(document.path)
    result = runs.run("cloud-init", ["cloud-init", "schema", "--config-file", str(document.path)])
    if result is None:
        return [_timed_out(doc, "cloud-init", runs)]
    found = []
    # cloud-init 22.4: "Valid cloud-config: FILE" on stdout when valid; otherwise "Error:" and
    # "Cloud config schema errors: ..." on stderr (then the deprecations again); deprecations
    # (empty when none) on stdout.
    errors = result.stderr.split("\n\n" + _DEPRECATIONS, 1)[0]
    if _ERRORS in errors:
        for path, message in _schema_problems(errors.split(_ERRORS, 1)[1].strip(), document):
            text = f"{path}: {_one_line(message)}" if path else _one_line(message)
            found.append(Finding(doc, _schema_line(path, document), "cloud-init", text))
    deprecations = result.stdout.split(_DEPRECATIONS, 1)[1] if _DEPRECATIONS in result.stdout else ""
    for path, message in _schema_problems(deprecations.split("\nValid cloud-config:", 1)[0].strip(), document):
        # a deprecation is the key's whole documentation, then what is deprecated: keep that last part
        last = re.sub(r"^DEPRECATED[:.]?\s*", "", [p for p in message.split("\n\n") if p.strip()][-1].strip())
        text = f"deprecated: {_one_line(last)}"
        found.append(Finding(doc, _schema_line(path, document), "cloud-init", f"{path}: {text}" if path else text))
    if not found and (result.returncode != 0 or "Valid cloud-config:" not in result.stdout):
        text = _one_line(result.stderr.replace("Error:", "", 1)) or f"exit {result.returncode}"
        found.append(Finding(doc, None, "cloud-init", text[:300]))
    return found


# ------------------------------------------------------------------ checkov


def checkov_argv(directory: Path) -> list[str]:
    """checkov on a module directory, a JSON report on stdout (not ``--quiet``: it leaves out parsing errors)."""
    return [str(CHECKOV), "-d", str(directory), "--framework", "terraform", "--skip-download", "-o", "json"]


def _checkov(module: Path, show: Callable[[str], str], runs: _Runs) -> list[Finding]:
    result = runs.run("checkov", checkov_argv(module), env=_env(**CHECKOV_ENV))
    if result is None:
        return [_timed_out(str(module), "checkov", runs)]
    try:
        report = json.loads(result.stdout)
    except ValueError:
        text = _one_line(result.stderr or result.stdout)[:300]
        return [Finding(str(module), None, "checkov", f"exit {result.returncode}: {text}")]
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
) -> list[Finding]:
    """Every static check on the module in ``directory``; the findings, sorted (empty: clean).

    ``cli_config`` is terraform's CLI config for the offline provider mirror
    (``generator.terraform.tfcli.write_cli_config`` writes it; default:
    ``$TF_CLI_CONFIG_FILE``). ``timeouts`` overrides :data:`DEFAULT_TIMEOUTS`.
    UserError (exit 2) for a directory that is not a module or a missing tool.
    """
    module = require_module(directory)
    require_tools()
    config = _cli_config(cli_config)
    runs = _Runs({**DEFAULT_TIMEOUTS, **(timeouts or {})})

    def show(name: str) -> str:  # a file the tool names relative to the module, as the user named the module
        return str(module / name)

    documents = userdata.load_all(module)
    tf_env = _env(TF_CLI_CONFIG_FILE=str(config), TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1")
    with tempfile.TemporaryDirectory(prefix="kafkanet-check-") as tmp:
        scratch = Path(tmp)
        # the slow ones first: checkov (seconds of imports) and terraform validate (the provider's schema)
        jobs: list[Callable[[], list[Finding]]] = [
            lambda: _checkov(module, show, runs),
            lambda: _terraform_validate(module, show, tf_env, scratch, runs),
            lambda: _terraform_fmt(module, show, tf_env, runs),
        ]
        for document in documents:
            jobs.append(lambda d=document: _cloud_init(d, runs))
            if any(u.is_unit for u in document.units):
                jobs.append(lambda d=document: _systemd_verify(d, scratch, runs))
            for script in document.scripts:
                jobs.append(lambda s=script: _shellcheck(s, scratch, runs))
        pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="kafkanet-check")
        try:
            futures = [pool.submit(job) for job in jobs]
            findings = [finding for future in futures for finding in future.result()]
        except BaseException:  # Ctrl-C, SIGTERM, a bug: no tool is left running
            runs.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return sorted(dict.fromkeys(findings), key=_sort_key)
