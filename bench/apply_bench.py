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
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KAFKANET_BUILD_ROOT", "/tmp/bench-build")

from applybench.cleanup import cleanup, left_behind, reap
from applybench.cycles import via_lifecycle, via_steps
from applybench.meter import (
    Meter,
    RunResult,
    probe_provider_start,
    shared_provider_from_records,
)
from applybench.report import print_report
from applybench.tflines import LineRecorder, critical_path

from generator.base.errors import KafkanetError
from generator.environment import lifecycle
from generator.localaws import moto_server
from generator.terraform import provider, tfcli
from generator.terraform.adapter import Terraform

SEED = ROOT / "environments" / "ttareungyi.yaml"


# ------------------------------------------------------------------ one run


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
                    deps = via_lifecycle(env, meter, result)
                else:
                    deps = via_steps(args, env, meter, result, self.tf_log)
                self._analyse(recorder, deps, result, "terraform apply", "terraform destroy")
            result.cycle_wall = time.perf_counter() - started
        except KafkanetError as exc:
            result.error = "; ".join(exc.problems)
        except KeyboardInterrupt:
            result.error = "interrupted"
            raise
        finally:
            cleanup(env, self._motos)
            result.left_behind = left_behind(env, meter, self._motos)
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
            reap(self._motos)  # lifecycle stops moto by pid: reap our (zombie) child

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
