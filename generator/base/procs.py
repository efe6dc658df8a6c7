"""Small process helpers for the servers kafkanet leaves running between commands.

The moto server and the shared AWS provider each run in their own session and
are found again from pid records in the build directory, also after kafkanet
itself was killed. These helpers read and write those records and stop such a
process without ever signalling an unrelated one that reused its pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def poll(budget: float, check: Callable[[], bool], interval: float = 0.1) -> bool:
    """Call ``check`` until it is true or ``budget`` seconds pass; return the last answer."""
    deadline = time.monotonic() + budget
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    """The argv of a live, non-zombie ``pid``; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def terminate(
    pid: int, budget: float, proc: subprocess.Popen[bytes] | None = None, sig: int = signal.SIGTERM
) -> None:
    """Send ``sig`` to ``pid``, then SIGKILL its process group after ``budget`` seconds.

    The process must lead its own session (started with ``start_new_session``),
    so its group is its own: pgid == pid. ``proc`` is our Popen when we started
    it in this process (then it is reaped), None when found from a record.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(timeout=budget)
            return
        except subprocess.TimeoutExpired:
            pass
    elif poll(budget, lambda: cmdline(pid) is None):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc is not None:
        proc.wait()
    else:
        poll(5.0, lambda: cmdline(pid) is None)
