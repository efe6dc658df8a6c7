"""The checks of what user data installs: shellcheck on its scripts (a compile of its Python ones), ``systemd-analyze verify`` on its units, cloud-init's schema on each document.

Scripts and units are the ``write_files`` entries :mod:`generator.module.userdata`
finds; a line of one is reported as the user-data document's own line. Units
are verified in a staged root laid out as the instance (:func:`_stage`), so a
binary the target has and this machine lacks is not noise.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import yaml

from generator.module.toolrun import Finding, Runs, one_line, timed_out
from generator.module.userdata import UserData, WriteFile

SHELLCHECK_ARGS = ("--severity=style",)  # every level, style included
#: this machine's system units, copied into each staged root (/lib is a link to /usr/lib on Debian 12)
UNIT_SOURCES = tuple(Path(d) for d in ("/usr/lib/systemd/system", "/lib/systemd/system") if not Path(d).is_symlink())
_EXEC_KEYS = ("ExecCondition", "ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")
#: where systemd looks for a program named without a directory
_EXEC_SEARCH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


# ------------------------------------------------------------------ scripts and units


def shellcheck(script: WriteFile, scratch: Path, runs: Runs) -> list[Finding]:
    handle, name = tempfile.mkstemp(prefix="script-", dir=scratch)  # documents may share names and paths
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(script.content)
    path = Path(name)
    result = runs.run("shellcheck", ["shellcheck", *SHELLCHECK_ARGS, "--format=json1", str(path)])
    doc = str(script.document)
    if result is None:
        return [timed_out(doc, "shellcheck", runs)]
    try:
        comments = json.loads(result.stdout)["comments"]
    except (ValueError, KeyError, TypeError):
        return [Finding(doc, script.line, "shellcheck",
                        f"{script.path}: exit {result.returncode}: {one_line(result.stderr)[:300]}")]  # fmt: skip
    found = []
    for c in comments:
        text = f"SC{c['code']} ({c['level']}): {c['message']}"
        line = script.document_line(c["line"])
        if line is None:
            found.append(Finding(doc, script.line, "shellcheck", f"{script.path} line {c['line']}: {text}"))
        else:
            found.append(Finding(doc, line, "shellcheck", text))
    return found


def python_syntax(script: WriteFile) -> list[Finding]:
    """A Python script the user data installs must at least compile (the NAT pair's monitor)."""
    try:
        compile(script.content, script.path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = script.document_line(exc.lineno or 1) or script.line
        return [Finding(str(script.document), line, "python", f"{script.path}: {exc.msg}")]
    return []


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


def systemd_verify(document: UserData, scratch: Path, runs: Runs) -> list[Finding]:
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
        return [timed_out(doc, "systemd-analyze", runs)]
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


def cloud_init(document: UserData, runs: Runs) -> list[Finding]:
    doc = str(document.path)
    result = runs.run("cloud-init", ["cloud-init", "schema", "--config-file", str(document.path)])
    if result is None:
        return [timed_out(doc, "cloud-init", runs)]
    found = []
    # cloud-init 22.4: "Valid cloud-config: FILE" on stdout when valid; otherwise "Error:" and
    # "Cloud config schema errors: ..." on stderr (then the deprecations again); deprecations
    # (empty when none) on stdout.
    errors = result.stderr.split("\n\n" + _DEPRECATIONS, 1)[0]
    if _ERRORS in errors:
        for path, message in _schema_problems(errors.split(_ERRORS, 1)[1].strip(), document):
            text = f"{path}: {one_line(message)}" if path else one_line(message)
            found.append(Finding(doc, _schema_line(path, document), "cloud-init", text))
    deprecations = result.stdout.split(_DEPRECATIONS, 1)[1] if _DEPRECATIONS in result.stdout else ""
    for path, message in _schema_problems(deprecations.split("\nValid cloud-config:", 1)[0].strip(), document):
        # a deprecation is the key's whole documentation, then what is deprecated: keep that last part
        last = re.sub(r"^DEPRECATED[:.]?\s*", "", [p for p in message.split("\n\n") if p.strip()][-1].strip())
        text = f"deprecated: {one_line(last)}"
        found.append(Finding(doc, _schema_line(path, document), "cloud-init", f"{path}: {text}" if path else text))
    if not found and (result.returncode != 0 or "Valid cloud-config:" not in result.stdout):
        text = one_line(result.stderr.replace("Error:", "", 1)) or f"exit {result.returncode}"
        found.append(Finding(doc, None, "cloud-init", text[:300]))
    return found
