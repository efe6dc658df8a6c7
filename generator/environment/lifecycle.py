"""plan / apply / inventory / destroy of an environment, on the local or the AWS target.

The build directory (`build/<name>/`) holds the module, its state (local
target), the `ssh_config` of a live environment and `.kafkanet/`: the target it
was applied to, the moto server's records, the inventory, known_hosts and the
SSH key. A command with the other
target refuses, so a local destroy can never empty a real environment's state.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.base.errors import InfraError, PrerequisiteError, UserError
from generator.base.files import write_atomic
from generator.environment import hostkeys, localplane, sshconfig
from generator.environment import inventory as inv
from generator.localaws import moto_server
from generator.module.generate import generate
from generator.module.keys import key_paths
from generator.module.loaded import Loaded, default_build_dir, load
from generator.terraform import provider
from generator.terraform.adapter import Terraform, TfResult
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
# Written only on the local target: forces local state even when the spec has an S3 backend.
LOCAL_BACKEND_OVERRIDE = "kafkanet_local_backend_override.tf"
AWS_PROBE_URL = "https://checkip.amazonaws.com/"

Say = Callable[[str], None]


def say(message: str) -> None:
    print(f"kafkanet: {message}", file=sys.stderr, flush=True)


@dataclass
class Timings:
    """Wall time per step, printed at the end and kept for benches."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, out: Say = say) -> Iterator[None]:
        out(f"{name} ...")
        start = time.perf_counter()
        try:
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


# ------------------------------------------------------------------ terraform


def _local_backend_override(env: Env) -> None:
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
    kwargs: dict[str, Any] = {}
    if on_line is not None:
        kwargs["on_line"] = on_line
    return Terraform(env.build_dir, cli_config=cli_config, env=extra_env, **kwargs)


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


def _moto_for(env: Env, start: bool) -> moto_server.MotoServer | None:
    if env.target != "local":
        return None
    state = env.path(MOTO_DIR)
    if start:
        return moto_server.ensure_running(state)
    return moto_server.find_running(state)


def ec2_client(env: Env, moto: moto_server.MotoServer | None):
    import boto3

    if env.target == "local":
        if moto is None:
            raise InfraError(f"{env.name}: the local moto server is not running; run `kafkanet apply` again")
        return moto.ec2_client(env.loaded.spec.region)
    return boto3.client("ec2", region_name=env.loaded.spec.region)


def _prepare(env: Env, generate_module: bool, timings: Timings) -> None:
    if generate_module:
        with timings.step("generate"):
            generate(env.loaded, env.build_dir)  # as loaded: keeps a --admin-cidr override
    else:
        require_module(env)


# ---------------------------------------------------------------- plan checks


def replaced_brokers(plan_json: dict[str, Any]) -> list[str]:
    """Addresses of broker instances (or their data volumes) the plan would replace or delete."""
    out = []
    for change in plan_json.get("resource_changes", []):
        actions = change.get("change", {}).get("actions", [])
        if change.get("type") in ("aws_instance", "aws_ebs_volume") and "delete" in actions:
            if change.get("name") in ("broker", "kafka_data"):
                out.append(change["address"])
    return out


def _confirm(prompt: str) -> bool:
    if not sys.stdin.isatty():
        raise UserError("refusing to change AWS without confirmation: no terminal to ask on; pass --yes")
    answer = input(f"{prompt} Only 'yes' is accepted: ")
    return answer.strip() == "yes"


# -------------------------------------------------------------------- commands


@dataclass
class ApplyResult:
    env: Env
    inventory: dict[str, Any]
    timings: Timings


def plan(env: Env, generate_module: bool = True) -> TfResult:
    check_target(env)
    if env.target == "aws":
        require_aws_credentials(env)
    timings = Timings()
    _prepare(env, generate_module, timings)
    _local_backend_override(env)
    moto = _moto_for(env, start=True)
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
    timings: Timings | None = None,
) -> ApplyResult:
    timings = timings or Timings()
    check_target(env)
    if env.target == "aws":
        require_aws_credentials(env)
    require_root_for_local(env)
    _prepare(env, generate_module, timings)
    record_target(env)
    _local_backend_override(env)
    with timings.step("moto server" if env.target == "local" else "credentials"):
        moto = _moto_for(env, start=True)
    with terraform_session(env, moto) as tf:
        with timings.step("terraform init"):
            tf.init()
        if env.target == "local":
            # nothing to show or confirm: one apply, no saved plan (one provider walk fewer)
            with timings.step("terraform apply"):
                tf.apply()
        else:
            _apply_confirmed(env, tf, timings, yes=yes, allow_replace=allow_replace)
        with timings.step("inventory"):
            outputs = tf.outputs()
    plane_info = None
    if env.target == "local":
        with timings.step("local data plane"):
            private_key, _ = key_paths(env.build_dir)
            plane_info = localplane.build(
                env.name, ec2_client(env, moto), private_key.resolve(), env.path(PLANE_DIR).resolve()
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


def _apply_confirmed(env: Env, tf: Terraform, timings: Timings, *, yes: bool, allow_replace: bool) -> None:
    """On AWS: plan to a file, refuse a broker replacement, ask, then apply exactly that plan."""
    with timings.step("terraform plan"):
        result = tf.plan(out=PLAN_FILE)  # relative to the module directory
    try:
        if not result.changes:
            return
        shown = tf.run("show", "-json", PLAN_FILE, quiet=True)
        replaced = replaced_brokers(json.loads(shown.stdout))
        if replaced and not allow_replace:
            raise UserError(
                f"the plan would replace or delete {', '.join(replaced)} (and its Kafka data); "
                "re-run with --allow-replace if that is intended"
            )
        if not yes and not _confirm(f"Apply these changes to AWS account resources of {env.name}?"):
            raise UserError("apply cancelled; nothing was changed")
        with timings.step("terraform apply"):
            tf.apply(PLAN_FILE)
    finally:
        env.path(PLAN_FILE).unlink(missing_ok=True)


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
        # local only: an internet host outside the admin CIDRs, and a port that answers it
        "non_admin_vantage": {
            "proxy_command": f"ip netns exec {plane_info.outsider_netns} nc %h %p",
            "address": plane_info.outsider_ip,
            "control": {"address": plane_info.web_ip, "port": 80},
        } if local else None,
    }


def _pin_aws_host_keys(env: Env, document: dict[str, Any]) -> str:
    hosts = [hostkeys.Host("bastion", document["bastion"]["instance_id"], (document["bastion"]["public_ip"],))]
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


def leftovers(ec2, env_name: str) -> list[str]:
    """IDs of resources still tagged kafkanet:env=<env_name> (terminated instances excluded)."""
    found = []
    for call, key, id_key, extra in _TAGGED:
        filters = [{"Name": f"tag:{ENV_TAG}", "Values": [env_name]}, *extra]
        items = getattr(ec2, call)(Filters=filters)[key]
        if key == "Reservations":
            items = [i for r in items for i in r["Instances"]]
        found.extend(item[id_key] for item in items)
    return found


def _check_nothing_left(env: Env, ec2) -> None:
    left = leftovers(ec2, env.name)
    if left:
        raise InfraError(
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


def destroy(env: Env, *, yes: bool = False, timings: Timings | None = None) -> DestroyResult:
    """Remove everything of the environment; on local also after a crash (by name and records)."""
    timings = timings or Timings()
    result = DestroyResult(env=env, timings=timings)
    check_target(env)
    if env.target == "aws":
        require_aws_credentials(env)
        require_module(env)
        if not yes and not _confirm(f"Destroy every AWS resource of {env.name}?"):
            raise UserError("destroy cancelled; nothing was changed")
        tf = terraform_for(env, None)
        with timings.step("terraform init"):
            tf.init()
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
    moto = _moto_for(env, start=False)
    failure: InfraError | None = None
    try:
        if moto is not None and any(env.build_dir.glob("*.tf")):
            try:
                with terraform_session(env, moto) as tf, timings.step("terraform destroy"):
                    tf.init()
                    # Only terraform changes what moto holds, so the state is current: no
                    # refresh (it also saves a round of describe calls per resource).
                    tf.destroy(refresh=False)
                with timings.step("leftover check"):
                    _check_nothing_left(env, ec2_client(env, moto))
            except InfraError as exc:
                failure = exc
        elif env.path("terraform.tfstate").exists():
            say("local moto server is not running: its resources died with it; dropping the local state")
    finally:  # also on Ctrl-C: stopping moto is what really removes the resources
        if provider.stop_recorded(env.path(PROVIDER_DIR)):
            say("stopped the AWS provider a crashed kafkanet run left behind")
        with timings.step("moto server stop"):
            result.moto_stopped = moto_server.stop(env.path(MOTO_DIR))
        # moto keeps everything in memory: once it is stopped nothing of the state exists.
        for leftover in ("terraform.tfstate", "terraform.tfstate.backup"):
            if env.path(leftover).exists():
                env.path(leftover).unlink()
                result.state_dropped = True
        _forget(env)
    if failure is not None:
        raise InfraError(
            *failure.problems,
            f"{env.name}: the moto server was stopped anyway, so nothing of the environment is left; "
            "on AWS the same failure would leave resources behind: look at it before it gets there",
        )
    return result


def _forget(env: Env) -> None:
    """After a destroy the build directory may serve either target again."""
    for rel in (TARGET_FILE, inv.INVENTORY_FILE, KNOWN_HOSTS, PLAN_FILE, sshconfig.SSH_CONFIG):
        env.path(rel).unlink(missing_ok=True)
    shutil.rmtree(env.path(PLANE_DIR), ignore_errors=True)
