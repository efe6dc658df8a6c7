"""Render a topology into the files of a Terraform root module.

`render()` is pure: it returns {relative path: text} and touches no disk.
Writing is `generator.module.writer`'s job.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from generator import __version__
from generator.base.errors import KafkanetError
from generator.module.runstamp import RunStamp
from generator.spec.topology import Broker, Topology


def _templates_dir() -> Path:
    """``templates/``: inside the package in a wheel (``generator/templates``), at the top of a checkout."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "templates"
    return packaged if packaged.is_dir() else package.parent / "templates"


TEMPLATES_DIR = _templates_dir()

SSH_USER = "ec2-user"  # Amazon Linux 2023
KAFKA_DATA_DEVICE = "/dev/sdf"
KAFKA_DATA_MOUNT = "/var/lib/kafka"
KAFKA_HOME = "/opt/kafka"
NAT_SCRIPT_PATH = "/usr/local/sbin/kafkanet-nat-setup"  # the local data plane runs this one
NAT_PACKAGES_SCRIPT_PATH = "/usr/local/sbin/kafkanet-nat-packages"
NAT_MONITOR_PATH = "/usr/local/sbin/kafkanet-nat-monitor"  # the pair's failover monitor (idle with one NAT)
# A NAT pair's probe: the standby pings this name through the active (its data
# path) and through its own public address (is the internet there at all). A
# name, not an address: real DNS answers it on AWS and the local plane's VPC
# resolver answers it with its web host, so the very same script runs on both.
NAT_PROBE_TARGET = "checkip.amazonaws.com"
BROKER_SCRIPT_PATH = "/usr/local/sbin/kafkanet-broker-setup"
BROKER_LIB_PATH = "/usr/local/lib/kafkanet/broker-lib.sh"
TOPICS_SCRIPT_PATH = "/usr/local/sbin/kafkanet-create-topics"
KAFKA_CONFIG_PATH = "/etc/kafka/server.properties"
KAFKA_ENV_PATH = "/etc/kafkanet/kafka.env"  # KAFKA_HEAP_OPTS, written by the broker setup at every boot
UNIT_DIR = "/etc/systemd/system"
# In the broker setup unit's environment; Terraform may replace it with the data
# volume's id (replace() on the user data), and the setup script ignores anything
# that is not a volume id, finding the disk by its EBS model or device name instead.
DATA_VOLUME_ID_PLACEHOLDER = "@@KAFKANET_DATA_VOLUME_ID@@"
TOPICS_PATH = "/etc/kafkanet/topics.json"  # broker 1's: the topics its boot creates (and the local plane)

# Terraform files by concern, in the order a reader meets them.
TERRAFORM_FILES = (
    "terraform.tf",
    "providers.tf",
    "variables.tf",
    "locals.tf",
    "network.tf",
    "nat.tf",
    "kafka.tf",
    "outputs.tf",
)


class TemplateError(KafkanetError):
    """A template failed to render: a bug in templates/, named with file and line."""


# ------------------------------------------------------------------ filters


def hcl_string(value: Any) -> str:
    """A value as a quoted HCL string literal, escaped; `${`/`%{` cannot start interpolation."""
    text = str(value)
    text = json.dumps(text, ensure_ascii=False)[1:-1]  # backslashes, quotes, control chars
    text = text.replace("${", "$${").replace("%{", "%%{")
    return f'"{text}"'


_BARE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def hcl_key(value: str) -> str:
    return value if _BARE_KEY.match(value) else hcl_string(value)


def hcl_list(values: list[Any]) -> str:
    return "[" + ", ".join(hcl_string(v) for v in values) + "]"


def hcl_object(mapping: dict[str, Any], indent: int, raw: bool = False) -> str:
    """A multi-line HCL object with `=` aligned the way `terraform fmt` aligns it.

    Values are literals quoted by type, or with raw=True HCL expressions
    already rendered (the caller quoted what needed quoting).
    """
    if not mapping:
        return "{}"
    keys = {k: hcl_key(k) for k in mapping}
    width = max(len(k) for k in keys.values())
    pad = " " * (indent + 2)
    lines = [
        f"{pad}{keys[k].ljust(width)} = {v if raw else _hcl_value(v)}" for k, v in mapping.items()
    ]
    return "{\n" + "\n".join(lines) + "\n" + " " * indent + "}"


def hcl_inline(mapping: dict[str, Any]) -> str:
    """A one-line HCL object of literals: { a = "x", b = 1 }."""
    return "{ " + ", ".join(f"{hcl_key(k)} = {_hcl_value(v)}" for k, v in mapping.items()) + " }"


def _hcl_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return hcl_list(value)
    return hcl_string(value)


# Families that cannot be EBS-optimized (older generations); everything newer
# is EBS-optimized by default and accepts ebs_optimized = true.
_NOT_EBS_OPTIMIZABLE = ("t1.", "t2.", "m1.", "m3.", "c3.", "r3.", "i2.", "hs1.", "g2.", "cc2.", "cr1.")


def ebs_optimizable(instance_type: str) -> bool:
    return not instance_type.startswith(_NOT_EBS_OPTIMIZABLE)


def shell_quote(value: Any) -> str:
    """Single-quote for bash."""
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


# ------------------------------------------------------------- environment


def make_environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # noqa: S701 - HCL, YAML and shell, not HTML; quoting is by filter
    )
    env.globals["ebs_optimizable"] = ebs_optimizable
    env.filters.update(
        hcl=hcl_string,
        hcl_key=hcl_key,
        hcl_list=hcl_list,
        hcl_object=hcl_object,
        hcl_inline=hcl_inline,
        sh=shell_quote,
    )
    return env


_ENV: jinja2.Environment | None = None


def _env() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = make_environment()
    return _ENV


def render_template(name: str, **context: Any) -> str:
    try:
        return _env().get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"templates/{exc.name or name}:{exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"templates/{name}: {exc.message}") from exc


# ------------------------------------------------------------------ render


@dataclass(frozen=True)
class RenderContext:
    """What the templates see, besides the topology itself."""

    spec_label: str  # how the header names the spec, e.g. environments/ttareungyi.yaml
    public_key: str
    run: RunStamp | None = None  # an e2e run: default_tags and its own state key

    @property
    def header(self) -> str:
        return (
            f"Generated by kafkanet {__version__} from {self.spec_label}.\n"
            "Change the spec and run `kafkanet generate` rather than editing this file:\n"
            "the next generate overwrites it."
        )


def _locals(topo: Topology) -> dict[str, Any]:
    """The maps locals.tf spells out, as {key: one-line HCL object}."""
    return {
        "tags": {**topo.spec.tags, "kafkanet:env": topo.name},
        "private_subnets": {
            s.az_letter: hcl_inline({"az": s.az, "cidr": str(s.cidr)}) for s in topo.private_subnets
        },
        "brokers": {
            b.name: hcl_inline(
                {
                    "node_id": b.node_id,
                    "subnet": b.subnet.az_letter,
                    "private_ip": str(b.private_ip),
                    "controller": b.controller,
                }
            )
            for b in topo.brokers
        },
    }


def _common(topo: Topology, ctx: RenderContext) -> dict[str, Any]:
    return {
        "locals": _locals(topo),
        "topo": topo,
        "spec": topo.spec,
        "ctx": ctx,
        "header": ctx.header,
        "ssh_user": SSH_USER,
        "data_device": KAFKA_DATA_DEVICE,
        "data_mount": KAFKA_DATA_MOUNT,
        "kafka_home": KAFKA_HOME,
        "nat_script_path": NAT_SCRIPT_PATH,
        "nat_packages_script_path": NAT_PACKAGES_SCRIPT_PATH,
        "nat_monitor_path": NAT_MONITOR_PATH,
        "probe_target": NAT_PROBE_TARGET,
        "broker_script_path": BROKER_SCRIPT_PATH,
        "broker_lib_path": BROKER_LIB_PATH,
        "topics_script_path": TOPICS_SCRIPT_PATH,
        "kafka_config_path": KAFKA_CONFIG_PATH,
        "kafka_env_path": KAFKA_ENV_PATH,
        "data_volume_id_placeholder": DATA_VOLUME_ID_PLACEHOLDER,
        "topics_path": TOPICS_PATH,
        "run": ctx.run,
        "run_tags": ctx.run.tags() if ctx.run else {},
        "state_key": _state_key(topo, ctx),
    }


def _state_key(topo: Topology, ctx: RenderContext) -> str | None:
    """The S3 state key; an e2e run's own (the name already carries the run id)."""
    state = topo.spec.state
    if state is None:
        return None
    if state.key is None:
        return f"kafkanet/{topo.name}/terraform.tfstate"
    if ctx.run is None:
        return state.key
    folder, _, base = state.key.rpartition("/")
    return f"{folder + '/' if folder else ''}runs/{ctx.run.run_id}/{base}"


@dataclass(frozen=True)
class WriteFile:
    """One entry of cloud-init's write_files."""

    path: str
    permissions: str
    content: str


def _unit(name: str, **context: Any) -> WriteFile:
    return WriteFile(f"{UNIT_DIR}/{name}", "0644", render_template(f"systemd/{name}.j2", **context))


def nat_files(topo: Topology, ctx: RenderContext) -> tuple[list[WriteFile], list[str]]:
    """The NAT's write_files and the units its first boot enables, in start order."""
    common = _common(topo, ctx)
    files = [
        WriteFile(NAT_SCRIPT_PATH, "0755", render_template("scripts/nat-setup.sh.j2", **common)),
        WriteFile(NAT_PACKAGES_SCRIPT_PATH, "0755", render_template("scripts/nat-packages.sh.j2", **common)),
        WriteFile(NAT_MONITOR_PATH, "0755", render_template("scripts/nat-monitor.py.j2", **common)),
        _unit("kafkanet-nat-packages.service", **common),
        _unit("kafkanet-nat.service", **common),
        _unit("kafkanet-nat-monitor.service", **common),
    ]
    return files, ["kafkanet-nat-packages.service", "kafkanet-nat.service", "kafkanet-nat-monitor.service"]


def broker_files(topo: Topology, broker: Broker, ctx: RenderContext) -> tuple[list[WriteFile], list[str]]:
    """A broker's write_files and the units its first boot enables, in start order."""
    common = {**_common(topo, ctx), "broker": broker}
    creates_topics = broker.node_id == 1 and bool(topo.topics)
    common["creates_topics"] = creates_topics
    files = [
        WriteFile(KAFKA_CONFIG_PATH, "0644", render_template("kafka/server.properties.j2", **common)),
        WriteFile(BROKER_LIB_PATH, "0644", render_template("scripts/broker-lib.sh.j2", **common)),
        WriteFile(BROKER_SCRIPT_PATH, "0755", render_template("scripts/broker-setup.sh.j2", **common)),
        _unit("kafkanet-broker-setup.service", **common),
        _unit("kafka.service", **common),
    ]
    units = ["kafkanet-broker-setup.service", "kafka.service"]
    if creates_topics:
        files.insert(3, WriteFile(TOPICS_SCRIPT_PATH, "0755", render_template("scripts/create-topics.sh.j2", **common)))
        files.append(_unit("kafkanet-topics.service", **common))
        units.append("kafkanet-topics.service")
    if broker.node_id == 1:  # always, last: the local plane reads it ([] without topics)
        files.append(WriteFile(TOPICS_PATH, "0644", render_topics(topo)))
    return files, units


def render_topics(topo: Topology) -> str:
    """The spec's topics as JSON, one per line: ``[{"name", "partitions", "replication_factor"}, ...]``."""
    rows = [
        json.dumps({"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor})
        for t in topo.topics
    ]
    return "[\n" + ",\n".join(f"  {row}" for row in rows) + "\n]\n" if rows else "[]\n"


def render(topo: Topology, ctx: RenderContext) -> dict[str, str]:
    """All files of the root module, {relative path: text}."""
    common = _common(topo, ctx)
    files = {name: render_template(f"terraform/{name}.j2", **common) for name in TERRAFORM_FILES}
    nat, nat_units = nat_files(topo, ctx)
    files["user-data/nat.yaml"] = render_template(
        "user-data/nat.yaml.j2", files=nat, units=nat_units, **common
    )
    for broker in topo.brokers:
        written, units = broker_files(topo, broker, ctx)
        files[f"user-data/{broker.name}.yaml"] = render_template(
            "user-data/broker.yaml.j2", broker=broker, files=written, units=units, **common
        )
    return files
