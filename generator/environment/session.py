"""One kafkanet command's hold on an environment: the :class:`Env`, its target and prerequisites, and the terraform/moto session it runs in.

This module owns what plan, apply and destroy share: the ``Env`` (spec, build
directory, target) and the layout of the build directory (`build/<name>/`: the
module, its state on the local target, the `ssh_config` of a live environment
and `.kafkanet/`: the target it was applied to, the moto server's records, the
inventory, known_hosts and the SSH key); the recorded target, so a command with
the other target refuses and a local destroy can never empty a real
environment's state; the prerequisites (root, AWS credentials, a generated
module) and the confirmation prompt; progress lines (``say``) and step timings
(``Timings``; what the terminal shows meanwhile, and terraform's log file, are
:mod:`generator.environment.progress`); and terraform for the environment, with
the local target's moto server, shared provider and local-state override; an
e2e run's environment (:func:`for_run`: ``<name>-<run id>``, its own build
directory) and its time box (:func:`deadline`, ``--max-duration``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from generator.base.errors import InfraError, PrerequisiteError, UserError
from generator.environment import inventory as inv
from generator.environment import progress
from generator.localaws import moto_server
from generator.module.loaded import Loaded, default_build_dir, load
from generator.module.runstamp import RUN_ID_RE, RunStamp
from generator.spec.model import NAME_RE
from generator.spec.topology import Topology
from generator.terraform import provider
from generator.terraform.adapter import Terraform
from generator.terraform.tfcli import require_terraform, write_cli_config

TARGETS = ("local", "aws")
STATE_DIR = ".kafkanet"
TARGET_FILE = f"{STATE_DIR}/target.json"
KNOWN_HOSTS = f"{STATE_DIR}/known_hosts"
MOTO_DIR = f"{STATE_DIR}/moto"
PLANE_DIR = f"{STATE_DIR}/plane"
CLI_CONFIG = f"{STATE_DIR}/terraform.rc"
PLAN_FILE = f"{STATE_DIR}/tfplan"
PROVIDER_DIR = f"{STATE_DIR}/provider"
#: Written before terraform applies or destroys anything, removed when that returned: while it
#: exists, a run was cut short (interrupted, killed, crashed), and calls it had in flight may have
#: done what the state does not say (created something, or deleted it).
TF_UNFINISHED = f"{STATE_DIR}/terraform-unfinished"
# Written only on the local target: forces local state even when the spec has an S3 backend.
LOCAL_BACKEND_OVERRIDE = "kafkanet_local_backend_override.tf"

Say = Callable[[str], None]


def say(message: str) -> None:
    progress.emit(f"kafkanet: {message}")


@dataclass
class Timings:
    """Wall time per step, printed at the end and kept for benches."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, out: Say = say) -> Iterator[None]:
        """``name ...``, then ``name: N s``; in between, with the default ``out``, the
        live line or heartbeats and a terraform failure's log tail (:mod:`progress`)."""
        out(f"{name} ...")
        start = time.perf_counter()
        try:
            if out is say:
                with progress.activity(name):
                    yield
            else:
                yield
        finally:
            elapsed = time.perf_counter() - start
            self.steps.append((name, elapsed))
            out(f"{name}: {elapsed:.1f} s")

    def summary(self) -> str:
        return ", ".join(f"{name} {secs:.1f} s" for name, secs in self.steps)


# ---------------------------------------------------------------- environment


@dataclass
class Env:
    """One environment's spec, build directory and target."""

    loaded: Loaded
    build_dir: Path
    target: str

    @property
    def name(self) -> str:
        return self.loaded.spec.name

    def path(self, rel: str) -> Path:
        return self.build_dir / rel

    @property
    def inventory_path(self) -> Path:
        return self.path(inv.INVENTORY_FILE)


def open_env(spec_arg: str, target: str, build_dir: Path | None = None) -> Env:
    if target not in TARGETS:
        raise UserError(f"--target {target!r}: use one of {', '.join(TARGETS)}")
    loaded = load(spec_arg)
    return Env(loaded=loaded, build_dir=build_dir or default_build_dir(loaded.spec.name), target=target)


def for_run(env: Env, run_id: str, stamp: RunStamp | None = None) -> Env:
    """The environment of run ``run_id``: named ``<name>-<id>`` (resources, namespaces,
    tags), in its own build directory; ``stamp`` (e2e only) goes into the module."""
    if not RUN_ID_RE.match(run_id):
        raise UserError(f"--run-id {run_id!r}: use 1-8 lowercase letters or digits, e.g. a1b2c3")
    name = f"{env.name}-{run_id}"
    if not NAME_RE.match(name):
        raise UserError(
            f"--run-id {run_id}: the run's environment name {name!r} is {len(name)} characters, over the 21 "
            f"environment names may have; use a shorter --run-id or a spec name of at most {20 - len(run_id)}"
        )
    spec = env.loaded.spec.model_copy(update={"name": name})
    loaded = Loaded(path=env.loaded.path, spec=spec, topology=Topology.from_spec(spec), run=stamp)
    return Env(loaded=loaded, build_dir=default_build_dir(name), target=env.target)


# ------------------------------------------------------------------ max duration


class DeadlineReached(BaseException):
    """``e2e --max-duration`` ran out: unwinds like Ctrl-C (terraform is stopped the same way)."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`DeadlineReached` in this (main) thread once ``seconds`` have passed."""
    if not seconds:
        yield
        return

    def _expired(signum: int, frame: object) -> None:
        raise DeadlineReached(f"--max-duration of {seconds:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def recorded_target(env: Env) -> str | None:
    try:
        return json.loads(env.path(TARGET_FILE).read_text())["target"]
    except (OSError, ValueError, KeyError):
        return None


def check_target(env: Env) -> None:
    """Refuse to act on a build directory applied to the other target."""
    recorded = recorded_target(env)
    if recorded is not None and recorded != env.target:
        raise UserError(
            f"{env.build_dir} was applied with --target {recorded}; this command used --target {env.target}. "
            f"Use --target {recorded}, or destroy it with --target {recorded} first"
        )


def record_target(env: Env) -> None:
    path = env.path(TARGET_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"target": env.target, "environment": env.name}) + "\n")


def require_root_for_local(env: Env) -> None:
    if env.target == "local" and os.geteuid() != 0:
        raise PrerequisiteError(
            "the local target builds network namespaces and needs root: run as root (e.g. sudo -E), "
            "or use --target aws"
        )


def require_aws_credentials(env: Env) -> None:
    import boto3

    session = boto3.Session(region_name=env.loaded.spec.region)
    if session.get_credentials() is None:
        raise PrerequisiteError(
            "no AWS credentials found (environment, ~/.aws/credentials, SSO or instance role): "
            "configure them (e.g. `aws configure` or AWS_PROFILE), or use --target local"
        )


def require_module(env: Env) -> None:
    if not any(env.build_dir.glob("*.tf")):
        raise UserError(
            f"{env.build_dir} has no Terraform files; run `kafkanet generate {env.name}` or drop --no-generate"
        )


def confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("refusing to change AWS without confirmation: no terminal to ask on; pass --yes")
    answer = input(f"{prompt} Only 'yes' is accepted: ")
    return answer.strip() == "yes"


# ------------------------------------------------------------------ terraform


def local_backend_override(env: Env) -> None:
    path = env.path(LOCAL_BACKEND_OVERRIDE)
    if env.target != "local":
        path.unlink(missing_ok=True)
        return
    if env.loaded.spec.state is not None:
        say(f"local target: ignoring the spec's S3 state backend; state stays in {env.build_dir}/terraform.tfstate")
    text = (
        "# Written by kafkanet for the local target only: keep state in this directory\n"
        "# even when terraform.tf configures a remote backend. Not used on AWS.\n"
        'terraform {\n  backend "local" {}\n}\n'
    )
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def terraform_for(env: Env, moto: moto_server.MotoServer | None, on_line: Say | None = None) -> Terraform:
    """terraform for the environment's module. On the local target it reaches
    moto through its environment alone (endpoints, fake credentials, no AWS
    config files): the module itself is the one real AWS gets."""
    require_terraform()
    cli_config = write_cli_config(env.path(CLI_CONFIG))
    extra_env: dict[str, str | None] = {}
    if env.target == "local":
        if moto is None:
            raise AssertionError("local target without a moto server")
        extra_env = {**moto.env(), "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    if on_line is None:  # to the log file under .kafkanet/logs, counted for the live line
        on_line = progress.terraform_sink(env.path(progress.LOG_FILE))
    return Terraform(env.build_dir, cli_config=cli_config, env=extra_env, on_line=on_line)


@contextmanager
def terraform_session(env: Env, moto: moto_server.MotoServer | None) -> Iterator[Terraform]:
    """terraform for one kafkanet command; on the local target every terraform
    run of it shares one provider process (see generator/terraform/provider.py), stopped
    when the block ends, whatever happens in it."""
    tf = terraform_for(env, moto)
    if env.target != "local":
        yield tf
        return
    with provider.shared(env.path(PROVIDER_DIR), tf.environment()) as reattach:
        if reattach is not None:
            tf.extra_env["TF_REATTACH_PROVIDERS"] = reattach
        yield tf


IAM_ENFORCE_ENV = "KAFKANET_IAM_ENFORCE"


def enforced_policy(env: Env) -> dict | None:
    """The policy the local target enforces, from ``KAFKANET_IAM_ENFORCE``: unset or empty, none;
    ``1``, the ``Resource: "*"`` rendering of ``kafkanet iam-policy`` for this spec; else a JSON
    policy file (e.g. that rendering with an action left out)."""
    value = os.environ.get(IAM_ENFORCE_ENV, "").strip()
    if not value or env.target != "local":
        return None
    from generator.module import iampolicy

    if value == "1":
        return iampolicy.moto_rendering(iampolicy.permissions_policy(env.loaded))
    try:
        policy = json.loads(Path(value).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{IAM_ENFORCE_ENV}={value}: not 1 and not a readable JSON policy file ({exc})") from None
    if not isinstance(policy, dict) or not isinstance(policy.get("Statement"), list):
        raise UserError(f"{IAM_ENFORCE_ENV}={value}: a policy document has a Statement list")
    return policy


def moto_for(env: Env, start: bool) -> moto_server.MotoServer | None:
    if env.target != "local":
        return None
    state = env.path(MOTO_DIR)
    if start:
        policy = enforced_policy(env)
        server = moto_server.ensure_running(state, iam_policy=policy)
        if server.iam_enforced:
            say(f"local target: moto enforces IAM; terraform, kafkanet and the suite act as "
                f"{moto_server.PRINCIPAL_USER} (actions checked: {server.actions_path})")  # fmt: skip
        return server
    return moto_server.find_running(state)


def plane_ec2_client(env: Env, moto: moto_server.MotoServer | None):
    """EC2 for the local data plane, which stands in for AWS's own machinery: with IAM
    enforced it reads as moto's administrator, so the role's proof counts only the calls
    terraform, kafkanet and the suite make (as on AWS)."""
    if moto is None:
        raise InfraError(f"{env.name}: the local moto server is not running; run `kafkanet apply` again")
    return moto.admin_ec2_client(env.loaded.spec.region)


def ec2_client(env: Env, moto: moto_server.MotoServer | None):
    import boto3

    if env.target == "local":
        if moto is None:
            raise InfraError(f"{env.name}: the local moto server is not running; run `kafkanet apply` again")
        return moto.ec2_client(env.loaded.spec.region)
    return boto3.client("ec2", region_name=env.loaded.spec.region)
