"""Running the static checkers: one finding per problem, each tool in its own process group with a budget.

:class:`Finding` is what every checker returns (``FILE:LINE: tool: message``);
:class:`Runs` starts tools with a timeout each and kills them all (their
children included) on the way out; :func:`tool_env` is the environment they
run in. Used by :mod:`generator.module.check` and its checkers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


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


def one_line(text: str) -> str:
    return " ".join(text.split())


def sort_key(finding: Finding) -> tuple[str, int, str, str]:
    return finding.file, finding.line or 0, finding.tool, finding.message


# ------------------------------------------------------------------ prerequisites



class Runs:
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
            argv, cwd=cwd, env=dict(env) if env is not None else tool_env(), stdin=subprocess.DEVNULL,
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


def tool_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # our path is not theirs
    env["LC_ALL"] = "C.UTF-8"  # shellcheck reads UTF-8 only under a UTF-8 locale; messages in English
    env.update(extra)
    return env


def timed_out(file: str, tool: str, runs: Runs) -> Finding:
    return Finding(file, None, tool, f"timed out after {runs.timeouts[tool]:g} s")
