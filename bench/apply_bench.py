"""Bench of a local-target cycle of the seed topology: apply, plan again, destroy.

    .venv/bin/python bench/apply_bench.py [--runs N] [--via steps|lifecycle] [variants...] [--json FILE]

Each run copies the spec (default environments/ttareungyi.yaml) to a temporary
file named ``bench-<hex>``, builds under ``$KAFKANET_BUILD_ROOT`` (default
/tmp/bench-build), starts its own moto server on 127.0.0.1 and times, per step,
wall time, CPU time (terraform, the AWS provider, the moto server), the host's
busy cores and the load average.

``--via steps`` (default) runs through the adapter (generator.terraform.adapter, built by
``lifecycle.terraform_for``) what the three kafkanet commands of a cycle run on
the local target, minus the data plane (bench/plane_bench.py times that):

    apply     generate, moto start, provider start, terraform init, terraform apply
              (one ``apply -auto-approve``, no saved plan), inventory (terraform
              output), provider stop
    plan      the whole command as one step "plan (no changes)", with its sub-steps
              provider start, terraform init, terraform plan (must show no changes),
              provider stop
    destroy   provider start, destroy init, terraform destroy (-refresh=false),
              provider stop, leftover check, moto stop

Every terraform run of one command reattaches (TF_REATTACH_PROVIDERS) to one AWS
provider process in debug mode, started and stopped by generator/terraform/provider.py
through ``lifecycle.terraform_session``, exactly as lifecycle does; "provider
start" and "provider stop" are steps of their own. terraform reaches moto through
its environment alone (``MotoServer.env()``: AWS_ENDPOINT_URL and the EC2, STS and
IAM spellings): the module has no endpoint setting. ``--via lifecycle`` calls
``lifecycle.apply``, ``plan`` and ``destroy`` themselves (data plane included;
only --moto-env and --tf-env apply), so it follows whatever lifecycle does; it
needs root. Its steps are lifecycle's own (terraform destroy includes its init).

CPU: terraform and the plugins it starts are counted when we reap them
(RUSAGE_CHILDREN). The shared provider is our own child and lives across
steps: its pid comes from its record (``.kafkanet/provider/provider.pid``,
checked against the Pid in the reattach JSON), it is read from /proc/PID/stat at
each step's start and end, and in the step that reaps it (provider stop) its
lifetime total, which arrives with the reap, is replaced by that step's share.
Provider processes are sampled from /proc every 0.1 s; "starts" counts those
terraform launched itself (none while the shared one serves) + shared ones (one
per kafkanet command). One standalone start, as terraform pays it when it starts
the provider itself, is probed with ``terraform providers schema -json``
(terraform's schema decoding included).

From terraform's own lines ("Creating...", "Creation complete after Ns",
"Still creating...", "Destroying...") it builds a per-resource table with our
own timestamps (terraform rounds to seconds), and the observed critical path
through the dependency graph (dependencies from the state): for the resource
that finished last, the dependency that finished last before it started, and
so on, with the gap (terraform/provider scheduling) between each pair.

Findings (2026-11-25, seed, 2 cores; table in bench/README.md): before 00d06dd
terraform started 12 provider processes per cycle, each paying start-up and
the schema, plus the provider's configuration with an endpoints block on every
walk; now a cycle starts 3 (one per command) and terraform none. Median
cycle (--via lifecycle) 118.6 -> 85.9 s wall and 65.6 -> 25.4 s CPU. init and
output dropped from ~0.7 to ~0.1 s CPU. What remains of apply is nearly all its
critical path through the resources, ~42 s in whole multiples of 10 s (vpc,
then instance, then volume attachment; moto answers at once, so most likely the
provider's state waiters polling), with 3-5 s before the first resource;
destroy is ~20.5 s of such waits plus 4-7 s.

Variants of --via steps (each alone, to compare with a plain run; --json keeps raw numbers):

  --parallelism N        terraform apply/plan/destroy -parallelism=N
  --destroy-refresh      destroy with refresh (lifecycle uses -refresh=false)
  --skip-destroy-init    no terraform init before destroy (lifecycle runs one: destroy is
                         its own command)
  --moto-warmup          one EC2 call to moto in the background right after it starts
  --tf-log DIR           TF_LOG=DEBUG (--tf-log-level), one terraform log per step in DIR, and
                         the shared provider's own log per command (slows it down)

and of both modes:

  --moto-env K=V         environment of the moto server (repeatable)
  --tf-env K=V           environment of terraform and of the shared provider (repeatable)

Gone since the local target changed (00d06dd): --apply-direct (local apply is one
``apply -auto-approve``), --reattach (the shared provider is how lifecycle works),
--endpoint-env and --no-endpoint-var (the module has no endpoints block and no
aws_endpoint variable left to drop).

Everything a run starts (moto, the shared providers and their /tmp/plugin*
sockets, terraform, the data plane's namespaces) is stopped and removed at the
end, also on failure or Ctrl-C; then the run checks that none of it is left
(a leftover is reported, removed and fails the run). Only 127.0.0.1 is used.
``--via steps`` builds no namespaces and needs no root; ``--via lifecycle`` needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KAFKANET_BUILD_ROOT", "/tmp/bench-build")

from python_terraform import IsFlagged, IsNotFlagged

from generator.base.errors import KafkanetError
from generator.base.procs import cmdline, read_int, terminate
from generator.environment import lifecycle
from generator.localaws import moto_server
from generator.module.generate import generate
from generator.terraform import provider, tfcli
from generator.terraform.adapter import Terraform

SEED = ROOT / "environments" / "ttareungyi.yaml"
TICK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- /proc probes


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """(comm, fields after comm) of /proc/PID/stat; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, tail = text.rpartition(")")
    return head.partition("(")[2], tail.split()


def proc_cpu(pid: int) -> float:
    """utime+stime of a live process (its own, not its children's), seconds."""
    st = _stat(pid)
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
                st = _stat(entry.name)
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


# ------------------------------------------------------------ terraform's lines

_EVENT = re.compile(
    r"^(?P<addr>\S+): (?P<what>Creating|Destroying|Modifying|Reading|Refreshing state|"
    r"Creation complete|Destruction complete|Modifications complete|Read complete|"
    r"Still creating|Still destroying|Still modifying|Still reading)"
    r"(?:\.\.\.| after (?P<after>[0-9hms]+))"
)
_START = {"Creating": "create", "Destroying": "destroy", "Modifying": "update", "Reading": "read"}
_END = {"Creation complete": "create", "Destruction complete": "destroy",
        "Modifications complete": "update", "Read complete": "read"}


def tf_seconds(text: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+)([hms])", text):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


@dataclass
class ResourceEvent:
    addr: str
    action: str
    start: float | None = None  # seconds since the command's step began (our clock)
    end: float | None = None
    tf_reported: float | None = None  # terraform's "after Ns"
    stills: int = 0

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


class LineRecorder:
    """Receives terraform's lines (adapter ``on_line``) and stamps them."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.step = "?"
        self.t0 = time.perf_counter()
        self.lines: dict[str, list[tuple[float, str]]] = {}
        self._lock = threading.Lock()

    def begin(self, step: str) -> tuple[str, float]:
        """Stamp lines as ``step``'s from now on; returns what was current, for :meth:`restore`."""
        with self._lock:
            previous = (self.step, self.t0)
            self.step, self.t0 = step, time.perf_counter()
            self.lines.setdefault(step, [])
        return previous

    def restore(self, previous: tuple[str, float]) -> None:
        """Back to the enclosing step when a sub-step ends."""
        with self._lock:
            self.step, self.t0 = previous

    def __call__(self, line: str) -> None:
        now = time.perf_counter() - self.t0
        with self._lock:
            self.lines.setdefault(self.step, []).append((now, line))
        if self.echo:
            print(f"    [{self.step} +{now:5.1f}s] {line}", file=sys.stderr, flush=True)

    def events(self, step: str) -> dict[str, ResourceEvent]:
        out: dict[str, ResourceEvent] = {}
        for t, line in self.lines.get(step, []):
            m = _EVENT.match(line)
            if m is None:
                continue
            addr, what = m.group("addr"), m.group("what")
            if what in _START:
                out[addr] = ResourceEvent(addr, _START[what], start=t)
            elif what in _END:
                ev = out.setdefault(addr, ResourceEvent(addr, _END[what]))
                ev.end, ev.tf_reported = t, tf_seconds(m.group("after") or "")
            elif what.startswith("Still") and addr in out:
                out[addr].stills += 1
        return out


# --------------------------------------------------------------- dependencies


def _instance_addr(res: dict[str, Any], inst: dict[str, Any]) -> str:
    base = f"{res['type']}.{res['name']}"
    if res.get("mode") == "data":
        base = "data." + base
    if res.get("module"):
        base = f"{res['module']}.{base}"
    if "index_key" in inst:
        key = inst["index_key"]
        base += f"[{json.dumps(key)}]"
    return base


def state_dependencies(state_path: Path) -> dict[str, set[str]]:
    """instance address -> instance addresses it depends on (from the state file)."""
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    by_resource: dict[str, list[str]] = {}
    raw: dict[str, list[str]] = {}
    for res in state.get("resources", []):
        res_addr = f"{'data.' if res.get('mode') == 'data' else ''}{res['type']}.{res['name']}"
        for inst in res.get("instances", []):
            addr = _instance_addr(res, inst)
            by_resource.setdefault(res_addr, []).append(addr)
            raw[addr] = inst.get("dependencies", [])
    return {addr: {i for d in deps for i in by_resource.get(d, [d])} for addr, deps in raw.items()}


def _index_key(addr: str) -> str | None:
    return addr[addr.index("[") :] if addr.endswith("]") and "[" in addr else None


def critical_path(events: dict[str, ResourceEvent], deps: dict[str, set[str]], reverse: bool) -> list[tuple[ResourceEvent, float]]:
    """Observed critical path, last resource first: [(event, gap before it started)].

    ``reverse`` for destroy: X is destroyed after everything that depends on X.
    """
    done = {a: e for a, e in events.items() if e.end is not None and e.start is not None}
    if not done:
        return []
    preds: dict[str, set[str]] = {a: set() for a in done}
    for addr, ds in deps.items():
        for d in ds:
            if reverse and d in preds and addr in done:
                preds[d].add(addr)
            elif not reverse and addr in preds and d in done:
                preds[addr].add(d)
    current = max(done.values(), key=lambda e: e.end or 0.0)
    path: list[tuple[ResourceEvent, float]] = []
    while True:
        before = [done[p] for p in preds.get(current.addr, ()) if (done[p].end or 0) <= (current.start or 0) + 0.5]
        if not before:
            path.append((current, current.start or 0.0))  # gap = time since the command began
            return path
        # State dependencies are per resource, not per instance: prefer the dependency
        # instance with the same key (aws_instance.broker["b-1"] for its attachment["b-1"]).
        key = _index_key(current.addr)
        same = [e for e in before if key is not None and _index_key(e.addr) == key]
        prev = max(same or before, key=lambda e: e.end or 0.0)
        path.append((current, (current.start or 0.0) - (prev.end or 0.0)))
        current = prev


# ------------------------------------------------------------------ metering


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
        shared0 = {pid: proc_cpu(pid) for pid in self.shared if _stat(pid) is not None}
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
            rec.moto_cpu = (proc_cpu(moto_pid) - moto0) if moto_pid and _stat(moto_pid) else 0.0
            if moto0 == 0 and moto_pid:  # moto started within this step
                rec.moto_cpu = proc_cpu(moto_pid)
            shared_cpu = 0.0
            provs = []
            for p in sampler.seen.values():
                cpu = p.cpu
                if p.kind == "shared":
                    before = shared0.get(p.pid, 0.0)
                    if _stat(p.pid) is not None:
                        cpu = proc_cpu(p.pid)
                    cpu -= before
                provs.append({"pid": p.pid, "kind": p.kind, "seen_from": round(p.first_seen, 2),
                              "seen_to": round(p.last_seen, 2), "cpu": round(cpu, 2)})
            for pid, before in shared0.items():
                if _stat(pid) is None:
                    # Reaped in this step: the reap brought its whole lifetime into
                    # ``reaped``; what it used before this step belongs to earlier steps.
                    reaped -= before
            for pid in self.shared:
                if _stat(pid) is not None:  # alive: its share of this step, from /proc
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


# ------------------------------------------------------------------ one run


def warm_up_moto(env: lifecycle.Env, moto: moto_server.MotoServer) -> None:
    """One EC2 call, so moto's first-request cost overlaps terraform init and provider start."""
    with contextlib.suppress(Exception):
        lifecycle.ec2_client(env, moto).describe_availability_zones()


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


def _kv(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        out[name] = value
    return out


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_spec(source: Path, name: str, workdir: Path) -> Path:
    text = source.read_text()
    text, n = re.subn(r"(?m)^name:\s*\S+", f"name: {name}", text, count=1)
    if n != 1:
        raise SystemExit(f"{source}: no top-level name: line to replace")
    path = workdir / f"{name}.yaml"
    path.write_text(text)
    return path


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.moto_env = _kv(args.moto_env)
        self.tf_env = _kv(args.tf_env)
        self.run_id = ""
        self._motos: list[moto_server.MotoServer] = []

    def tf_log(self, tf: Terraform, step: str) -> None:
        if self.args.tf_log:
            Path(self.args.tf_log).mkdir(parents=True, exist_ok=True)
            tf.extra_env["TF_LOG"] = self.args.tf_log_level
            tf.extra_env["TF_LOG_PATH"] = str(Path(self.args.tf_log).resolve() / f"{self.run_id}-{step.replace(' ', '_')}.log")

    def run(self, index: int) -> RunResult:
        args = self.args
        name = f"bench-{secrets.token_hex(3)}"
        self.run_id = f"run{index + 1}-{name}"
        work = Path(tempfile.mkdtemp(prefix=f"kn_{name}_"))
        spec = bench_spec(Path(args.spec), name, work)
        env = lifecycle.open_env(str(spec), "local")
        recorder = LineRecorder(echo=args.verbose)
        meter = Meter(recorder, quiet=args.quiet)
        result = RunResult(env=name, steps=meter.records, load_start=list(os.getloadavg()))
        self._motos = []
        print(f"run {index + 1}/{args.runs}: environment {name}, build dir {env.build_dir}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            with self._instrumented(meter, recorder):
                if args.via == "lifecycle":
                    self._via_lifecycle(env, meter, recorder, result)
                else:
                    self._via_steps(env, meter, recorder, result)
            result.cycle_wall = time.perf_counter() - started
        except KafkanetError as exc:
            result.error = "; ".join(exc.problems)
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        finally:
            self._cleanup(env)
            result.left_behind = self._left_behind(env, meter)
            result.shared_providers = [asdict(found) for found in meter.shared.values()]
            result.load_end = list(os.getloadavg())
            shutil.rmtree(work, ignore_errors=True)
            if not args.keep_build:
                shutil.rmtree(env.build_dir, ignore_errors=True)
        return result

    @contextlib.contextmanager
    def _instrumented(self, meter: Meter, recorder: LineRecorder) -> Iterator[None]:
        """What lifecycle runs, seen by the bench: terraform's lines and --tf-env on every
        terraform (and so on the shared provider, started with terraform's environment),
        --moto-env on moto, and the shared provider's start and stop as steps of their own."""
        real_terraform_for = lifecycle.terraform_for
        real_ensure = moto_server.ensure_running
        real_shared = provider.shared
        runner = self

        def terraform_for(e: lifecycle.Env, moto: moto_server.MotoServer | None, on_line: Callable[[str], None] | None = None) -> Terraform:
            tf = real_terraform_for(e, moto, on_line=recorder)
            tf.extra_env.update(runner.tf_env)
            if runner.args.tf_log:  # the shared provider logs to its own provider.log
                tf.extra_env["TF_LOG"] = runner.args.tf_log_level
            return tf

        def ensure_running(state_dir: Path | str, **kw: object) -> moto_server.MotoServer:
            with environ(runner.moto_env):
                server = real_ensure(state_dir, **kw)
            meter.moto_pid = server.pid
            runner._motos.append(server)
            return server

        @contextlib.contextmanager
        def shared(state_dir: Path, env: Mapping[str, str]) -> Iterator[str | None]:
            command = meter.command
            with contextlib.ExitStack() as stack:
                with meter.step(f"provider start ({command})"):
                    reattach = stack.enter_context(real_shared(state_dir, env))
                    if reattach is not None:  # None: packed mirror, terraform starts its own
                        meter.register_shared(shared_provider_from_records(state_dir, reattach, command))
                try:
                    yield reattach
                finally:
                    with meter.step(f"provider stop ({command})"):
                        stack.close()
                    if runner.args.tf_log and (state_dir / provider.LOG_FILE).exists():
                        shutil.copy(state_dir / provider.LOG_FILE,
                                    Path(runner.args.tf_log) / f"{runner.run_id}-provider-{command}.log")

        lifecycle.terraform_for = terraform_for
        moto_server.ensure_running = ensure_running
        provider.shared = shared
        try:
            yield
        finally:
            lifecycle.terraform_for = real_terraform_for
            moto_server.ensure_running = real_ensure
            provider.shared = real_shared
            for server in self._motos:  # lifecycle stops moto by pid: reap our (zombie) child
                if server._proc is not None:
                    server._proc.poll()

    # --------------------------------------------------------------- steps

    def _via_steps(self, env: lifecycle.Env, meter: Meter, recorder: LineRecorder, result: RunResult) -> None:
        args = self.args
        # kafkanet apply
        meter.command = "apply"
        with meter.step("generate"):
            generate(env.loaded.path, env.build_dir)
        lifecycle.record_target(env)
        lifecycle._local_backend_override(env)
        with meter.step("moto start"):
            moto = lifecycle._moto_for(env, start=True)
        assert moto is not None
        if args.moto_warmup:  # moto imports its EC2 code and builds the region lazily: ~2.7 s
            threading.Thread(target=warm_up_moto, args=(env, moto), daemon=True).start()
        with lifecycle.terraform_session(env, moto) as tf:
            self.tf_log(tf, "init")
            with meter.step("terraform init"):
                tf.init()
            self.tf_log(tf, "apply")
            with meter.step("terraform apply"):
                self._apply(tf)
            self.tf_log(tf, "output")
            with meter.step("inventory"):
                tf.outputs()
        deps = state_dependencies(env.path("terraform.tfstate"))

        # kafkanet plan (no generate): a command of its own, so its own provider and init
        meter.command = "plan"
        with meter.step("plan (no changes)") as rec:
            lifecycle.check_target(env)
            lifecycle._local_backend_override(env)
            with lifecycle.terraform_session(env, lifecycle._moto_for(env, start=True)) as tf:
                self.tf_log(tf, "plan2-init")
                with meter.step("terraform init"):
                    tf.init()
                self.tf_log(tf, "plan2")
                with meter.step("terraform plan"):
                    result.second_plan_changes = self._plan(tf)
            if result.second_plan_changes:
                rec.note = "CHANGES PENDING"

        # kafkanet destroy (minus the data plane teardown)
        meter.command = "destroy"
        with lifecycle.terraform_session(env, moto) as tf:
            if not args.skip_destroy_init:
                self.tf_log(tf, "destroy-init")
                with meter.step("destroy init"):
                    tf.init()
            self.tf_log(tf, "destroy")
            with meter.step("terraform destroy"):
                self._destroy(tf)
        with meter.step("leftover check"):
            result.leftovers = lifecycle.leftovers(lifecycle.ec2_client(env, moto), env.name)
        with meter.step("moto stop") as rec:
            moto.stop()
        # moto was our child and is reaped here: its whole lifetime's CPU arrives at once
        rec.moto_cpu, rec.tf_cpu, rec.note = rec.tf_cpu, 0.0, "moto CPU: its whole lifetime"
        self._analyse(recorder, deps, result, "terraform apply", "terraform destroy")

    def _apply(self, tf: Terraform) -> None:
        if not self.args.parallelism:
            tf.apply()  # what lifecycle runs
            return
        tf.run("apply", input=False, no_color=IsFlagged, auto_approve=True, lock_timeout=tf.lock_timeout,
               parallelism=self.args.parallelism)

    def _plan(self, tf: Terraform) -> bool:
        """Whether the plan has changes."""
        if not self.args.parallelism:
            return tf.plan().changes
        result = tf.run("plan", ok_codes=(0, 2), input=False, no_color=IsFlagged, detailed_exitcode=IsFlagged,
                        lock_timeout=tf.lock_timeout, parallelism=self.args.parallelism)
        return result.rc == 2

    def _destroy(self, tf: Terraform) -> None:
        args = self.args
        if not (args.parallelism or args.destroy_refresh):
            tf.destroy(refresh=False)  # what lifecycle runs
            return
        par = {"parallelism": args.parallelism} if args.parallelism else {}
        tf.run("destroy", input=False, no_color=IsFlagged, force=IsNotFlagged, auto_approve=True,
               refresh=None if args.destroy_refresh else False, lock_timeout=tf.lock_timeout, **par)

    # ----------------------------------------------------------- lifecycle

    def _via_lifecycle(self, env: lifecycle.Env, meter: Meter, recorder: LineRecorder, result: RunResult) -> None:
        class MeteredTimings(lifecycle.Timings):
            @contextlib.contextmanager
            def step(self, name: str, out: Callable[[str], None] = lifecycle.say) -> Iterator[None]:
                with meter.step(name), super().step(name, out=lambda _m: None):
                    yield

        meter.command = "apply"
        lifecycle.apply(env, timings=MeteredTimings())
        deps = state_dependencies(env.path("terraform.tfstate"))
        meter.command = "plan"
        real_timings = lifecycle.Timings
        with meter.step("plan (no changes)") as rec:
            lifecycle.Timings = MeteredTimings  # plan makes its own Timings: meter its steps too
            try:
                second = lifecycle.plan(env, generate_module=False)
            finally:
                lifecycle.Timings = real_timings
            result.second_plan_changes = second.changes
            if second.changes:
                rec.note = "CHANGES PENDING"
        meter.command = "destroy"
        lifecycle.destroy(env, timings=MeteredTimings())
        self._analyse(recorder, deps, result, "terraform apply", "terraform destroy")

    # ------------------------------------------------------------- analysis

    @staticmethod
    def _analyse(recorder: LineRecorder, deps: dict[str, set[str]], result: RunResult, apply_step: str, destroy_step: str) -> None:
        for step, events_attr, path_attr, reverse in (
            (apply_step, "apply_events", "apply_path", False),
            (destroy_step, "destroy_events", "destroy_path", True),
        ):
            events = recorder.events(step)
            setattr(result, events_attr, {a: asdict(e) for a, e in events.items()})
            path = critical_path(events, deps, reverse)
            setattr(result, path_attr, [
                {"addr": e.addr, "start": e.start, "end": e.end, "duration": e.duration, "gap": gap}
                for e, gap in reversed(path)
            ])

    def _cleanup(self, env: lifecycle.Env) -> None:
        """Whatever happened: no moto, provider, namespace, state or records of this run left."""
        state = env.path(lifecycle.MOTO_DIR)
        try:
            running = moto_server.find_running(state) is not None
        except KafkanetError as exc:  # running but not answering: stopped below
            print(f"cleanup: {exc}", file=sys.stderr)
            running = False
        if running:
            try:
                lifecycle.destroy(env, timings=lifecycle.Timings())
            except (KafkanetError, OSError) as exc:
                print(f"cleanup: {exc}", file=sys.stderr)
        provider.stop_recorded(env.path(lifecycle.PROVIDER_DIR))
        moto_server.stop(state)
        for server in self._motos:
            if server._proc is not None:
                server._proc.poll()
        if os.geteuid() == 0:
            with contextlib.suppress(Exception):
                from localvpc import plane as localplane

                localplane.teardown(env.name)

    def _left_behind(self, env: lifecycle.Env, meter: Meter) -> list[str]:
        """What of this run still exists after the cleanup; each is reported, then removed."""
        from localvpc import netns
        from localvpc.render import netns_prefix

        left = []
        for found in meter.shared.values():
            argv = cmdline(found.pid)
            if argv and Path(argv[0]).name.startswith("terraform-provider-") and "-debug" in argv:
                left.append(f"shared provider pid {found.pid} ({found.command}) still running")
                terminate(found.pid, provider.STOP_BUDGET, sig=signal.SIGINT)
            if found.socket and os.path.exists(found.socket):
                left.append(f"provider socket {found.socket} ({found.command}) left")
                with contextlib.suppress(OSError):
                    os.unlink(found.socket)
        for server in self._motos:
            if cmdline(server.pid) is not None:
                left.append(f"moto pid {server.pid} still running")
                server.stop()
        left += [f"namespace {name} left" for name in netns.list_netns(netns_prefix(env.name))]
        return left


# ----------------------------------------------------------------- reporting


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


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def step_names(results: list[RunResult]) -> list[str]:
    """Step names in the order they ran, each sub-step right after its enclosing step."""
    top: list[str] = []
    subs: dict[str, list[str]] = {}
    for r in results:
        for s in r.steps:
            group = subs.setdefault(s.parent, []) if s.parent else top
            if s.name not in group:
                group.append(s.name)
    out: list[str] = []

    def add(name: str) -> None:
        out.append(name)
        for sub in subs.get(name, []):
            add(sub)

    for name in top:
        add(name)
    return out


# Sums of steps (top-level names; a name a run does not have counts 0).
GROUPS = {
    "apply: terraform part": ("provider start (apply)", "terraform init", "terraform plan", "terraform apply",
                              "inventory", "provider stop (apply)"),
    "destroy: terraform part": ("provider start (destroy)", "destroy init", "terraform destroy",
                                "provider stop (destroy)"),
}


def print_report(results: list[RunResult], probe: list[tuple[float, float]], args: argparse.Namespace) -> None:
    n = len(results)
    print(f"\n== steps: median of {n} run(s) (wall / CPU of terraform+providers / CPU of moto) ==")
    print("   starts: provider processes terraform started + shared ones (generator/terraform/provider.py)")
    print(f"{'step':<44}{'wall s':>8}{'tf CPU s':>10}{'prov CPU':>10}{'starts':>8}{'moto CPU':>10}{'host busy':>11}{'load1':>7}")
    for name in step_names(results):
        recs = [s for r in results for s in r.steps if s.name == name]
        label = ("  " * name.count(" / ")) + name.rpartition(" / ")[2]
        starts = f"{med([s.provider_starts for s in recs]):.0f}+{med([s.shared_starts for s in recs]):.0f}"
        print(f"{label:<44}{med([s.wall for s in recs]):8.1f}{med([s.tf_cpu for s in recs]):10.1f}"
              f"{med([s.provider_cpu for s in recs]):10.1f}{starts:>8}"
              f"{med([s.moto_cpu for s in recs]):10.2f}{med([s.host_busy_cores for s in recs]):9.2f}/{os.cpu_count()}"
              f"{med([s.load_end for s in recs]):7.2f}" + (f"  {recs[0].note}" if any(s.note for s in recs) else ""))
    print("(indented: sub-steps of the step above, already inside its figures)")
    for label, members in GROUPS.items():
        walls = [sum(s.wall for s in r.steps if s.name in members) for r in results]
        cpus = [sum(s.tf_cpu for s in r.steps if s.name in members) for r in results]
        print(f"{label:<44}{med(walls):8.1f}{med(cpus):10.1f}   (runs: {', '.join(f'{w:.1f}' for w in walls)})")
    walls = [sum(s.wall for s in r.steps if not s.parent) for r in results]
    cpus = [sum(s.tf_cpu + s.moto_cpu for s in r.steps if not s.parent) for r in results]
    print(f"{'cycle: sum of steps (CPU incl. moto)':<44}{med(walls):8.1f}{med(cpus):10.1f}   "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls)})")
    clocks = [r.cycle_wall for r in results if r.cycle_wall is not None]
    if clocks:
        print(f"{'cycle: wall clock':<44}{med(clocks):8.1f}   (runs: {', '.join(f'{w:.1f}' for w in clocks)})")

    for title, attr, path_attr in (("apply", "apply_events", "apply_path"), ("destroy", "destroy_events", "destroy_path")):
        addrs = sorted({a for r in results for a in getattr(r, attr)},
                       key=lambda a: med([getattr(r, attr)[a]["start"] or 0 for r in results if a in getattr(r, attr)]))
        if not addrs:
            continue
        print(f"\n== {title}: per resource (median over runs; times from the command's start, our clock) ==")
        print(f"{'resource':<46}{'start':>7}{'dur s':>7}{'tf says':>8}{'stills':>7}")
        for a in addrs:
            evs = [getattr(r, attr)[a] for r in results if a in getattr(r, attr)]
            durs = [e["end"] - e["start"] for e in evs if e["end"] is not None and e["start"] is not None]
            print(f"{a:<46}{med([e['start'] or 0 for e in evs]):7.1f}{med(durs):7.1f}"
                  f"{med([e['tf_reported'] or 0 for e in evs]):8.0f}{med([e['stills'] for e in evs]):7.0f}")
        for i, r in enumerate(results):
            path = getattr(r, path_attr)
            if not path:
                continue
            busy = sum(p["duration"] or 0 for p in path)
            gaps = sum(p["gap"] for p in path)
            step = next((s for s in r.steps if s.name == f"terraform {title}"), None)
            tail = (step.wall - (path[-1]["end"] or 0)) if step else float("nan")
            print(f"critical path, run {i + 1} ({busy:.1f} s in resources, {gaps:.1f} s before/between them, "
                  f"{tail:.1f} s after the last one):")
            for p in path:
                print(f"   +{p['gap']:5.1f} gap  {p['addr']:<44} {p['start']:6.1f} -> {p['end']:6.1f}  ({p['duration']:.1f} s)")

    print("\n== provider processes (per step, run 1) ==")
    for s in results[0].steps:
        if s.providers:
            desc = ", ".join(f"pid {p['pid']} {p['kind']} {p['seen_from']:.1f}-{p['seen_to']:.1f}s {p['cpu']:.1f}s CPU"
                             for p in s.providers)
            print(f"{s.name:<44}{desc}")
    if probe:
        print(f"one provider start as terraform pays it (terraform providers schema -json): wall "
              f"{med([w for w, _ in probe]):.1f} s, CPU {med([c for _, c in probe]):.1f} s (median of {len(probe)})")
    by_terraform = med([sum(s.provider_starts for s in r.steps if not s.parent) for r in results])
    shared = med([sum(s.shared_starts for s in r.steps if not s.parent) for r in results])
    print(f"provider process starts per apply+plan+destroy cycle: {by_terraform:.0f} by terraform + {shared:.0f} shared")

    for i, r in enumerate(results):
        flags = []
        if r.second_plan_changes:
            flags.append("second plan NOT clean")
        if r.leftovers:
            flags.append(f"leftovers: {', '.join(r.leftovers)}")
        if r.left_behind:
            flags.append(f"left behind (removed now): {', '.join(r.left_behind)}")
        if r.error:
            flags.append(f"error: {r.error}")
        if flags:
            print(f"run {i + 1} ({r.env}): " + "; ".join(flags))


STEPS_ONLY = ("parallelism", "destroy_refresh", "skip_destroy_init", "moto_warmup", "tf_log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--spec", default=str(SEED), help="spec to copy (default: the seed)")
    parser.add_argument("--via", choices=("steps", "lifecycle"), default="steps")
    parser.add_argument("--parallelism", type=int, default=0)
    parser.add_argument("--destroy-refresh", action="store_true")
    parser.add_argument("--skip-destroy-init", action="store_true")
    parser.add_argument("--moto-warmup", action="store_true")
    parser.add_argument("--moto-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--tf-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--tf-log", metavar="DIR")
    parser.add_argument("--tf-log-level", default="DEBUG", help="TF_LOG level with --tf-log (TRACE shows every provider RPC)")
    parser.add_argument("--probe", type=int, default=1, help="standalone provider starts to time (0: none)")
    parser.add_argument("--json", metavar="FILE", help="write raw results as JSON")
    parser.add_argument("--label", default="", help="label kept in the JSON")
    parser.add_argument("--keep-build", action="store_true", help="keep the build dir (state is removed anyway)")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo terraform's lines")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    if args.via == "lifecycle":
        given = [f"--{name.replace('_', '-')}" for name in STEPS_ONLY if getattr(args, name)]
        if given:
            print(f"{', '.join(given)}: only with --via steps (lifecycle runs what it runs)", file=sys.stderr)
            return 2
        if os.geteuid() != 0:
            print("--via lifecycle builds the local data plane and needs root", file=sys.stderr)
            return 2
    tfcli.require_terraform()
    runner = Runner(args)
    results = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    for i in range(args.runs):
        results.append(runner.run(i))
    probe = []
    if args.probe:
        try:
            probe = probe_provider_start(args.probe)
        except KafkanetError as exc:
            print(f"provider start probe failed: {exc}", file=sys.stderr)
    print(f"\nkafkanet apply bench: {args.runs} run(s) via {args.via}, "
          f"variant: {args.label or describe(args)}; load avg before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores, "
          f"{time.perf_counter() - started:.0f} s in all")
    print_report(results, probe, args)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "label": args.label or describe(args), "args": vars(args), "probe": probe,
            "runs": [asdict(r) for r in results],
        }, indent=1))
    bad = any(r.error or r.second_plan_changes or r.leftovers or r.left_behind for r in results)
    return 1 if bad else 0


def describe(args: argparse.Namespace) -> str:
    parts = []
    if args.parallelism:
        parts.append(f"-parallelism={args.parallelism}")
    if args.destroy_refresh:
        parts.append("destroy-refresh")
    if args.skip_destroy_init:
        parts.append("skip-destroy-init")
    if args.moto_warmup:
        parts.append("moto-warmup")
    parts += [f"moto:{kv}" for kv in args.moto_env] + [f"tf:{kv}" for kv in args.tf_env]
    return " ".join(parts) or "baseline (as lifecycle)"


if __name__ == "__main__":
    sys.exit(main())
