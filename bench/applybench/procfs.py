"""Readings of the processes' and the host's CPU, and the sampler of provider processes.

Owns everything the bench reads from /proc and getrusage: one process's own CPU
(``/proc/PID/stat``), the host's busy jiffies (``/proc/stat``), the CPU of reaped
children (RUSAGE_CHILDREN), and :class:`ProviderSampler`, the thread that scans
/proc every 0.1 s for provider plugins, those terraform started under us and
the shared ones generator/terraform/provider.py started. It knows nothing of
steps or runs: :mod:`applybench.meter` turns these readings into per-step figures.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int | str) -> tuple[str, list[str]] | None:
    """(comm, fields after comm) of /proc/PID/stat; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")
    return head.partition("(")[2], tail.split()


def proc_cpu(pid: int) -> float:
    """utime+stime of a live process (its own, not its children's), seconds."""
    st = proc_stat(pid)
    if st is None:
        return 0.0
    fields = st[1]
    return (int(fields[11]) + int(fields[12])) / TICK


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


@dataclass
class ProviderProc:
    pid: int
    kind: str  # "terraform": a plugin terraform started; "shared": generator/terraform/provider.py's
    first_seen: float
    last_seen: float
    cpu: float


class ProviderSampler:
    """Samples provider plugin processes every ``interval``: those under our terraform
    children, and the shared ones whose pids are in ``shared`` (read live: a provider
    registered while the step runs is sampled from then on)."""

    def __init__(self, shared: Mapping[int, Any], interval: float = 0.1) -> None:
        self.interval = interval
        self.shared = shared
        self.seen: dict[int, ProviderProc] = {}
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._t0 = time.perf_counter()
        self._sample()  # a shared provider stopped within the first interval is seen too
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        me = os.getpid()
        procs = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                st = proc_stat(entry.name)
                if st is not None:
                    procs[int(entry.name)] = st
        terraforms = {pid for pid, (comm, f) in procs.items() if comm == "terraform" and int(f[1]) == me}
        now = time.perf_counter() - self._t0
        for pid, (comm, f) in procs.items():
            if not comm.startswith("terraform-prov"):
                continue
            if pid in self.shared:
                kind = "shared"
            elif int(f[1]) in terraforms:
                kind = "terraform"
            else:
                continue
            cpu = (int(f[11]) + int(f[12])) / TICK
            known = self.seen.get(pid)
            if known is None:
                self.seen[pid] = ProviderProc(pid, kind, now, now, cpu)
            else:
                known.last_seen, known.cpu = now, cpu
