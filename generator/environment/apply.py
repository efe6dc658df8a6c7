"""plan and apply of an environment, and what apply leaves for the operator: the inventory and pinned host keys.

This module owns the commands that build an environment (``plan``, ``apply``;
on AWS a saved plan that refuses to replace a broker unless told and asks
before it is applied), the local target's data plane built after terraform,
and what apply writes from terraform's outputs: the inventory document (its
schema is :mod:`generator.environment.inventory`), known_hosts with each
host's key pinned (on AWS read from the console output) and the `ssh_config`;
``read_inventory`` reads it back for the commands that use a live environment.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.base.errors import UserError
from generator.base.files import write_atomic
from generator.environment import hostkeys, localplane, progress, roll, sshconfig
from generator.environment import inventory as inv
from generator.environment.session import (
    CLI_CONFIG,
    KNOWN_HOSTS,
    MOTO_DIR,
    PLAN_FILE,
    PLANE_DIR,
    TARGET_FILE,
    TF_UNFINISHED,
    Env,
    Timings,
    check_target,
    confirm,
    ec2_client,
    local_backend_override,
    moto_for,
    plane_ec2_client,
    record_target,
    recorded_target,
    require_aws_credentials,
    require_module,
    require_root_for_local,
    say,
    terraform_session,
)
from generator.localaws import moto_server
from generator.module.check import (
    DEFAULT_TIMEOUTS,
    check_module,
    require_tools,
    snapshot,
)
from generator.module.generate import generate
from generator.module.keys import key_paths
from generator.module.loaded import PROJECT_ROOT
from generator.module.toolrun import Finding, Runs
from generator.terraform.adapter import Terraform, TfResult
from generator.terraform.tfcli import write_cli_config

AWS_PROBE_URL = "https://checkip.amazonaws.com/"


def _prepare(env: Env, generate_module: bool, timings: Timings, check: bool = True) -> None:
    if generate_module:
        with timings.step("generate"):
            generate(env.loaded, env.build_dir)  # as loaded: keeps a --admin-cidr override
    else:
        require_module(env)
    if check:
        with timings.step("module check"):
            findings = check_module(env.build_dir, cli_config=write_cli_config(env.path(CLI_CONFIG)))
        _refuse_findings(env, findings)


def _refuse_findings(env: Env, findings: list[Finding]) -> None:
    if findings:
        raise UserError(
            *(str(f) for f in findings),
            f"{env.build_dir}: {len(findings)} static finding(s) above; fix the module (or the spec) and run "
            "again, or pass --no-check to apply it as it is",
        )


class _BackgroundCheck:
    """The module check of a first local apply, run on a snapshot of the module while moto starts and
    terraform inits and plans (none of which creates anything); :meth:`gate` waits for it before the
    apply, and raises its findings as :func:`_prepare` would. The check takes 6-14 s, nearly all of it
    checkov's start; this hides it behind ~3-5 s of work that does not depend on it."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.started = time.perf_counter()
        self.ended: float | None = None
        require_tools()  # a missing tool says so at once, before moto starts
        self._tmp = Path(tempfile.mkdtemp(prefix=f"kafkanet-check-{env.name}-"))
        self._runs = Runs(DEFAULT_TIMEOUTS)
        try:
            copy = snapshot(env.build_dir, self._tmp)  # the module as it stands: apply writes beside it
            cli_config = write_cli_config(env.path(CLI_CONFIG))
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="module-check")
        self._future = self._pool.submit(self._run, copy, cli_config)
        say("module check ... (beside moto's start, terraform init and plan)")

    def _run(self, copy: Path, cli_config: Path | None) -> list[Finding]:
        try:
            return check_module(copy, cli_config=cli_config, shown_as=self.env.build_dir, runs=self._runs)
        finally:
            self.ended = time.perf_counter()

    def gate(self, timings: Timings) -> None:
        """Wait for the check; its time is the step's, and the wait it added is said too."""
        waited = time.perf_counter()
        with progress.activity("module check", terraform=False):
            findings = self._future.result()
        waited = time.perf_counter() - waited
        elapsed = (self.ended or time.perf_counter()) - self.started
        timings.steps.append(("module check", elapsed))
        say(f"module check: {elapsed:.1f} s ({waited:.1f} s of it waited for after terraform plan)")
        _refuse_findings(self.env, findings)

    def close(self) -> None:
        """Whatever happened: no tool left running, no snapshot left."""
        if not self._future.done():
            self._runs.stop()
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._tmp, ignore_errors=True)


# -------------------------------------------------------------------- commands


@dataclass
class ApplyResult:
    env: Env
    inventory: dict[str, Any]
    timings: Timings


def plan(env: Env, generate_module: bool = True, check: bool = True) -> TfResult:
    check_target(env)
    if env.target == "aws":
        require_aws_credentials(env)
    timings = Timings()
    _prepare(env, generate_module, timings, check)
    local_backend_override(env)
    moto = moto_for(env, start=True)
    with terraform_session(env, moto) as tf:
        with timings.step("terraform init"):
            tf.init()
        with timings.step("terraform plan"):
            result = tf.plan()
    say("plan: changes pending" if result.changes else "plan: no changes; infrastructure matches the configuration")
    return result


def apply(
    env: Env,
    *,
    generate_module: bool = True,
    yes: bool = False,
    allow_replace: bool = False,
    check: bool = True,
    rejoined: roll.Rejoined | None = None,
    timings: Timings | None = None,
) -> ApplyResult:
    """Generate (unless told not to), check, init and apply; on the local target also build the data plane.

    A plan that replaces brokers (a changed broker configuration) is applied one
    broker at a time (:mod:`generator.environment.roll`). ``rejoined`` says when a
    broker is back on AWS (the CLI passes the access layer's check through the
    bastion); on the local target the rebuilt data plane is the check.
    """
    timings = timings or Timings()
    check_target(env)
    if env.target == "aws":
        require_aws_credentials(env)
    require_root_for_local(env)
    # A first local apply checks the module beside moto's start, init and plan, and waits for
    # the check before anything is created; any other apply checks first.
    first_local = env.target == "local" and not _has_state(env)
    _prepare(env, generate_module, timings, check and not first_local)
    background = _BackgroundCheck(env) if check and first_local else None
    recorded = recorded_target(env) is not None
    try:
        record_target(env)
        local_backend_override(env)
        with timings.step("moto server" if env.target == "local" else "credentials"):
            moto = moto_for(env, start=True)
        with terraform_session(env, moto) as tf:
            with timings.step("terraform init"):
                tf.init()
            write_atomic(env.path(TF_UNFINISHED), "an apply started and has not returned\n")
            if env.target == "local":
                _apply_local(env, tf, timings, moto, allow_replace=allow_replace, check=background)
            else:
                _apply_confirmed(env, tf, timings, yes=yes, allow_replace=allow_replace, rejoined=rejoined)
            env.path(TF_UNFINISHED).unlink()
            with timings.step("inventory"):
                outputs = tf.outputs()
    except UserError:
        if background is not None and not _has_state(env):  # the check refused: nothing was created
            moto_server.stop(env.path(MOTO_DIR))
            if not recorded:
                env.path(TARGET_FILE).unlink(missing_ok=True)
        raise
    finally:
        if background is not None:
            background.close()
    plane_info = None
    if env.target == "local":
        with timings.step("local data plane"):
            private_key, _ = key_paths(env.build_dir)
            plane_info = localplane.build(
                env.name, plane_ec2_client(env, moto), private_key.resolve(), env.path(PLANE_DIR).resolve()
            )
        for note in plane_info.notes:
            say(f"local data plane: {note}")
    document = build_inventory(env, outputs, moto=moto, plane_info=plane_info)
    if plane_info is not None:
        known = plane_info.known_hosts()
    else:
        with timings.step("host keys from the console output"):
            known = _pin_aws_host_keys(env, document)
    write_inventory(env, document, known)
    sshconfig.write(env.path(sshconfig.SSH_CONFIG), document)
    return ApplyResult(env=env, inventory=document, timings=timings)


def _has_state(env: Env) -> bool:
    try:
        return bool(json.loads(env.path("terraform.tfstate").read_text()).get("resources"))
    except (OSError, ValueError):
        return False


def _saved_plan(tf: Terraform, timings: Timings) -> dict[str, Any] | None:
    """Plan to PLAN_FILE; its JSON, or None when nothing changes."""
    with timings.step("terraform plan"):
        result = tf.plan(out=PLAN_FILE)  # relative to the module directory
    if not result.changes:
        return None
    return json.loads(tf.run("show", "-json", PLAN_FILE, quiet=True).stdout)


def _refuse_lost_data(plan_json: dict[str, Any], allow_replace: bool) -> None:
    lost = roll.lost_data_volumes(plan_json)
    if lost and not allow_replace:
        raise UserError(
            f"the plan would delete {', '.join(lost)} and the Kafka partitions on it; "
            "re-run with --allow-replace if that is intended"
        )


def _apply_local(
    env: Env, tf: Terraform, timings: Timings, moto: Any, *, allow_replace: bool, check: _BackgroundCheck | None = None
) -> None:
    """The first apply is one `terraform apply` (no saved plan: one provider walk fewer), or with
    the module check running, a saved plan (while it runs) and its apply once it passed; a later
    apply is planned first, so that replaced brokers roll one at a time."""
    if not _has_state(env):
        if check is None:
            with timings.step("terraform apply"):
                tf.apply()
            return
        try:
            with timings.step("terraform plan"):
                tf.plan(out=PLAN_FILE)  # creates nothing
            check.gate(timings)
            with timings.step("terraform apply"):
                tf.apply(PLAN_FILE)
        finally:
            env.path(PLAN_FILE).unlink(missing_ok=True)
        return

    def rejoined(name: str) -> None:  # the rebuilt plane waits for every broker's Kafka to answer
        private_key, _ = key_paths(env.build_dir)
        localplane.teardown(env.name)
        localplane.build(env.name, plane_ec2_client(env, moto), private_key.resolve(), env.path(PLANE_DIR).resolve())
        say(f"{name}: its Kafka answers in the rebuilt local plane (tansu has no replication to wait for)")

    stop = roll.stopper(lambda: ec2_client(env, moto), env.name, delay=1, attempts=60)
    _planned_apply(env, tf, timings, allow_replace=allow_replace, approve=lambda brokers: None, rejoined=rejoined,
                   stop=stop)


def _apply_confirmed(
    env: Env, tf: Terraform, timings: Timings, *, yes: bool, allow_replace: bool, rejoined: roll.Rejoined | None
) -> None:
    """On AWS: as :func:`_planned_apply`, once the user said yes (or --yes)."""

    def approve(brokers: list[str]) -> None:
        if brokers and rejoined is None:
            raise UserError(f"the plan replaces {', '.join(brokers)}: apply it with the kafkanet command, which rolls "
                            "them one at a time and checks each has rejoined")  # fmt: skip
        rolling = f" (rolling {', '.join(brokers)} one at a time)" if brokers else ""
        if not yes and not confirm(f"Apply these changes to AWS account resources of {env.name}{rolling}?"):
            raise UserError("apply cancelled; nothing was changed")

    stop = roll.stopper(lambda: ec2_client(env, None), env.name, delay=10, attempts=60)  # EC2: a minute or so
    _planned_apply(env, tf, timings, allow_replace=allow_replace, approve=approve, rejoined=rejoined, stop=stop)


def _planned_apply(
    env: Env, tf: Terraform, timings: Timings, *, allow_replace: bool,
    approve: Callable[[list[str]], None], rejoined: roll.Rejoined | None, stop: Callable[[str], None],
) -> None:
    """Plan to a file; refuse to lose a data volume; apply exactly that plan, or roll the
    brokers it replaces one at a time (each after the previous one rejoined), then the rest."""
    try:
        plan_json = _saved_plan(tf, timings)
        if plan_json is None:
            return
        _refuse_lost_data(plan_json, allow_replace)
        brokers = roll.brokers_to_roll(plan_json)
        approve(brokers)
        if not brokers:
            with timings.step("terraform apply"):
                tf.apply(PLAN_FILE)
            return
    finally:
        env.path(PLAN_FILE).unlink(missing_ok=True)
    assert rejoined is not None  # approve refuses a roll without one
    roll.roll(tf, brokers, rejoined, stop, timings)
    with timings.step("terraform apply"):
        tf.apply()


def _ssh_private_key(env: Env) -> Path:
    spec = env.loaded.spec
    if spec.ssh.public_key is None:
        return key_paths(env.build_dir)[0].resolve()
    if spec.ssh.private_key_file:
        return (env.loaded.path.parent / Path(spec.ssh.private_key_file).expanduser()).resolve()
    raise UserError(
        "ssh.private_key_file: the spec gives ssh.public_key but not the matching private key file; "
        "add ssh.private_key_file so kafkanet can log in"
    )


def build_inventory(
    env: Env,
    outputs: dict[str, Any],
    *,
    moto: moto_server.MotoServer | None = None,
    plane_info: Any = None,
) -> dict[str, Any]:
    """The inventory document (see generator/environment/inventory.py) from terraform outputs."""
    topo = env.loaded.topology
    bastion = outputs["bastion"]
    network = outputs["network"]
    kafka = outputs["kafka"]
    local = env.target == "local"
    public_ip = bastion["public_ip"]
    public_ip_map: dict[str, str] = {}
    ssh_user = outputs["ssh_user"]
    proxy_command = None
    if local:
        public_ip_map = dict(plane_info.public_ip_map)
        public_ip = public_ip_map.get(bastion["public_ip"], plane_info.bastion_public_ip)
        ssh_user = plane_info.ssh_user
        proxy_command = plane_info.proxy_command
    brokers = [
        {
            "name": name,
            "instance_id": b["instance_id"],
            "node_id": b["node_id"],
            "private_ip": b["private_ip"],
            "az": b["az"],
            "controller": b["controller"],
        }
        for name, b in sorted(outputs["brokers"].items(), key=lambda kv: kv[1]["node_id"])
    ]
    return {
        "version": inv.VERSION,
        "environment": outputs["environment"],
        "target": env.target,
        "region": outputs["region"],
        "aws_endpoint": moto.url if local and moto else None,
        # local, with IAM enforcement on: the keys of the principal the suite acts as
        "aws_credentials_file": str(moto.iam_file.resolve()) if local and moto and moto.iam_enforced else None,
        "ssh": {
            "user": ssh_user,
            "private_key": str(_ssh_private_key(env)),
            "known_hosts": str(env.path(KNOWN_HOSTS).resolve()),
            "proxy_command": proxy_command,
            "port": 22,
        },
        "bastion": {
            "name": "bastion",
            "instance_id": bastion["instance_id"],
            "public_ip": public_ip,
            "aws_public_ip": bastion["public_ip"],
            "private_ip": bastion["private_ip"],
            "az": bastion["az"],
            # a NAT pair's standby: the bastion address moves to it on failover
            **({"standby": outputs["nat_pair"]["nats"][1]} if "nat_pair" in outputs else {}),
        },
        "brokers": brokers,
        "kafka": {
            "port": kafka["port"],
            "controller_port": kafka["controller_port"],
            "bootstrap_servers": kafka["bootstrap_servers"],
            "implementation": "tansu" if local else "apache-kafka",
            "topics": [
                {"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor}
                for t in topo.topics
            ],
        },
        "network": dict(network),
        "admin_cidrs": [str(c) for c in env.loaded.spec.admin_cidrs],
        "probe_url": plane_info.probe_url if local else AWS_PROBE_URL,
        "public_ip_map": public_ip_map,
        "probe_private_addresses": local,
        # a NAT pair: the faults the suite's failover test can inject on this target, and how
        **({"faults": faults_of(outputs["environment"], local),
            "nat_monitor_log": monitor_log_of(outputs["environment"], local)} if "nat_pair" in outputs else {}),
        # local only: an internet host outside the admin CIDRs, and a port that answers it
        "non_admin_vantage": {
            "proxy_command": f"ip netns exec {plane_info.outsider_netns} nc %h %p",
            "address": plane_info.outsider_ip,
            "control": {"address": plane_info.web_ip, "port": 80},
        } if local else None,
    }


# The faults a NAT pair's failover test injects (integration/test_nat_failover.py), in the matrix's order. Each
# says how: "api" (the EC2 API), "ssh" (a command on the active, the bastion) or "command" (a command the suite
# runs on the operator's machine, argv with {active} and {standby} standing for the NATs' private addresses,
# "undo" its reverse); or "skip": why this target cannot inject it (the test skips it with that reason).
FAULTS = {
    "stop": {"by": "api", "about": "the active stopped through the EC2 API"},
    "hang": {"about": "the active hangs: nothing in, out or through it, its processes frozen"},
    "masquerade": {"by": "ssh", "about": "the active's masquerade table deleted by a command over SSH"},
    "forwarding": {"by": "ssh", "about": "net.ipv4.ip_forward turned off on the active by a command over SSH"},
    "internet": {"about": "the internet unreachable for both NATs (the EC2 API still answers): no takeover"},
    "partition": {"about": "the two NATs cannot reach each other, both reach the internet: one owner"},
}
# The plane's helpers (localvpc.faults) as commands: fault -> (inject, undo, hosts it takes).
_PLANE_FAULTS = {
    "hang": ("hang", "resume", ["{active}"]),
    "internet": ("cut-internet", "restore-internet", []),
    "partition": ("partition", "heal", ["{active}", "{standby}"]),
}
_AWS_SKIPS = {
    "hang": "a hang needs the local plane's helpers (SIGSTOP and a drop-all table on the instance); not on AWS",
    "partition": "a partition needs the local plane's helpers (drops between the NATs in the VPC router); not on AWS",
}
# On AWS the internet fault goes through the API: the internet gateway's 0.0.0.0/0 routes deleted, then made again
# (the monitors then cannot reach the EC2 API either, unless the VPC has an endpoint for it: nobody moves).
_AWS_INTERNET = {"by": "api", "about": "the public route tables' 0.0.0.0/0 to the internet gateway deleted, then"
                 " re-created: the internet unreachable for both NATs; no takeover"}  # fmt: skip


# the plane's helpers as a command (the suite may not import localvpc)
_FAULTS_COMMAND = (sys.executable, "-m", "localvpc.faults")


def faults_of(environment: str, local: bool) -> dict[str, dict[str, Any]]:
    """The inventory's ``faults``: FAULTS, each with how this target injects it, or why it cannot."""
    declared = {}
    for fault, entry in FAULTS.items():
        if fault in _PLANE_FAULTS:
            if not local:
                entry = _AWS_INTERNET if fault == "internet" else {**entry, "skip": _AWS_SKIPS[fault]}
            else:
                inject, undo, hosts = _PLANE_FAULTS[fault]
                entry = {**entry, "by": "command", "pythonpath": str(PROJECT_ROOT),
                         "inject": [*_FAULTS_COMMAND, inject, environment, *hosts],
                         "undo": [*_FAULTS_COMMAND, undo, environment, *hosts]}  # fmt: skip
        declared[fault] = entry
    return declared


def monitor_log_of(environment: str, local: bool) -> dict[str, Any]:
    """How the failover test reads what a NAT's monitor logged ({host}: the NAT's private address)."""
    if not local:
        return {"by": "ssh", "command": "journalctl -u kafkanet-nat-monitor.service -o cat --no-pager"}
    return {"by": "command", "pythonpath": str(PROJECT_ROOT),  # localvpc sits beside generator
            "command": [*_FAULTS_COMMAND, "monitor-log", environment, "{host}"]}  # fmt: skip


def _pin_aws_host_keys(env: Env, document: dict[str, Any]) -> str:
    hosts = hostkeys.bastion_hosts(document["bastion"])
    hosts += [hostkeys.Host(b["name"], b["instance_id"], (b["private_ip"],)) for b in document["brokers"]]
    known = env.path(KNOWN_HOSTS)
    previous = known.read_text() if known.is_file() else ""
    return hostkeys.known_hosts(ec2_client(env, None), hosts, previous=previous, say=say)


def write_inventory(env: Env, document: dict[str, Any], known_hosts: str) -> None:
    write_atomic(env.path(KNOWN_HOSTS), known_hosts, mode=0o600)
    write_atomic(env.inventory_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def read_inventory(env: Env) -> dict[str, Any]:
    check_target(env)
    return inv.load(env.inventory_path)
