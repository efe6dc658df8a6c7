"""The topology spec: YAML in, a validated model out.

Shape and field-local rules live in the pydantic models (unknown keys are
errors); rules that relate several fields live in `_cross_checks`, which
returns every problem at once. Either way the caller gets one `SpecError`
carrying one line per problem, each naming the field and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from generator.errors import SpecError
from generator.regions import REGION_AZS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS_DIR = PROJECT_ROOT / "environments"

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
AZ_RE = re.compile(r"^[a-z]$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\.[a-z0-9]+$")
GRAVITON_RE = re.compile(r"^[a-z]+[0-9]+g[a-z]*\.")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/=]+( .*)?$")
RFC1918 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]

# AWS reserves the first four addresses and the last one of every subnet; static
# instance addresses start at this host offset so they never collide with them.
FIRST_HOST_OFFSET = 10
SMALLEST_SUBNET_PREFIX = 28  # AWS refuses subnets smaller than /28
PREFERRED_SUBNET_PREFIX = 24


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _cidr(value: Any) -> ipaddress.IPv4Network:
    """A strict IPv4 CIDR; host bits set is an error that suggests the network."""
    if not isinstance(value, str):
        raise ValueError(f"expected a CIDR string such as 10.0.0.0/16, got {value!r}")
    if "/" not in value:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR such as 203.0.113.50/32") from None
        raise ValueError(f"{value!r} is not a CIDR: add the prefix length, e.g. {value}/32")
    try:
        return ipaddress.IPv4Network(value)
    except ipaddress.NetmaskValueError:
        raise ValueError(f"{value!r} has a bad prefix length; use /0 to /32") from None
    except ValueError as exc:
        if "has host bits set" in str(exc):
            fixed = ipaddress.IPv4Network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; did you mean {fixed}?") from None
        raise ValueError(f"{value!r} is not an IPv4 CIDR such as 10.0.0.0/16") from None


def admin_cidr(value: Any) -> ipaddress.IPv4Network:
    """One admin CIDR (the spec field, and `--admin-cidr`): a strict IPv4 CIDR, never /0."""
    net = _cidr(value)
    if net.prefixlen == 0:
        raise ValueError(
            f"{net} would open SSH to the whole internet; give your own address, e.g. 203.0.113.50/32"
        )
    return net


Cidr = Annotated[ipaddress.IPv4Network, BeforeValidator(_cidr)]
AdminCidr = Annotated[ipaddress.IPv4Network, BeforeValidator(admin_cidr)]


def _az(value: Any) -> str:
    if not isinstance(value, str) or not AZ_RE.match(value):
        raise ValueError(f"{value!r} is not an AZ letter; write just the letter, e.g. 'a'")
    return value


def _instance_type(value: Any) -> str:
    if not isinstance(value, str) or not INSTANCE_TYPE_RE.match(value):
        raise ValueError(f"{value!r} is not an EC2 instance type such as t3.small")
    if GRAVITON_RE.match(value):
        raise ValueError(
            f"{value!r} is an arm64 (Graviton) type; only x86_64 types are supported, e.g. t3.small"
        )
    return value


class NatSpec(_Strict):
    az: str = "a"
    instance_type: str = "t2.micro"
    subnet_cidr: Cidr | None = None

    check_az = field_validator("az", mode="before")(_az)
    check_instance_type = field_validator("instance_type", mode="before")(_instance_type)


class BrokersSpec(_Strict):
    azs: list[str] = Field(min_length=1)
    count: int | None = None
    instance_type: str = "t3.small"
    data_volume_gb: int = Field(default=20, ge=1, le=16384)
    subnet_cidrs: dict[str, Cidr] = Field(default_factory=dict)

    @field_validator("azs", mode="before")
    @classmethod
    def _azs(cls, value: Any) -> Any:
        if isinstance(value, list):
            for letter in value:
                _az(letter)
            dupes = sorted({a for a in value if value.count(a) > 1})
            if dupes:
                raise ValueError(f"AZ {', '.join(dupes)} listed twice; one private subnet per AZ")
        return value

    @field_validator("count")
    @classmethod
    def _count(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be at least 1 (got {value}); a cluster needs a broker")
        return value

    check_instance_type = field_validator("instance_type", mode="before")(_instance_type)

    @field_validator("subnet_cidrs", mode="before")
    @classmethod
    def _subnet_cidr_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for key in value:
                _az(key)
        return value

    @property
    def broker_count(self) -> int:
        return self.count if self.count is not None else len(self.azs)


class TopicSpec(_Strict):
    name: str
    partitions: int = Field(default=1, ge=1, le=10000)
    replication_factor: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TOPIC_RE.match(value) or value in {".", ".."}:
            raise ValueError(f"{value!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
        return value


class KafkaSpec(_Strict):
    version: str = "3.9.1"
    scala_version: str = "2.13"
    port: int = 9092
    controller_port: int = 9093
    topics: list[TopicSpec] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        match = VERSION_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a Kafka release such as 3.9.1")
        if (int(match[1]), int(match[2])) < (3, 3):
            raise ValueError(f"{value} predates production KRaft; use 3.3.0 or newer (e.g. 3.9.1)")
        return value

    @field_validator("scala_version")
    @classmethod
    def _scala(cls, value: str) -> str:
        if value not in {"2.12", "2.13"}:
            raise ValueError(f"{value!r} is not a Kafka Scala build; use 2.13 (or 2.12)")
        return value

    @field_validator("port", "controller_port")
    @classmethod
    def _port(cls, value: int) -> int:
        if value == 22:
            raise ValueError("22 is the SSH port; pick another, e.g. 9092")
        if not 1024 <= value <= 65535:
            raise ValueError(f"{value} is out of range; use 1024-65535 (Kafka runs unprivileged)")
        return value


class SshSpec(_Strict):
    public_key: str | None = None
    private_key_file: str | None = None


class StateSpec(_Strict):
    bucket: str
    key: str | None = None
    region: str | None = None
    lockfile: bool = True

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not BUCKET_RE.match(value) or ".." in value:
            raise ValueError(f"{value!r} is not an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        return value


class Spec(_Strict):
    name: str
    region: str
    vpc_cidr: Cidr
    admin_cidrs: list[AdminCidr] = Field(min_length=1)
    nat: NatSpec = Field(default_factory=NatSpec)
    brokers: BrokersSpec
    kafka: KafkaSpec = Field(default_factory=KafkaSpec)
    ssh: SshSpec = Field(default_factory=SshSpec)
    state: StateSpec | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value) or value.endswith("-"):
            raise ValueError(
                f"{value!r} is not an environment name: 2-21 characters, lowercase letter first, "
                "then lowercase letters, digits or '-', e.g. ttareungyi"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value not in REGION_AZS:
            raise ValueError(f"unknown region {value!r}; known regions: {', '.join(sorted(REGION_AZS))}")
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if not any(net.subnet_of(r) for r in RFC1918):
            raise ValueError(
                f"{net} is not a private (RFC 1918) range; use one inside 10.0.0.0/8, "
                "172.16.0.0/12 or 192.168.0.0/16"
            )
        if not 16 <= net.prefixlen <= 24:
            raise ValueError(f"{net} is a /{net.prefixlen}; a VPC here is /16 to /24")
        return net

    @field_validator("admin_cidrs", mode="before")
    @classmethod
    def _admin_cidrs(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if key == "Name" or key.startswith(("kafkanet:", "aws:")):
                raise ValueError(f"tag {key!r} is set by kafkanet (or reserved by AWS); use another key")
            if not 1 <= len(key) <= 128 or len(val) > 256:
                raise ValueError(f"tag {key!r}: keys are 1-128 characters, values at most 256")
        return value


# ---------------------------------------------------------------- loading


class StrictYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when built with it
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last) and
    reports an impossible date (2025-13-01) as a YAML error at its line instead of crashing."""

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a date ({exc})", node.start_mark
            ) from None


def _construct_mapping(loader: StrictYamlLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictYamlLoader.construct_yaml_timestamp)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, in one line: ``line 3, column 5: found character '\\t' ...``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + " ".join(str(getattr(exc, "problem", None) or exc).split())


def resolve_spec_path(arg: str | Path) -> Path:
    """SPEC is a path to a YAML file or the name of an environment under environments/."""
    path = Path(arg)
    if path.is_file():
        return path
    if path.suffix not in {".yaml", ".yml"} and "/" not in str(arg):
        for base in (Path.cwd() / "environments", ENVIRONMENTS_DIR):
            candidate = base / f"{arg}.yaml"
            if candidate.is_file():
                return candidate
    known = sorted(p.stem for p in ENVIRONMENTS_DIR.glob("*.yaml"))
    raise SpecError(
        f"{arg}: no such spec file or environment; give a YAML path or one of: {', '.join(known) or '(none)'}"
    )


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Allowed keys at `loc` (for the unknown-key message)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args]
        for cand in candidates:
            inner = getattr(cand, "__args__", ()) or ()
            for c in (cand, *inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    current = c
                    break
            else:
                continue
            break
        else:
            return []
    return list(current.model_fields) if isinstance(current, type) else []


def _problems_from(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # union/annotated validators add the type name as a loc element; drop those
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        where = _format_loc(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _model_keys(Spec, loc)
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            problems.append(f"{where}: unknown key{hint}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        elif kind == "value_error":
            problems.append(f"{where}: {err['ctx']['error']}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            problems.append(f"{where}: {err['msg'].lower()}{shown}")
    return problems


def load_spec(arg: str | Path) -> Spec:
    """Load, parse and validate a spec; raise SpecError with every problem found."""
    path = resolve_spec_path(arg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from None
    try:
        data = yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: malformed YAML: {yaml_problem(exc)}") from None
    if data is None:
        raise SpecError(f"{path}: the spec is empty; copy environments/ttareungyi.yaml and edit it")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a YAML mapping of keys (name, region, ...), not a {type(data).__name__}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(*(f"{path}: {p}" for p in _problems_from(exc))) from None
    problems = _cross_checks(spec, path)
    if problems:
        raise SpecError(*(f"{path}: {p}" for p in problems))
    return spec


def _cross_checks(spec: Spec, path: Path) -> list[str]:
    """Rules across fields; every problem is reported, not just the first."""
    from generator.topology import SubnetPlanError, plan_subnets

    problems: list[str] = []
    letters = REGION_AZS[spec.region]
    zone = lambda a: f"{spec.region}{a}"  # noqa: E731
    if spec.nat.az not in letters:
        problems.append(
            f"nat.az: {zone(spec.nat.az)} does not exist; {spec.region} has AZs {', '.join(letters)}"
        )
    for i, letter in enumerate(spec.brokers.azs):
        if letter not in letters:
            problems.append(
                f"brokers.azs[{i}]: {zone(letter)} does not exist; {spec.region} has AZs {', '.join(letters)}"
            )
    for letter in spec.brokers.subnet_cidrs:
        if letter not in spec.brokers.azs:
            problems.append(f"brokers.subnet_cidrs.{letter}: no broker AZ {letter!r}; list it in brokers.azs or drop it")
    count = spec.brokers.broker_count
    seen: set[str] = set()
    for i, topic in enumerate(spec.kafka.topics):
        if topic.name in seen:
            problems.append(f"kafka.topics[{i}].name: topic {topic.name!r} is defined twice")
        seen.add(topic.name)
        if topic.replication_factor is not None and topic.replication_factor > count:
            problems.append(
                f"kafka.topics[{i}].replication_factor: {topic.replication_factor} is more than the "
                f"{count} broker(s); lower it or raise brokers.count"
            )
    if spec.kafka.port == spec.kafka.controller_port:
        problems.append(
            f"kafka.controller_port: {spec.kafka.controller_port} is also kafka.port; give the KRaft controller its own port"
        )
    if spec.ssh.public_key is not None:
        problem = _check_public_key(spec.ssh.public_key, path)
        if problem:
            problems.append(f"ssh.public_key: {problem}")
    if spec.state is not None and spec.state.region is not None and spec.state.region not in REGION_AZS:
        problems.append(f"state.region: unknown region {spec.state.region!r}")
    if not problems:
        try:
            plan_subnets(spec)
        except SubnetPlanError as exc:
            problems.extend(exc.problems)
    return problems


def _check_public_key(value: str, spec_path: Path) -> str | None:
    if SSH_KEY_RE.match(value.strip()):
        return None
    key_path = (spec_path.parent / Path(value).expanduser()).resolve()
    if not key_path.is_file():
        return f"{value!r} is neither an OpenSSH public key ('ssh-ed25519 AAAA...') nor a readable .pub file"
    if not SSH_KEY_RE.match(key_path.read_text(encoding="utf-8", errors="replace").strip()):
        return f"{key_path} does not hold an OpenSSH public key"
    return None


def public_key_text(spec: Spec, spec_path: Path) -> str | None:
    """The literal public key the spec gives (inline or from a file), or None."""
    value = spec.ssh.public_key
    if value is None:
        return None
    if SSH_KEY_RE.match(value.strip()):
        return value.strip()
    return (spec_path.parent / Path(value).expanduser()).resolve().read_text(encoding="utf-8").strip()
