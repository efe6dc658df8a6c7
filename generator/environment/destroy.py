"""destroy of an environment, and the check that nothing tagged with it is left.

This module owns taking an environment down: on AWS a confirmed ``terraform
destroy``; on the local target the data plane's teardown, a destroy against
the moto server and then stopping it (which really removes everything, also
after a crash or Ctrl-C) and any provider a crashed run left; on both, the
``leftovers`` check of what is still tagged ``kafkanet:env`` (exit 4 when
something is) and forgetting the build directory's target, inventory, host keys
and saved plan; and e2e's :func:`teardown`, which an interrupt only asks about
and a second one abandons with what remains listed and the command that
finishes the job.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from generator.base.errors import InfraError, LeftoversError, UserError
from generator.base.files import write_atomic
from generator.environment import inventory as inv
from generator.environment import localplane, sshconfig, sweep
from generator.environment.session import (
    KNOWN_HOSTS,
    MOTO_DIR,
    PLAN_FILE,
    PLANE_DIR,
    PROVIDER_DIR,
    TARGET_FILE,
    TF_UNFINISHED,
    Env,
    Timings,
    check_target,
    confirm,
    ec2_client,
    moto_for,
    require_aws_credentials,
    require_module,
    require_root_for_local,
    say,
    terraform_for,
    terraform_session,
)
from generator.localaws import moto_server
from generator.terraform import provider

ENV_TAG = "kafkanet:env"
# (describe call, result key, id key, extra filters): everything the module creates that is taggable
_TAGGED = (
    ("describe_instances", "Reservations", "InstanceId",
     [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}]),
    ("describe_vpcs", "Vpcs", "VpcId", []),
    ("describe_subnets", "Subnets", "SubnetId", []),
    ("describe_route_tables", "RouteTables", "RouteTableId", []),
    ("describe_internet_gateways", "InternetGateways", "InternetGatewayId", []),
    ("describe_security_groups", "SecurityGroups", "GroupId", []),
    ("describe_network_interfaces", "NetworkInterfaces", "NetworkInterfaceId", []),
    ("describe_volumes", "Volumes", "VolumeId", []),
    ("describe_addresses", "Addresses", "AllocationId", []),
    ("describe_key_pairs", "KeyPairs", "KeyPairId", []),
)


def leftovers(ec2, env_name: str, described: bool = False) -> list[str]:
    """IDs of resources still tagged kafkanet:env=<env_name> (terminated instances excluded);
    ``described``: each with what tells how it was left (state, attachment, description)."""
    found = []
    for call, key, id_key, extra in _TAGGED:
        filters = [{"Name": f"tag:{ENV_TAG}", "Values": [env_name]}, *extra]
        items = getattr(ec2, call)(Filters=filters)[key]
        if key == "Reservations":
            items = [i for r in items for i in r["Instances"]]
        found.extend(_described(item, item[id_key]) if described else item[id_key] for item in items)
    return found


def _described(item: dict, ident: str) -> str:
    if ident.startswith("eni-"):
        attached = (item.get("Attachment") or {}).get("InstanceId")
        return (f"{ident} ({item.get('Status', '?')}, {f'attached to {attached}' if attached else 'not attached'}, "
                f"{item.get('Description') or 'no description'!r})")  # fmt: skip
    if ident.startswith("vol-"):
        holders = [a.get("InstanceId") for a in item.get("Attachments", [])]
        return f"{ident} ({item.get('State', '?')}{', attached to ' + ', '.join(holders) if holders else ''})"
    if ident.startswith("i-"):
        return f"{ident} ({item.get('State', {}).get('Name', '?')})"
    return ident


def _state_ids(tf) -> set[str]:
    """Every id the state records (``id``, and the other ids the sweep lists by: key pair, allocation)."""
    state = json.loads(tf.run("state", "pull", quiet=True).stdout or "{}")
    return {str(attrs[key]) for resource in state.get("resources", []) for instance in resource.get("instances", [])
            for attrs in [instance.get("attributes") or {}] for key in ("id", "key_pair_id", "allocation_id")
            if attrs.get(key)}  # fmt: skip


def _cut_short(env: Env) -> bool:
    """Whether the last apply or destroy did not return; marks this destroy as started."""
    cut_short = env.path(TF_UNFINISHED).exists()
    write_atomic(env.path(TF_UNFINISHED), "a destroy started and has not returned\n")
    return cut_short


def _remove_strays(env: Env, tf, ec2) -> None:
    """After a run that was cut short: delete what it created that the state does not record
    (:func:`sweep.strays`), before terraform destroy would wait on it."""
    found = sweep.strays(ec2, env.name, _state_ids(tf))
    if not found:
        return
    say(f"the last apply of {env.name} was cut short; {len(found)} resource(s) tagged {ENV_TAG}={env.name} that "
        f"its state does not record: deleting them first: {', '.join(f'{f.kind} {f.id}' for f in found)}")  # fmt: skip
    result = sweep.SweepResult(where=env.name, found=found)
    sweep.delete(ec2, None, found, result, say)
    for error in result.errors:
        say(f"could not delete {error} (the leftover check will name what remains)")


def _check_nothing_left(env: Env, ec2) -> None:
    left = leftovers(ec2, env.name, described=True)
    if left:
        raise LeftoversError(
            f"{env.name}: terraform destroy finished but {len(left)} resource(s) tagged {ENV_TAG}={env.name} "
            f"remain: {', '.join(left)}; remove them by hand (they may cost money on AWS)"
        )


@dataclass
class DestroyResult:
    env: Env
    namespaces: int = 0
    processes: int = 0
    moto_stopped: bool = False
    state_dropped: bool = False
    timings: Timings = field(default_factory=Timings)


def destroy(
    env: Env, *, yes: bool = False, timings: Timings | None = None, keep_moto_on_interrupt: bool = False
) -> DestroyResult:
    """Remove everything of the environment; on local also after a crash (by name and records).

    ``keep_moto_on_interrupt``: an interrupt (an abandoned e2e teardown) leaves the
    local moto server and the state alone, as AWS would keep its resources, so the
    caller can list what remains and ``kafkanet destroy`` finishes the job later.
    """
    timings = timings or Timings()
    result = DestroyResult(env=env, timings=timings)
    check_target(env)
    if env.target == "aws":
        require_aws_credentials(env)
        require_module(env)
        if not yes and not confirm(f"Destroy every AWS resource of {env.name}?"):
            raise UserError("destroy cancelled; nothing was changed")
        tf = terraform_for(env, None)
        with timings.step("terraform init"):
            tf.init()
        if _cut_short(env):
            _remove_strays(env, tf, ec2_client(env, None))
        with timings.step("terraform destroy"):
            tf.destroy()
        with timings.step("leftover check"):
            _check_nothing_left(env, ec2_client(env, None))
        _forget(env)
        return result

    require_root_for_local(env)
    with timings.step("local data plane teardown"):
        report = localplane.teardown(env.name)
        result.namespaces, result.processes = len(report.namespaces), report.processes
    moto = moto_for(env, start=False)
    failure: InfraError | None = None
    abandoned = False
    try:
        if moto is not None and any(env.build_dir.glob("*.tf")):
            try:
                with terraform_session(env, moto) as tf, timings.step("terraform destroy"):
                    tf.init()
                    cut_short = _cut_short(env)
                    if cut_short:
                        _remove_strays(env, tf, ec2_client(env, moto))
                    # Only terraform changes what moto holds, so the state is current (no refresh,
                    # which saves a round of describe calls per resource), unless a run was cut
                    # short: a delete in flight then may have happened with the state still holding it.
                    tf.destroy(refresh=cut_short)
                with timings.step("leftover check"):
                    _check_nothing_left(env, ec2_client(env, moto))
            except InfraError as exc:
                failure = exc
        elif env.path("terraform.tfstate").exists():
            say("local moto server is not running: its resources died with it; dropping the local state")
    except KeyboardInterrupt:
        abandoned = keep_moto_on_interrupt
        raise
    finally:  # also on Ctrl-C: stopping moto is what really removes the resources
        if provider.stop_recorded(env.path(PROVIDER_DIR)):
            say("stopped the AWS provider a crashed kafkanet run left behind")
        if not abandoned:  # else the interrupt goes on up; moto and the state stay for the caller
            _stop_moto(env, result, timings)
    if failure is not None:
        raise InfraError(
            *failure.problems,
            f"{env.name}: the moto server was stopped anyway, so nothing of the environment is left; "
            "on AWS the same failure would leave resources behind: look at it before it gets there",
        )
    return result


def _stop_moto(env: Env, result: DestroyResult, timings: Timings) -> None:
    with timings.step("moto server stop"):
        result.moto_stopped = moto_server.stop(env.path(MOTO_DIR))
    # moto keeps everything in memory: once it is stopped nothing of the state exists.
    for leftover in ("terraform.tfstate", "terraform.tfstate.backup"):
        if env.path(leftover).exists():
            env.path(leftover).unlink()
            result.state_dropped = True
    _forget(env)


def _forget(env: Env) -> None:
    """After a destroy the build directory may serve either target again."""
    for rel in (TARGET_FILE, inv.INVENTORY_FILE, KNOWN_HOSTS, PLAN_FILE, sshconfig.SSH_CONFIG, TF_UNFINISHED):
        env.path(rel).unlink(missing_ok=True)
    shutil.rmtree(env.path(PLANE_DIR), ignore_errors=True)


# ------------------------------------------------------------ e2e's teardown

#: An abandoned teardown lists what remains within this many seconds (it lists, never deletes).
LEFTOVER_BUDGET = 60.0


class _TeardownGuard:
    """While teardown runs, the first interrupt (Ctrl-C, SIGTERM) only says what is
    going on and what another would do; the next one abandons the teardown."""

    def __init__(self, env: Env, finish: str) -> None:
        self.env, self.finish, self.count = env, finish, 0

    def _handler(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            say(f"teardown of {self.env.name} in progress: it removes everything the run created. "
                "Interrupt again to abandon it: terraform is stopped, what remains is listed with the "
                f"command that removes it (`{self.finish}`), exit 4")  # fmt: skip
            return
        raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def teardown(env: Env, *, finish: str, timings: Timings | None = None) -> DestroyResult:
    """e2e's destroy, which a second interrupt cannot silently abandon.

    One interrupt during it is answered with what is happening; a second stops
    terraform, and then what remains of the environment is listed (bounded by
    :data:`LEFTOVER_BUDGET`) in a :class:`LeftoversError` that names ``finish``,
    the command that completes the job. On the local target an abandoned teardown
    keeps the moto server (and so the resources), as AWS would.
    """
    guard = _TeardownGuard(env, finish)
    with guard.installed():
        try:
            return destroy(env, yes=True, timings=timings, keep_moto_on_interrupt=True)
        except KeyboardInterrupt:
            pass
    say(f"teardown abandoned: listing what remains of {env.name} (at most {LEFTOVER_BUDGET:.0f} s) ...")
    remaining, problem = remaining_resources(env, LEFTOVER_BUDGET)
    if problem is not None:
        raise LeftoversError(
            f"{env.name}: teardown abandoned; what remains could not be listed: {problem}",
            f"finish the teardown with: {finish}",
        )
    if not remaining:
        say(f"nothing tagged {ENV_TAG}={env.name} remains")
    return_lines = [f"  {item}" for item in remaining]
    raise LeftoversError(
        f"{env.name}: teardown abandoned; {len(remaining)} resource(s) tagged {ENV_TAG}={env.name} remain"
        + (":" if remaining else " (the build directory still records the environment)"),
        *return_lines,
        f"finish the teardown with: {finish}",
    )


def remaining_resources(env: Env, budget: float) -> tuple[list[str], str | None]:
    """What is still tagged with the environment, within ``budget`` seconds: (ids, None) or ([], why not).

    A further interrupt while listing skips it (it is only a report)."""
    found: list[str] = []
    problem: list[str] = []

    def _list() -> None:
        try:
            ec2 = _bounded_ec2(env)
            found.extend(leftovers(ec2, env.name))
        except Exception as exc:  # noqa: BLE001 - reported, the command to finish is printed anyway
            problem.append(f"{type(exc).__name__}: {exc}")

    worker = threading.Thread(target=_list, name="kafkanet-leftovers", daemon=True)
    worker.start()
    try:
        worker.join(budget)
    except KeyboardInterrupt:
        return [], "interrupted while listing"
    if worker.is_alive():
        return [], f"no answer within {budget:.0f} s"
    if problem:
        return [], problem[0]
    return found, None


def _bounded_ec2(env: Env):
    """An EC2 client whose every call is bounded (and on local, only ever the environment's moto)."""
    if env.target == "local":
        moto = moto_for(env, start=False)
        if moto is None:
            raise InfraError("the local moto server is not running: its resources died with it")
        return ec2_client(env, moto)
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("ec2", region_name=env.loaded.spec.region, config=config)
