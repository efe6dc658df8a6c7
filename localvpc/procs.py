"""Running the plane's processes: bounded steps, background jobs and daemons, inside namespaces.

Owns the clean environment every process gets (:func:`safe_env`, ``SAFE_PATH``),
one-shot steps that must succeed (:func:`run_step`), configuration jobs started
together and awaited under one deadline (:func:`start_job`, :func:`finish_jobs`,
or :func:`collect_jobs` to report failures rather than raise), daemons started
in their own session and reaped later (:func:`spawn`, :func:`reap`), and the
argv that runs a command inside a namespace, for an instance also with its own
hostname and /etc files (:func:`in_netns`).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from localvpc.errors import PlaneInfraError

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STEP_TIMEOUT = 30.0  # one namespace's configuration

_children: dict[int, subprocess.Popen] = {}  # daemons this process started, for reaping
_children_lock = threading.Lock()


def safe_env() -> dict[str, str]:
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/root"}


def run_step(
    argv: Sequence[str], what: str, *, input: str | None = None, timeout: float = STEP_TIMEOUT,
    ok: Collection[int] = (0,),
) -> subprocess.CompletedProcess:
    """Run one step with the plane's safe PATH; PlaneInfraError on a timeout or an exit code not in ``ok``."""
    try:
        result = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, env=safe_env())
    except subprocess.TimeoutExpired:
        raise PlaneInfraError(f"local data plane: {what}: no answer in {timeout:.0f} s ({' '.join(argv[:6])} ...)") from None
    if result.returncode not in ok:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise PlaneInfraError(f"local data plane: {what} failed (exit {result.returncode})", *detail)
    return result


@dataclass
class Job:
    what: str
    proc: subprocess.Popen
    log: Path


def start_job(what: str, argv: list[str], log_path: Path) -> Job:
    """Start a bounded configuration step; its output goes to ``log_path``."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=safe_env())
    return Job(what, proc, log_path)


def finish_jobs(jobs: list[Job], timeout: float) -> None:
    """Wait for every job (all within ``timeout``); PlaneInfraError naming each that failed."""
    problems = collect_jobs(jobs, timeout)
    if problems:
        raise PlaneInfraError(*(f"local data plane: {p}" for p in problems))


def collect_jobs(jobs: list[Job], timeout: float) -> list[str]:
    """Wait for every job (all within ``timeout``, then killed); one line for each that failed."""
    problems = []
    deadline = time.monotonic() + timeout
    for job in jobs:
        try:
            job.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait()
            problems.append(f"{job.what}: no answer in {timeout:.0f} s")
            continue
        if job.proc.returncode != 0:
            tail = " | ".join(log_tail(job.log, 4))
            problems.append(f"{job.what} failed (exit {job.proc.returncode}): {tail}")
    return problems


def spawn(argv: list[str], log_path: Path, pass_fds: Sequence[int] = ()) -> subprocess.Popen:
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=safe_env(),
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
    with _children_lock:
        _children[proc.pid] = proc
    return proc


def reap() -> None:
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


INSTANCE_WRAPPER = (
    'echo "$0" > /proc/sys/kernel/hostname'
    ' && mount --bind "$1/hosts" /etc/hosts'
    ' && mount --bind "$1/resolv.conf" /etc/resolv.conf'
    ' && { [ ! -f "$1/mounts" ] || while read -r src dst; do mount --bind "$src" "$dst" || exit 1; done < "$1/mounts"; }'
    ' && shift && exec "$@"'
)


def in_netns(ns: str, argv: list[str], hostname: str | None = None, etc: Path | None = None) -> list[str]:
    """argv run in ``ns``; for an instance also in its own UTS and mount namespaces.

    The instance gets its AWS-style hostname and its own /etc/hosts and
    /etc/resolv.conf (bind mounts, seen only by its processes), and each
    ``SOURCE TARGET`` line of ``etc/mounts`` bound the same way (the CA bundles
    that trust the plane's CA, see :mod:`localvpc.ca`). Without the plane's
    resolver, resolv.conf names 127.0.0.1, so lookups fail at once instead of
    hanging.
    """
    if hostname is None:
        return ["ip", "netns", "exec", ns, *argv]
    return [
        "ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--propagation", "slave", "--",
        "/bin/sh", "-c", INSTANCE_WRAPPER, hostname, str(etc), *argv,
    ]  # fmt: skip


def log_tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []
