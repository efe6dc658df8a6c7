"""The two ways of driving one apply, plan, destroy cycle: ``--via steps`` and ``--via lifecycle``.

Owns what a cycle runs and how it is cut into steps. :func:`via_steps` runs,
through the adapter that ``session.terraform_for`` builds, what the kafkanet
commands of a cycle run on the local target minus the data plane, one step per
terraform run, and applies the steps-only variants (-parallelism, destroy with
refresh, no destroy init, moto warm-up, --tf-log). :func:`via_lifecycle` calls
``apply.apply``, ``apply.plan`` and ``destroy.destroy`` (generator.environment) themselves and meters lifecycle's own
steps. Both meter through a :class:`~applybench.meter.Meter` whose hooks the
runner has put in place, and return the state's dependencies for the analysis.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Callable, Iterator

from python_terraform import IsFlagged, IsNotFlagged

from generator.environment import apply as env_apply
from generator.environment import destroy as env_destroy
from generator.environment import session
from generator.localaws import moto_server
from generator.module.generate import generate
from generator.terraform.adapter import Terraform

from .meter import Meter, RunResult
from .tflines import state_dependencies


def warm_up_moto(env: session.Env, moto: moto_server.MotoServer) -> None:
    """One EC2 call, so moto's first-request cost overlaps terraform init and provider start."""
    with contextlib.suppress(Exception):
        session.ec2_client(env, moto).describe_availability_zones()


def via_steps(
    args: argparse.Namespace, env: session.Env, meter: Meter, result: RunResult,
    tf_log: Callable[[Terraform, str], None],
) -> dict[str, set[str]]:
    """One cycle through the adapter, as the three commands run it on the local target
    (minus the data plane), with the variants in ``args``. ``tf_log(tf, step)`` sets up
    --tf-log for the terraform run that follows. Returns the dependencies in the state
    after apply, for the critical paths."""
    # kafkanet apply
    meter.command = "apply"
    with meter.step("generate"):
        generate(env.loaded.path, env.build_dir)
    session.record_target(env)
    session.local_backend_override(env)
    with meter.step("moto start"):
        moto = session.moto_for(env, start=True)
    assert moto is not None
    if args.moto_warmup:  # moto imports its EC2 code and builds the region lazily: ~2.7 s
        threading.Thread(target=warm_up_moto, args=(env, moto), daemon=True).start()
    with session.terraform_session(env, moto) as tf:
        tf_log(tf, "init")
        with meter.step("terraform init"):
            tf.init()
        tf_log(tf, "apply")
        with meter.step("terraform apply"):
            _apply(args, tf)
        tf_log(tf, "output")
        with meter.step("inventory"):
            tf.outputs()
    deps = state_dependencies(env.path("terraform.tfstate"))

    # kafkanet plan (no generate): a command of its own, so its own provider and init
    meter.command = "plan"
    with meter.step("plan (no changes)") as rec:
        session.check_target(env)
        session.local_backend_override(env)
        with session.terraform_session(env, session.moto_for(env, start=True)) as tf:
            tf_log(tf, "plan2-init")
            with meter.step("terraform init"):
                tf.init()
            tf_log(tf, "plan2")
            with meter.step("terraform plan"):
                result.second_plan_changes = _plan(args, tf)
        if result.second_plan_changes:
            rec.note = "CHANGES PENDING"

    # kafkanet destroy (minus the data plane teardown)
    meter.command = "destroy"
    with session.terraform_session(env, moto) as tf:
        if not args.skip_destroy_init:
            tf_log(tf, "destroy-init")
            with meter.step("destroy init"):
                tf.init()
        tf_log(tf, "destroy")
        with meter.step("terraform destroy"):
            _destroy(args, tf)
    with meter.step("leftover check"):
        result.leftovers = env_destroy.leftovers(session.ec2_client(env, moto), env.name)
    with meter.step("moto stop") as rec:
        moto.stop()
    # moto was our child and is reaped here: its whole lifetime's CPU arrives at once
    rec.moto_cpu, rec.tf_cpu, rec.note = rec.tf_cpu, 0.0, "moto CPU: its whole lifetime"
    return deps


def _apply(args: argparse.Namespace, tf: Terraform) -> None:
    if not args.parallelism:
        tf.apply()  # what lifecycle runs
        return
    tf.run("apply", input=False, no_color=IsFlagged, auto_approve=True, lock_timeout=tf.lock_timeout,
           parallelism=args.parallelism)


def _plan(args: argparse.Namespace, tf: Terraform) -> bool:
    """Whether the plan has changes."""
    if not args.parallelism:
        return tf.plan().changes
    result = tf.run("plan", ok_codes=(0, 2), input=False, no_color=IsFlagged, detailed_exitcode=IsFlagged,
                    lock_timeout=tf.lock_timeout, parallelism=args.parallelism)
    return result.rc == 2


def _destroy(args: argparse.Namespace, tf: Terraform) -> None:
    if not (args.parallelism or args.destroy_refresh):
        tf.destroy(refresh=False)  # what lifecycle runs
        return
    par = {"parallelism": args.parallelism} if args.parallelism else {}
    tf.run("destroy", input=False, no_color=IsFlagged, force=IsNotFlagged, auto_approve=True,
           refresh=None if args.destroy_refresh else False, lock_timeout=tf.lock_timeout, **par)


def via_lifecycle(env: session.Env, meter: Meter, result: RunResult) -> dict[str, set[str]]:
    """One cycle through ``apply.apply``, ``apply.plan`` and ``destroy.destroy`` (generator.environment) themselves, each of
    their steps metered. Returns the dependencies in the state after apply."""

    class MeteredTimings(session.Timings):
        @contextlib.contextmanager
        def step(self, name: str, out: Callable[[str], None] = session.say) -> Iterator[None]:
            with meter.step(name), super().step(name, out=lambda _m: None):
                yield

    meter.command = "apply"
    env_apply.apply(env, timings=MeteredTimings())
    deps = state_dependencies(env.path("terraform.tfstate"))
    meter.command = "plan"
    real_timings = env_apply.Timings
    with meter.step("plan (no changes)") as rec:
        env_apply.Timings = MeteredTimings  # plan makes its own Timings: meter its steps too
        try:
            second = env_apply.plan(env, generate_module=False)
        finally:
            env_apply.Timings = real_timings
        result.second_plan_changes = second.changes
        if second.changes:
            rec.note = "CHANGES PENDING"
    meter.command = "destroy"
    env_destroy.destroy(env, timings=MeteredTimings())
    return deps
