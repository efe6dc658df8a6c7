"""Bench of `kafkanet e2e` on the local target: N cold runs, the time of each step, and the floor.

    .venv/bin/python bench/e2e_bench.py [--runs 3] [--spec FILE] [--tty] [--baseline DIR] [--json FILE] [-- E2E_ARGS...]

Each run copies the spec (default environments/ttareungyi.yaml) under a fresh
name ``e2eb-<hex>`` into a fresh temporary directory and runs the real command,
``python -m generator.cli e2e SPEC`` of this checkout, in a child process with
``KAFKANET_BUILD_ROOT`` pointing into that directory: a fresh build directory,
its own moto server, its own shared provider. "Cold": before a run the bench
checks that no process of an earlier run is left (each process a run starts
carries its ``KAFKANET_BUILD_ROOT`` in its environment, read from
/proc/PID/environ). The e2e is the command as users run it: generate, the module
check, apply, data plane, the integration suite, then a real ``terraform
destroy`` (no moto reset, no state deletion); the bench adds nothing to it.

Printed per run: wall time (the child process, start to exit), exit code, CPU
of the child and everything it reaped, the load average before and after (and
the cores), output line count (CI mode: a pipe, so the plain heartbeat lines;
``--tty``: a pseudo-terminal, 120 columns, so the live line; a count of
newlines), and every step's own timing from the e2e's summary line
(``e2e passed: generate 0.1 s, ...``). Then per step the median of the runs,
the median wall, and beside it the FLOOR: the provider's fixed waits on the
critical path of the module's real dependency graph (``terraform graph`` and
the planned values of a ``terraform plan`` against a moto server of the bench's
own; the wait per resource type is bench/applybench/floor.py's table, from
/work/shared/research/provider-waits.md), for apply and for destroy, so the
distance to it is visible. The floor is computed once, before the runs.

``--baseline DIR`` runs the e2e of another checkout too (e.g. ``git archive
main | tar -x -C DIR``, with DIR/.venv-checkov linked), alternating run by run
(baseline, this, baseline, this...: a drift of the machine's load hits both),
and prints both columns; the floor is this checkout's module's.

After each run: nothing of it may be left (a process with its build root, a
``kn_<env>_`` namespace); whatever is found is reported, stopped by pid, and
fails the bench (exit 1). A run that exits non-zero fails it too. Needs root
(the local target builds namespaces). Only 127.0.0.1 and the run's namespaces are used.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import resource
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))  # applybench/, also under python -P

from applybench.floor import Floor, floor, module_graph
from applybench.runner import bench_spec

SEED = ROOT / "environments" / "ttareungyi.yaml"
_SUMMARY = re.compile(r"^kafkanet: e2e (passed|FAILED|interrupted)(?: \(run [^)]*\))?: (.*)$")  # the run id since e2e stamps one
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STEP = re.compile(r"^(.+) (\d+(?:\.\d+)?) s$")
# a first local apply checks beside moto, init and plan: what of the check's time the apply waited for
_WAITED = re.compile(r"^kafkanet: module check: [\d.]+ s \(([\d.]+) s of it waited for")


@dataclass
class Run:
    env: str
    checkout: str = ""
    wall: float = 0.0
    rc: int | None = None
    cpu: float = 0.0
    load_start: list[float] = field(default_factory=list)
    load_end: list[float] = field(default_factory=list)
    lines: int = 0
    verdict: str = ""
    steps: list[tuple[str, float]] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)


def parse_summary(text: str) -> tuple[str, list[tuple[str, float]]]:
    """The e2e's last line -> (verdict, [(step, seconds)]); ("", []) when it is missing. A module
    check run beside the apply's start adds the step "module check: waited for" (its share on the path)."""
    waited = [float(m[1]) for line in text.splitlines() if (m := _WAITED.match(_ANSI.sub("", line).split("\r")[-1]))]
    verdict, steps = _summary(text)
    if waited:
        steps.append(("module check: waited for", waited[-1]))
    return verdict, steps


def _summary(text: str) -> tuple[str, list[tuple[str, float]]]:
    for line in reversed(text.splitlines()):
        found = _SUMMARY.match(_ANSI.sub("", line).split("\r")[-1].strip())
        if found:
            steps = []
            for part in found[2].split(", "):
                step = _STEP.match(part.strip())
                if step:
                    steps.append((step[1], float(step[2])))
            return found[1], steps
    return "", []


def ours(marker: str) -> dict[int, str]:
    """pid -> command of every process whose environment holds ``marker`` (the run's build root)."""
    found = {}
    needle = marker.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            if needle in environ.split(b"\0"):
                found[int(entry.name)] = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
    return found


def left_behind(env: str, marker: str) -> list[str]:
    from localvpc import netns
    from localvpc.render import netns_prefix

    left = [f"pid {pid} ({cmd.strip()}) still running" for pid, cmd in ours(marker).items()]
    for pid in ours(marker):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    names = netns.list_netns(netns_prefix(env))
    if names:
        from localvpc import plane

        left += [f"namespace {n} left" for n in names]
        plane.teardown(env)
    return left


def run_once(index: int, args: argparse.Namespace, extra: list[str], checkout: Path = ROOT) -> Run:
    name = f"e2eb-{secrets.token_hex(3)}"
    work = Path(tempfile.mkdtemp(prefix=f"kn_{name}_"))
    build_root = work / "build"
    marker = f"KAFKANET_BUILD_ROOT={build_root}"
    if ours(marker):
        raise SystemExit(f"run {index + 1}: processes of {build_root} exist before it started")
    spec = bench_spec(Path(args.spec), name, work)
    env = {**os.environ, "KAFKANET_BUILD_ROOT": str(build_root), "PYTHONPATH": str(checkout)}
    if not args.tty:
        env.pop("NO_COLOR", None)
    argv = [sys.executable, "-m", "generator.cli", "e2e", str(spec), *extra]
    result = Run(env=name, checkout=str(checkout), load_start=list(os.getloadavg()))
    print(f"run {index + 1}/{args.runs} of {checkout}: {name}, build root {build_root}, "
          f"{'pseudo-terminal' if args.tty else 'pipe (CI mode)'}", file=sys.stderr, flush=True)  # fmt: skip
    chunks: list[bytes] = []
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        if args.tty:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            proc = subprocess.Popen(argv, cwd=checkout, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
            os.close(slave)
            reader = threading.Thread(target=_drain, args=(master, chunks, args.echo), daemon=True)
        else:
            proc = subprocess.Popen(argv, cwd=checkout, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)  # fmt: skip
            reader = threading.Thread(target=_drain, args=(proc.stdout.fileno(), chunks, args.echo), daemon=True)
        reader.start()
        result.rc = proc.wait()
        result.wall = time.perf_counter() - started
        reader.join(timeout=5)
    finally:
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result.cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        result.load_end = list(os.getloadavg())
        result.left_behind = left_behind(name, marker)
        text = b"".join(chunks).decode(errors="replace")
        result.lines = text.count("\n")
        result.verdict, result.steps = parse_summary(text)
        result.tail = text.splitlines()[-15:]
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _drain(fd: int, chunks: list[bytes], echo: bool) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # a pty's master reads EIO once the child side is closed
            break
        if not data:
            break
        chunks.append(data)
        if echo:
            sys.stderr.buffer.write(data)
            sys.stderr.flush()


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def report(groups: dict[str, list[Run]], floors: list[Floor] | None, args: argparse.Namespace) -> None:
    runs = [r for g in groups.values() for r in g]
    print(f"\nkafkanet e2e bench: {len(runs)} cold run(s) of {Path(args.spec).name}, "
          f"{'terminal (pty, 120 columns)' if args.tty else 'CI mode (pipe)'}, nproc {os.cpu_count()}")  # fmt: skip
    for label, group in groups.items():
        for i, r in enumerate(group, 1):
            print(f"  {label} run {i} {r.env}: exit {r.rc} ({r.verdict or 'no summary line'}), wall {r.wall:.1f} s, "
                  f"CPU {r.cpu:.1f} s, {r.lines} output lines, load {_load(r.load_start)} -> {_load(r.load_end)}"
                  + (f"; LEFT BEHIND: {'; '.join(r.left_behind)}" if r.left_behind else "; nothing left behind"))  # fmt: skip
    names: list[str] = []
    for r in runs:
        names += [n for n, _ in r.steps if n not in names]
    width = max([len(n) for n in names] + [20])
    print(f"\n  {'step':<{width}} " + " ".join(f"{label + ' median':>16}   {'runs (s)':<18}" for label in groups))
    for n in names + ["e2e wall (process)"]:
        cells = []
        for group in groups.values():
            if n == "e2e wall (process)":
                vals: list[float | None] = [r.wall for r in group]
            else:
                vals = [next((s for m, s in r.steps if m == n), None) for r in group]
            got = [v for v in vals if v is not None]
            median = f"{statistics.median(got):.1f}" if got else "-"
            cells.append(f"{median:>16}   {' '.join('-' if v is None else f'{v:.1f}' for v in vals):<18}")
        print(f"  {n:<{width}} " + " ".join(cells))
    lines = {label: statistics.median([r.lines for r in group]) for label, group in groups.items()}
    print(f"  {'output lines':<{width}} " + " ".join(f"{lines[label]:>16g}   {'':<18}" for label in groups))
    if floors:
        total = sum(f.seconds for f in floors)
        print("\n  floor: the provider's fixed waits on the critical path of the module's graph")
        for f in floors:
            print(f"    {'apply  ' if f.phase == 'create' else 'destroy'} {f.describe()}")
        for label, group in groups.items():
            median = statistics.median([r.wall for r in group])
            print(f"    {label}: median e2e wall {median:.1f} s, {median - total:.1f} s above the {total:g} s of waits "
                  "(steps other than apply and destroy have no floor here)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spec", default=str(SEED), help="spec to copy (default: the seed)")
    parser.add_argument("--tty", action="store_true", help="run under a pseudo-terminal (the live line) instead of a pipe")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (it plans the module once, ~10 s)")
    parser.add_argument("--echo", action="store_true", help="show each run's output as it comes")
    parser.add_argument("--keep", action="store_true", help="keep each run's temporary directory (its logs)")
    parser.add_argument("--baseline", metavar="DIR", help="another checkout to run alternately with this one")
    parser.add_argument("--json", metavar="FILE", help="write the raw results as JSON")
    parser.add_argument("e2e_args", nargs="*", metavar="E2E_ARGS", help="after --: more arguments for kafkanet e2e")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the local target builds network namespaces: run the bench as root", file=sys.stderr)
        return 2
    floors = None
    if not args.no_floor:
        with tempfile.TemporaryDirectory(prefix="kn_floorspec_") as tmp:
            spec = bench_spec(Path(args.spec), f"e2ef-{secrets.token_hex(3)}", Path(tmp))
            graph = module_graph(spec)
        floors = [floor(graph, "create"), floor(graph, "destroy")]
    groups: dict[str, list[Run]] = {"baseline": [], "this": []} if args.baseline else {"this": []}
    for i in range(args.runs):
        if args.baseline:
            groups["baseline"].append(run_once(i, args, args.e2e_args, Path(args.baseline).resolve()))
        groups["this"].append(run_once(i, args, args.e2e_args))
    report(groups, floors, args)
    runs = [r for g in groups.values() for r in g]
    if args.json:
        Path(args.json).write_text(json.dumps({
            "spec": args.spec, "tty": args.tty, "nproc": os.cpu_count(),
            "runs": {label: [asdict(r) for r in group] for label, group in groups.items()},
            "floor": [asdict(f) for f in floors] if floors else None,
        }, indent=1))  # fmt: skip
    bad = [r for r in runs if r.rc != 0 or r.left_behind]
    for r in bad:
        print(f"\n{r.env}: exit {r.rc}; last lines:\n  " + "\n  ".join(r.tail), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
