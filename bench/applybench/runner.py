"""One run of the bench: a copy of the spec, the hooks into lifecycle, the cycle, the analysis.

Owns a run from start to end: :class:`Runner` copies the spec under a fresh
``bench-<hex>`` name, opens its environment, puts the bench's hooks into
lifecycle for the run (terraform's lines to the recorder and --tf-env on every
terraform, --moto-env on moto, the shared provider's start and stop as steps of
their own), drives the cycle the way --via says, analyses the apply's and the
destroy's lines into per-resource events and critical paths, and always hands
the run to :mod:`applybench.cleanup` at the end.
"""

from __future__ import annotations

import argparse
import contextlib
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

from generator.base.errors import KafkanetError
from generator.environment import session
from generator.localaws import moto_server
from generator.terraform import provider
from generator.terraform.adapter import Terraform

from .cleanup import cleanup, left_behind, reap
from .cycles import via_lifecycle, via_steps
from .meter import Meter, RunResult, shared_provider_from_records
from .tflines import LineRecorder, critical_path


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
        env = session.open_env(str(spec), "local")
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
        real_terraform_for = session.terraform_for
        real_ensure = moto_server.ensure_running
        real_shared = provider.shared
        runner = self

        def terraform_for(e: session.Env, moto: moto_server.MotoServer | None, on_line: Callable[[str], None] | None = None) -> Terraform:
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

        session.terraform_for = terraform_for
        moto_server.ensure_running = ensure_running
        provider.shared = shared
        try:
            yield
        finally:
            session.terraform_for = real_terraform_for
            moto_server.ensure_running = real_ensure
            provider.shared = real_shared
            reap(self._motos)  # lifecycle stops moto by pid: reap our (zombie) child

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
