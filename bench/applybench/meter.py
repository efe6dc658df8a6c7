"""What a step and a run record, and how one step is metered.

Owns the records (:class:`StepRecord` per step, :class:`RunResult` per run,
:class:`SharedProvider` per kafkanet command's provider) and the accounting that
fills a step's: :meth:`Meter.step` takes wall time, the CPU of reaped children,
the live shared providers' and moto's CPU from /proc, the host's busy cores and
the load average at its start and end, and gives a provider reaped within the
step only that step's share of its lifetime. Also the standalone probe of one
provider start as terraform pays it (:func:`probe_provider_start`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged

from generator.base.procs import read_int
from generator.terraform import provider, tfcli
from generator.terraform.adapter import Terraform

from .procfs import ProviderSampler, children_cpu, host_cpu, proc_cpu, proc_stat
from .tflines import LineRecorder


@dataclass
class StepRecord:
    name: str  # "parent / name" for a sub-step
    parent: str = ""  # the enclosing step; sub-steps are not added again in totals
    wall: float = 0.0
    tf_cpu: float = 0.0  # terraform, its plugins and the shared provider, seconds
    provider_cpu: float = 0.0  # of which provider processes (sampled)
    provider_starts: int = 0  # provider processes terraform started itself
    shared_starts: int = 0  # shared provider processes started (generator/terraform/provider.py)
    providers: list[dict[str, Any]] = field(default_factory=list)
    moto_cpu: float = 0.0
    host_busy_cores: float = 0.0  # whole machine, average over the step
    load_start: float = 0.0
    load_end: float = 0.0
    ok: bool = True
    note: str = ""


@dataclass
class RunResult:
    env: str
    steps: list[StepRecord]
    apply_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    destroy_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    apply_path: list[dict[str, Any]] = field(default_factory=list)
    destroy_path: list[dict[str, Any]] = field(default_factory=list)
    second_plan_changes: bool | None = None
    leftovers: list[str] = field(default_factory=list)  # resources still in moto after destroy
    left_behind: list[str] = field(default_factory=list)  # processes, sockets, namespaces after the run
    shared_providers: list[dict[str, Any]] = field(default_factory=list)  # pid, socket, command of each
    cycle_wall: float | None = None  # first step's start to the last one's end
    load_start: list[float] = field(default_factory=list)  # 1/5/15-minute load average
    load_end: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class SharedProvider:
    """A provider generator/terraform/provider.py started for one command, as its records gave it."""

    pid: int
    socket: str | None  # the unix socket terraform reattaches through
    command: str


def shared_provider_from_records(state_dir: Path, reattach: str, command: str) -> SharedProvider:
    """The running shared provider: pid from its record, checked against the reattach JSON."""
    pid = read_int(state_dir / provider.PID_FILE)
    (config,) = json.loads(reattach).values()
    if pid is None or config.get("Pid") != pid:
        raise RuntimeError(f"{state_dir}: provider record says pid {pid}, reattach JSON says {config.get('Pid')}")
    addr = config.get("Addr") or {}
    return SharedProvider(pid, addr.get("String") if addr.get("Network") == "unix" else None, command)


class Meter:
    def __init__(self, recorder: LineRecorder, quiet: bool) -> None:
        self.recorder = recorder
        self.quiet = quiet
        self.records: list[StepRecord] = []
        self.moto_pid: int | None = None
        self.shared: dict[int, SharedProvider] = {}  # every shared provider of the run, by pid
        self.command = ""  # the kafkanet command being run: names the provider steps
        self._open: list[StepRecord] = []

    def register_shared(self, found: SharedProvider) -> None:
        self.shared[found.pid] = found
        for rec in self._open:
            rec.shared_starts += 1

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        parent = self._open[-1].name if self._open else ""
        full = f"{parent} / {name}" if parent else name
        if not self.quiet:
            print(f"  {full} ...", file=sys.stderr, flush=True)
        previous = self.recorder.begin(full)
        load0 = os.getloadavg()[0]
        busy0, total0 = host_cpu()
        cpu0 = children_cpu()
        moto0 = proc_cpu(self.moto_pid) if self.moto_pid else 0.0
        shared0 = {pid: proc_cpu(pid) for pid in self.shared if proc_stat(pid) is not None}
        rec = StepRecord(full, parent=parent, load_start=load0)
        self._open.append(rec)
        start = time.perf_counter()
        sampler = ProviderSampler(self.shared)
        try:
            with sampler:
                yield rec
        except BaseException as exc:
            rec.ok = False
            rec.note = rec.note or type(exc).__name__
            raise
        finally:
            rec.wall = time.perf_counter() - start
            self._open.pop()
            self.recorder.restore(previous)
            busy1, total1 = host_cpu()
            reaped = children_cpu() - cpu0
            moto_pid = self.moto_pid
            rec.moto_cpu = (proc_cpu(moto_pid) - moto0) if moto_pid and proc_stat(moto_pid) else 0.0
            if moto0 == 0 and moto_pid:  # moto started within this step
                rec.moto_cpu = proc_cpu(moto_pid)
            shared_cpu = 0.0
            provs = []
            for p in sampler.seen.values():
                cpu = p.cpu
                if p.kind == "shared":
                    before = shared0.get(p.pid, 0.0)
                    if proc_stat(p.pid) is not None:
                        cpu = proc_cpu(p.pid)
                    cpu -= before
                provs.append({"pid": p.pid, "kind": p.kind, "seen_from": round(p.first_seen, 2),
                              "seen_to": round(p.last_seen, 2), "cpu": round(cpu, 2)})
            for pid, before in shared0.items():
                if proc_stat(pid) is None:
                    # Reaped in this step: the reap brought its whole lifetime into
                    # ``reaped``; what it used before this step belongs to earlier steps.
                    reaped -= before
            for pid in self.shared:
                if proc_stat(pid) is not None:  # alive: its share of this step, from /proc
                    shared_cpu += proc_cpu(pid) - shared0.get(pid, 0.0)
            rec.tf_cpu = reaped + shared_cpu
            rec.providers = provs
            rec.provider_starts = sum(1 for p in sampler.seen.values() if p.kind == "terraform")
            rec.provider_cpu = sum(p["cpu"] for p in provs)
            rec.host_busy_cores = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
            rec.load_end = os.getloadavg()[0]
            self.records.append(rec)
            if not self.quiet:
                print(f"  {full}: {rec.wall:.1f} s wall, {rec.tf_cpu:.1f} s tf CPU, "
                      f"{rec.provider_starts}+{rec.shared_starts} provider start(s), load {rec.load_end:.2f}",
                      file=sys.stderr, flush=True)


def probe_provider_start(count: int) -> list[tuple[float, float]]:
    """Wall and CPU of ``terraform providers schema -json`` (one provider start) in a scratch module."""
    out = []
    with tempfile.TemporaryDirectory(prefix="kn_probe_") as tmp:
        work = Path(tmp)
        (work / "main.tf").write_text(
            'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws", version = "5.100.0" }\n  }\n}\n'
        )
        tf = Terraform(work, cli_config=tfcli.write_cli_config(work / "terraform.rc"), on_line=None)
        tf.init()
        for _ in range(count):
            cpu0, t0 = children_cpu(), time.perf_counter()
            tf.run("providers schema", quiet=True, json=IsFlagged, no_color=IsFlagged)
            out.append((time.perf_counter() - t0, children_cpu() - cpu0))
    return out
