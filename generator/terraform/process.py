"""The process runner under the terraform adapter: one command in its own process group, its lines teed, always stopped.

This module owns running a process the way terraform needs it
(:func:`run_process`): started in a new session so its whole group (terraform
and its provider plugins) can be signalled, stdout and stderr drained by pump
threads that keep every line and pass each on to a sink as it comes, a
timeout, and stopping on a timeout or Ctrl-C: SIGINT to the leader (once its
graph walk has begun: terraform loses an earlier one), a grace period to exit (waited for without reaping, so the group id cannot be reused),
then SIGKILL to the group. Nothing it starts outlives the call.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

LineSink = Callable[[str], None]

#: After a timeout or Ctrl-C terraform gets SIGINT (it stops in-flight work and
#: writes its state) and this long to exit before its process group is SIGKILLed.
DEFAULT_KILL_GRACE = 20.0

#: How long a SIGKILLed group may take to be gone before the call returns anyway.
GROUP_EXIT_WAIT = 5.0

#: terraform acts on an interrupt only while its graph walk runs: ``Context.Stop`` does nothing
#: before the walk has begun, and the walk's start resets the stop (hashicorp/terraform,
#: internal/terraform/context.go, ``Stop`` and ``acquireRun``). An interrupt that lands while
#: terraform starts up is lost: it applies everything, the grace runs out, and the SIGKILL lands
#: in the middle of creating resources that no state records (seen: three brokers left running,
#: and the VPC's deletion retrying DependencyViolation for minutes). So the SIGINT waits for the
#: first line of the walk (a resource's "Creating...", "Reading...", ...), at most this long.
WALK_WAIT = 10.0
_WALK_LINE = re.compile(r": (Creating|Destroying|Modifying|Reading|Refreshing state|Importing|Opening)\.\.\.")


@dataclass
class _Outcome:
    rc: int
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_exit(pid: int, timeout: float | None) -> bool:
    """Wait until ``pid`` (our child) exits, *without reaping it*; True if it did.

    While the leader is an unreaped zombie its pid (= the process group id)
    cannot be reused, so killing the group afterwards cannot hit a stranger.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: poll waitid instead
        return _poll_exit(pid, timeout)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(pidfd)


def _poll_exit(pid: int, timeout: float | None) -> bool:
    deadline = None if timeout is None else time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _pump(stream: IO[bytes], keep: list[str], sink: LineSink | None, lock: threading.Lock) -> None:
    """Keep every line and pass it on; keep draining even if the sink breaks,
    or terraform would block on a full pipe."""
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        keep.append(line)
        if sink is not None:
            with lock:
                try:
                    sink(line)
                except Exception:  # e.g. BrokenPipeError on a closed stderr
                    sink = None
    stream.close()


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    sink: LineSink | None,
    kill_grace: float = DEFAULT_KILL_GRACE,
) -> _Outcome:
    """Run ``argv`` in a new session, tee its lines to ``sink``, enforce ``timeout``.

    On timeout (or Ctrl-C) the leader gets SIGINT (once its graph walk has
    begun, see :data:`WALK_WAIT`), ``kill_grace`` seconds to exit, then the whole process group (terraform and its provider plugins) is
    SIGKILLed. Nothing started here outlives the call.
    """
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    pgid = proc.pid  # new session: the leader's pid is the group id
    out: list[str] = []
    err: list[str] = []
    lock = threading.Lock()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out, sink, lock), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, sink, lock), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    timed_out = False

    def walking() -> bool:
        return any(_WALK_LINE.search(line) for line in out)

    try:
        if not _wait_exit(proc.pid, timeout):
            timed_out = True
            _stop_group(proc.pid, pgid, kill_grace, walking)
    except BaseException:  # Ctrl-C: stop terraform the same way, then re-raise
        _stop_group(proc.pid, pgid, kill_grace, walking)
        raise
    finally:
        _signal_group(pgid, signal.SIGKILL)  # stragglers (e.g. an orphaned plugin)
        proc.wait()
        _wait_group_gone(pgid, GROUP_EXIT_WAIT)
        for pump in pumps:  # bounded: a process that left the group may hold a pipe
            pump.join(timeout=5)
    return _Outcome(
        rc=proc.returncode,
        stdout="\n".join(out) + ("\n" if out else ""),
        stderr="\n".join(err) + ("\n" if err else ""),
        duration=time.monotonic() - start,
        timed_out=timed_out,
    )


def _group_members_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it exited while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False  # only unreaped zombies (orphans whose reaper has not yet run)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """After the SIGKILL: wait until its members are gone, not merely signalled.

    SIGKILL is delivered asynchronously; a provider plugin with a few hundred
    MB mapped can take a moment to exit on a loaded machine, and "nothing
    outlives the call" should hold when the call returns.
    """
    deadline = time.monotonic() + timeout
    while _group_members_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _stop_group(pid: int, pgid: int, kill_grace: float, walking: Callable[[], bool] = lambda: True) -> None:
    try:
        deadline = time.monotonic() + min(kill_grace, WALK_WAIT)
        while not walking() and time.monotonic() < deadline:  # see WALK_WAIT
            if _wait_exit(pid, 0.05):
                break
        os.kill(pid, signal.SIGINT)  # terraform: "Interrupt received", saves state
    except ProcessLookupError:
        pass
    except KeyboardInterrupt:  # a second Ctrl-C while waiting for the walk: no more grace
        _signal_group(pgid, signal.SIGKILL)
        return
    try:
        _wait_exit(pid, kill_grace)
    except KeyboardInterrupt:  # a second Ctrl-C: no more grace
        pass
    _signal_group(pgid, signal.SIGKILL)
