"""Bench of terraform apply/plan/destroy of the seed topology on the local target.

    .venv/bin/python bench/apply_bench.py [--runs N] [--via steps|lifecycle] [variants...] [--json FILE]

Each run copies the spec (default environments/ttareungyi.yaml) to a temporary
file named ``bench-<hex>``, builds under ``$KAFKANET_BUILD_ROOT`` (default
/tmp/bench-build), starts its own moto server on 127.0.0.1 and times, per step,
wall time, CPU time (terraform + its provider plugins, the moto server), the
host's busy cores and the load average:

    generate, moto start, terraform init, terraform plan (-out), terraform apply
    (of the saved plan), plan again (must show no changes), init + destroy
    (-refresh=false), leftover check, moto stop.

``--via steps`` (default) runs those commands itself through the adapter
(generator.terraform, built by generator.lifecycle.terraform_for) exactly as
``lifecycle.apply``/``lifecycle.destroy`` run them today, minus the local data
plane (bench/plane_bench.py times that), and takes variant flags to measure
one idea at a time. ``--via lifecycle`` calls ``lifecycle.apply``, ``plan`` and
``destroy`` themselves (data plane included; only --moto-env/--tf-env apply),
so it follows whatever lifecycle does.

From terraform's own lines ("Creating...", "Creation complete after Ns",
"Still creating...", "Destroying...") it builds a per-resource table with our
own timestamps (terraform rounds to seconds), and the observed critical path
through the dependency graph (dependencies from the state): for the resource
that finished last, the dependency that finished last before it started, and
so on, with the gap (terraform/provider scheduling) between each pair. Provider
plugin processes are sampled from /proc: terraform starts one per phase of a
command (schema, validate, plan, apply walks), each paying start-up and the
schema (~1-2 s CPU), and the walks that configure the provider pay for its
configuration too (~5 s CPU each with an ``endpoints`` block, see
--endpoint-env). One standalone start is probed with
``terraform providers schema -json`` (terraform's schema decoding included).

Variants (each alone, to compare with a plain run; --json keeps raw numbers):

  --parallelism N        terraform plan/apply/destroy -parallelism=N
  --apply-direct         one ``apply -auto-approve`` instead of plan -out + apply plan
  --destroy-refresh      destroy with refresh (lifecycle uses -refresh=false)
  --skip-destroy-init    no second ``terraform init`` before destroy
  --reattach             one provider process per run, started with -debug and
                         shared by every terraform command (TF_REATTACH_PROVIDERS)
  --moto-warmup          one EC2 call to moto in the background right after it starts
  --endpoint-env         drop the provider's endpoints block from the bench's copy of
                         providers.tf; the moto URL comes from AWS_ENDPOINT_URL[_EC2|_IAM|_STS]
                         (an endpoints block costs the provider ~5 s CPU per validate/walk)
  --no-endpoint-var      generated module unchanged, but aws_endpoint left null: no endpoints
                         block and no skip_* flags; the provider reaches moto through
                         AWS_ENDPOINT_URL[_EC2|_IAM|_STS] (STS GetCallerIdentity included)
  --moto-env K=V         environment of the moto server (repeatable)
  --tf-env K=V           environment of terraform (repeatable)
  --tf-log DIR           TF_LOG=DEBUG (--tf-log-level), one log file per step in DIR (slows it down)

Everything a run starts (moto, provider, terraform) is stopped and its state
removed at the end, also on failure or Ctrl-C. Only 127.0.0.1 is used.
``--via steps`` runs as any user; ``--via lifecycle`` needs root (the data plane).
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
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KAFKANET_BUILD_ROOT", "/tmp/bench-build")

from python_terraform import IsFlagged, IsNotFlagged

from generator import lifecycle, moto_server, tfcli
from generator.errors import KafkanetError
from generator.module import generate
from generator.terraform import Terraform, _var_args

SEED = ROOT / "environments" / "ttareungyi.yaml"
TICK = os.sysconf("SC_CLK_TCK")
PROVIDER_ADDR = "registry.terraform.io/hashicorp/aws"


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
    first_seen: float
    last_seen: float
    cpu: float


class ProviderSampler:
    """Samples provider plugin processes under our terraform children every ``interval``."""

    def __init__(self, extra_pids: set[int] | None = None, interval: float = 0.1) -> None:
        self.interval = interval
        self.extra = extra_pids or set()  # a reattached provider: ours, not terraform's
        self.seen: dict[int, ProviderProc] = {}
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._t0 = time.perf_counter()
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
            if int(f[1]) not in terraforms and pid not in self.extra:
                continue
            cpu = (int(f[11]) + int(f[12])) / TICK
            known = self.seen.get(pid)
            if known is None:
                self.seen[pid] = ProviderProc(pid, now, now, cpu)
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

    def begin(self, step: str) -> None:
        with self._lock:
            self.step, self.t0 = step, time.perf_counter()
            self.lines.setdefault(step, [])

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
    name: str
    wall: float
    tf_cpu: float  # terraform and its providers (reaped children), seconds
    provider_cpu: float  # of which provider plugin processes (sampled)
    provider_starts: int
    providers: list[dict[str, float]]
    moto_cpu: float
    host_busy_cores: float  # whole machine, average over the step
    load_start: float
    load_end: float
    ok: bool = True
    note: str = ""


class Meter:
    def __init__(self, recorder: LineRecorder, quiet: bool) -> None:
        self.recorder = recorder
        self.quiet = quiet
        self.records: list[StepRecord] = []
        self.moto_pid: int | None = None
        self.extra_provider_pids: set[int] = set()

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        if not self.quiet:
            print(f"  {name} ...", file=sys.stderr, flush=True)
        self.recorder.begin(name)
        load0 = os.getloadavg()[0]
        busy0, total0 = host_cpu()
        cpu0 = children_cpu()
        moto0 = proc_cpu(self.moto_pid) if self.moto_pid else 0.0
        extra0 = {pid: proc_cpu(pid) for pid in self.extra_provider_pids}
        rec = StepRecord(name, 0, 0, 0, 0, [], 0, 0, load0, 0)
        start = time.perf_counter()
        sampler = ProviderSampler(self.extra_provider_pids)
        try:
            with sampler:
                yield rec
        except BaseException as exc:
            rec.ok = False
            rec.note = rec.note or type(exc).__name__
            raise
        finally:
            rec.wall = time.perf_counter() - start
            busy1, total1 = host_cpu()
            rec.tf_cpu = children_cpu() - cpu0
            moto_pid = self.moto_pid
            rec.moto_cpu = (proc_cpu(moto_pid) - moto0) if moto_pid and _stat(moto_pid) else 0.0
            if moto0 == 0 and moto_pid:  # moto started within this step
                rec.moto_cpu = proc_cpu(moto_pid)
            provs = []
            for p in sampler.seen.values():
                cpu = p.cpu - extra0.get(p.pid, 0.0)
                provs.append({"pid": p.pid, "seen_from": round(p.first_seen, 2),
                              "seen_to": round(p.last_seen, 2), "cpu": round(cpu, 2)})
            rec.providers = provs
            rec.provider_starts = sum(1 for p in sampler.seen if p not in self.extra_provider_pids)
            rec.provider_cpu = sum(p["cpu"] for p in provs)
            if self.extra_provider_pids:  # reattached provider: not a child of terraform
                rec.tf_cpu += sum(p["cpu"] for p in provs if p["pid"] in self.extra_provider_pids)
            rec.host_busy_cores = (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)
            rec.load_end = os.getloadavg()[0]
            self.records.append(rec)
            if not self.quiet:
                print(f"  {name}: {rec.wall:.1f} s wall, {rec.tf_cpu:.1f} s tf CPU, "
                      f"{rec.provider_starts} provider start(s), load {rec.load_end:.2f}",
                      file=sys.stderr, flush=True)


# ---------------------------------------------------- a reattachable provider


class ReattachedProvider:
    """One provider process in -debug mode; terraform reattaches instead of starting its own."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        mirror = tfcli.find_mirror()
        binaries = sorted((mirror / PROVIDER_ADDR / tfcli.PROVIDER_VERSION / tfcli.provider_platform())
                          .glob("terraform-provider-aws_v*"))
        if not binaries:
            raise SystemExit("no provider binary in the mirror")
        # A custom CA bundle makes the provider's second ConfigureProvider in the same
        # process fail ("unable to add custom RootCAs HTTPClient, has no
        # WithTransportOptions"); moto is plain HTTP on 127.0.0.1 and needs none.
        env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
        self.log = workdir / "provider-debug.log"
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [str(binaries[0]), "-debug"], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.reattach = self._wait_reattach()

    def _wait_reattach(self, budget: float = 60.0) -> str:
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            m = re.search(r"TF_REATTACH_PROVIDERS='(\{.*?\})'", self.log.read_text(errors="replace"))
            if m:
                return m.group(1)
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"provider -debug did not print TF_REATTACH_PROVIDERS; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


# ------------------------------------------------------------------ one run


_ENDPOINTS_BLOCK = re.compile(r'\n  dynamic "endpoints" \{\n.*?\n  \}\n', re.DOTALL)


def drop_endpoints_block(path: Path) -> None:
    """--endpoint-env: the bench's own copy of providers.tf without the endpoints block
    (the skip_* flags still follow var.aws_endpoint); the provider then takes the moto
    URL from AWS_ENDPOINT_URL*, which terraform_for's environment carries."""
    text, n = _ENDPOINTS_BLOCK.subn("\n", path.read_text())
    if n != 1:
        raise SystemExit(f"{path}: no dynamic endpoints block to drop")
    path.write_text(text)


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
    leftovers: list[str] = field(default_factory=list)
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
        result = RunResult(env=name, steps=meter.records)
        self.provider: ReattachedProvider | None = None
        print(f"run {index + 1}/{args.runs}: environment {name}, build dir {env.build_dir}", file=sys.stderr, flush=True)
        try:
            if args.via == "lifecycle":
                self._via_lifecycle(env, meter, recorder, result)
            else:
                self._via_steps(env, meter, recorder, result)
        except KafkanetError as exc:
            result.error = "; ".join(exc.problems)
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        finally:
            if self.provider is not None:  # also when a step failed
                self.provider.stop()
                self.provider = None
            self._cleanup(env)
            shutil.rmtree(work, ignore_errors=True)
            if not args.keep_build:
                shutil.rmtree(env.build_dir, ignore_errors=True)
        return result

    # --------------------------------------------------------------- steps

    def _via_steps(self, env: lifecycle.Env, meter: Meter, recorder: LineRecorder, result: RunResult) -> None:
        args = self.args
        with meter.step("generate"):
            generate(env.loaded.path, env.build_dir)
        if args.endpoint_env:
            drop_endpoints_block(env.build_dir / "providers.tf")
        lifecycle.record_target(env)
        lifecycle._local_backend_override(env)
        with meter.step("moto start"), environ(self.moto_env):
            moto = moto_server.start(env.path(lifecycle.MOTO_DIR))
            meter.moto_pid = moto.pid
        if args.moto_warmup:  # moto imports its EC2 code and builds the region lazily: ~2.7 s
            threading.Thread(target=warm_up_moto, args=(env, moto), daemon=True).start()
        tf = lifecycle.terraform_for(env, moto, on_line=recorder)
        tf.extra_env.update(self.tf_env)
        if args.no_endpoint_var:
            tf.variables["aws_endpoint"] = None  # left at its default (null): no endpoints block, no skip_*
        if args.endpoint_env or args.no_endpoint_var:
            # The endpoint then comes only from the environment: make sure it is there,
            # for every service the module uses, or the provider would call real AWS.
            for service in ("", "_EC2", "_IAM", "_STS"):
                tf.extra_env[f"AWS_ENDPOINT_URL{service}"] = moto.url
            assert all(tf.environment().get(f"AWS_ENDPOINT_URL{s}") == moto.url for s in ("", "_EC2", "_IAM", "_STS"))
        if args.reattach:
            with meter.step("provider -debug start"):
                self.provider = ReattachedProvider(env.path(lifecycle.STATE_DIR), tf.environment())
            meter.extra_provider_pids.add(self.provider.proc.pid)
            tf.extra_env["TF_REATTACH_PROVIDERS"] = self.provider.reattach
        par = {"parallelism": args.parallelism} if args.parallelism else {}

        self.tf_log(tf, "init")
        with meter.step("terraform init"):
            tf.init()
        if args.apply_direct:
            self.tf_log(tf, "apply")
            with meter.step("terraform apply"):
                tf.run("apply", input=False, no_color=IsFlagged, auto_approve=True,
                       lock_timeout=tf.lock_timeout, var=_var_args(tf.variables), **par)
        else:
            self.tf_log(tf, "plan")
            with meter.step("terraform plan"):
                if par:
                    tf.run("plan", ok_codes=(0, 2), input=False, no_color=IsFlagged, detailed_exitcode=IsFlagged,
                           lock_timeout=tf.lock_timeout, out=lifecycle.PLAN_FILE, var=_var_args(tf.variables), **par)
                else:
                    tf.plan(out=lifecycle.PLAN_FILE)
            self.tf_log(tf, "apply")
            with meter.step("terraform apply"):
                if par:
                    tf.run("apply", lifecycle.PLAN_FILE, input=False, no_color=IsFlagged, auto_approve=True,
                           lock_timeout=tf.lock_timeout, **par)
                else:
                    tf.apply(lifecycle.PLAN_FILE)
            env.path(lifecycle.PLAN_FILE).unlink(missing_ok=True)
        deps = state_dependencies(env.path("terraform.tfstate"))
        self.tf_log(tf, "plan2")
        with meter.step("plan (no changes)") as rec:
            second = tf.plan()
            result.second_plan_changes = second.changes
            if second.changes:
                rec.note = "CHANGES PENDING"
        if not args.skip_destroy_init:
            self.tf_log(tf, "destroy-init")
            with meter.step("destroy init"):
                tf.init()
        self.tf_log(tf, "destroy")
        with meter.step("terraform destroy"):
            if par or args.destroy_refresh:
                tf.run("destroy", input=False, no_color=IsFlagged, force=IsNotFlagged, auto_approve=True,
                       refresh=None if args.destroy_refresh else False, lock_timeout=tf.lock_timeout,
                       var=_var_args(tf.variables), **par)
            else:
                tf.destroy(refresh=False)
        with meter.step("leftover check"):
            result.leftovers = lifecycle.leftovers(lifecycle.ec2_client(env, moto), env.name)
        with meter.step("moto stop") as rec:
            moto.stop()
        # moto was our child and is reaped here: its whole lifetime's CPU arrives at once
        rec.moto_cpu, rec.tf_cpu, rec.note = rec.tf_cpu, 0.0, "moto CPU: its whole lifetime"
        self._analyse(recorder, deps, result, "terraform apply", "terraform destroy")

    # ----------------------------------------------------------- lifecycle

    def _via_lifecycle(self, env: lifecycle.Env, meter: Meter, recorder: LineRecorder, result: RunResult) -> None:
        real_terraform_for = lifecycle.terraform_for
        real_ensure = moto_server.ensure_running
        tf_env = self.tf_env

        def terraform_for(e, moto, on_line=None):  # capture lines, add --tf-env
            tf = real_terraform_for(e, moto, on_line=recorder)
            tf.extra_env.update(tf_env)
            return tf

        def ensure_running(state_dir, **kw):
            with environ(self.moto_env):
                server = real_ensure(state_dir, **kw)
            meter.moto_pid = server.pid
            started.append(server)
            return server

        started: list[moto_server.MotoServer] = []

        class MeteredTimings(lifecycle.Timings):
            @contextlib.contextmanager
            def step(self, name, out=lifecycle.say):  # type: ignore[override]
                with meter.step(name), lifecycle.Timings.step(self, name, out=lambda _m: None):
                    yield

        lifecycle.terraform_for = terraform_for
        moto_server.ensure_running = ensure_running
        try:
            lifecycle.apply(env, timings=MeteredTimings())
            deps = state_dependencies(env.path("terraform.tfstate"))
            with meter.step("plan (no changes)") as rec:
                second = lifecycle.plan(env, generate_module=False)
                result.second_plan_changes = second.changes
                if second.changes:
                    rec.note = "CHANGES PENDING"
            lifecycle.destroy(env, timings=MeteredTimings())
        finally:
            lifecycle.terraform_for = real_terraform_for
            moto_server.ensure_running = real_ensure
            for server in started:  # destroy stopped it by pid: reap our (zombie) child
                if server._proc is not None:
                    server._proc.poll()
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
        """Whatever happened: no moto, namespace, state or records of this run left."""
        state = env.path(lifecycle.MOTO_DIR)
        if moto_server.find_running(state) is not None:
            try:
                lifecycle.destroy(env, timings=lifecycle.Timings())
            except (KafkanetError, OSError) as exc:
                print(f"cleanup: {exc}", file=sys.stderr)
        moto_server.stop(state)
        if os.geteuid() == 0:
            with contextlib.suppress(Exception):
                from localvpc import plane as localplane

                localplane.teardown(env.name)


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


def print_report(results: list[RunResult], probe: list[tuple[float, float]], args: argparse.Namespace) -> None:
    n = len(results)
    print(f"\n== steps: median of {n} run(s) (wall / CPU of terraform+providers / CPU of moto) ==")
    names: list[str] = []
    for r in results:
        for s in r.steps:
            if s.name not in names:
                names.append(s.name)
    print(f"{'step':<24}{'wall s':>8}{'tf CPU s':>10}{'prov CPU':>10}{'starts':>8}{'moto CPU':>10}{'host busy':>11}{'load1':>7}")
    for name in names:
        recs = [s for r in results for s in r.steps if s.name == name]
        print(f"{name:<24}{med([s.wall for s in recs]):8.1f}{med([s.tf_cpu for s in recs]):10.1f}"
              f"{med([s.provider_cpu for s in recs]):10.1f}{med([s.provider_starts for s in recs]):8.0f}"
              f"{med([s.moto_cpu for s in recs]):10.2f}{med([s.host_busy_cores for s in recs]):9.2f}/{os.cpu_count()}"
              f"{med([s.load_end for s in recs]):7.2f}" + (f"  {recs[0].note}" if any(s.note for s in recs) else ""))
    groups = {
        "apply (init+plan+apply)": ("terraform init", "terraform plan", "terraform apply", "provider -debug start"),
        "destroy (init+destroy)": ("destroy init", "terraform destroy"),
    }
    for label, members in groups.items():
        walls = [sum(s.wall for s in r.steps if s.name in members) for r in results]
        cpus = [sum(s.tf_cpu for s in r.steps if s.name in members) for r in results]
        print(f"{label:<24}{med(walls):8.1f}{med(cpus):10.1f}   (runs: {', '.join(f'{w:.1f}' for w in walls)})")

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

    print("\n== provider plugin processes (per step, run 1) ==")
    for s in results[0].steps:
        if s.providers:
            desc = ", ".join(f"pid {p['pid']} {p['seen_from']:.1f}-{p['seen_to']:.1f}s {p['cpu']:.1f}s CPU" for p in s.providers)
            print(f"{s.name:<24}{desc}")
    if probe:
        print(f"one provider start (terraform providers schema -json): wall {med([w for w, _ in probe]):.1f} s, "
              f"CPU {med([c for _, c in probe]):.1f} s (median of {len(probe)})")
    starts = med([sum(s.provider_starts for s in r.steps) for r in results])
    shared = " (+1 shared -debug provider per run)" if args.reattach else ""
    print(f"provider starts per apply+plan+destroy cycle: {starts:.0f}{shared}")

    for i, r in enumerate(results):
        flags = []
        if r.second_plan_changes:
            flags.append("second plan NOT clean")
        if r.leftovers:
            flags.append(f"leftovers: {', '.join(r.leftovers)}")
        if r.error:
            flags.append(f"error: {r.error}")
        if flags:
            print(f"run {i + 1} ({r.env}): " + "; ".join(flags))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--spec", default=str(SEED), help="spec to copy (default: the seed)")
    parser.add_argument("--via", choices=("steps", "lifecycle"), default="steps")
    parser.add_argument("--parallelism", type=int, default=0)
    parser.add_argument("--apply-direct", action="store_true")
    parser.add_argument("--destroy-refresh", action="store_true")
    parser.add_argument("--skip-destroy-init", action="store_true")
    parser.add_argument("--reattach", action="store_true")
    parser.add_argument("--moto-warmup", action="store_true")
    parser.add_argument("--endpoint-env", action="store_true")
    parser.add_argument("--no-endpoint-var", action="store_true")
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
    if args.via == "lifecycle" and os.geteuid() != 0:
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
    bad = any(r.error or r.second_plan_changes or r.leftovers for r in results)
    return 1 if bad else 0


def describe(args: argparse.Namespace) -> str:
    parts = []
    if args.parallelism:
        parts.append(f"-parallelism={args.parallelism}")
    if args.apply_direct:
        parts.append("apply-direct")
    if args.destroy_refresh:
        parts.append("destroy-refresh")
    if args.skip_destroy_init:
        parts.append("skip-destroy-init")
    if args.reattach:
        parts.append("reattach")
    if args.moto_warmup:
        parts.append("moto-warmup")
    if args.endpoint_env:
        parts.append("endpoint-env")
    if args.no_endpoint_var:
        parts.append("no-endpoint-var")
    parts += [f"moto:{kv}" for kv in args.moto_env] + [f"tf:{kv}" for kv in args.tf_env]
    return " ".join(parts) or "baseline (as lifecycle)"


if __name__ == "__main__":
    sys.exit(main())
