"""The topology spec's shape: pydantic models that forbid unknown keys.

Shape and field-local rules live here (field validators raise ``ValueError``);
rules that relate several fields live in :mod:`generator.spec.validate`,
which turns both kinds into one ``SpecError`` with a line per problem.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from generator.spec.regions import REGION_AZS

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,20}$")
AZ_RE = re.compile(r"^[a-z]$")
INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*[0-9][a-z0-9-]*\.[a-z0-9]+$")
GRAVITON_RE = re.compile(r"^[a-z]+[0-9]+g[a-z]*\.")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MIRROR_URL_RE = re.compile(r"^https://[^\s'\"\\`$]+$")
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


def _az_keys(value: Any) -> Any:
    """A ``subnet_cidrs`` mapping's keys are AZ letters."""
    if isinstance(value, dict):
        for key in value:
            _az(key)
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
    """One NAT instance (``az``), or a pair (``azs: [a, c]``): the first active, the second its standby.

    Either way each NAT is also a bastion. ``subnet_cidr`` places the single
    NAT's public subnet; a pair's subnets are placed by ``subnet_cidrs`` per AZ letter.
    """

    az: str = "a"
    azs: list[str] | None = None
    instance_type: str = "t3.micro"
    subnet_cidr: Cidr | None = None
    subnet_cidrs: dict[str, Cidr] = Field(default_factory=dict)

    check_az = field_validator("az", mode="before")(_az)
    check_instance_type = field_validator("instance_type", mode="before")(_instance_type)

    @field_validator("azs", mode="before")
    @classmethod
    def _azs(cls, value: Any) -> Any:
        if isinstance(value, list):
            for letter in value:
                _az(letter)
            if len(value) != 2:
                raise ValueError(
                    f"lists {len(value)} AZ(s); a NAT pair is exactly two, e.g. [a, c] "
                    "(for one NAT write nat.az: a)"
                )
            if value[0] == value[1]:
                raise ValueError(f"AZ {value[0]} listed twice; the standby must sit in another AZ, e.g. [a, c]")
        return value

    check_subnet_cidr_keys = field_validator("subnet_cidrs", mode="before")(_az_keys)

    @property
    def az_letters(self) -> list[str]:
        """The NATs' AZ letters, the active's first: ``[az]`` for one NAT."""
        return list(self.azs) if self.azs is not None else [self.az]

    @property
    def is_pair(self) -> bool:
        return self.azs is not None

    def subnet_cidr_for(self, letter: str) -> ipaddress.IPv4Network | None:
        """The explicit CIDR of the public subnet in AZ ``letter``, if the spec gives one."""
        if not self.is_pair:
            return self.subnet_cidr
        return self.subnet_cidrs.get(letter)


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

    check_subnet_cidr_keys = field_validator("subnet_cidrs", mode="before")(_az_keys)

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
    # Tried before the Apache sites: an https base URL laid out like them,
    # <mirror_url>/kafka/<version>/kafka_<scala>-<version>.tgz (and .sha512).
    mirror_url: str | None = None
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

    @field_validator("mirror_url")
    @classmethod
    def _mirror_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        example = "e.g. https://my-bucket.s3.ap-northeast-2.amazonaws.com/apache"
        if not MIRROR_URL_RE.match(value):
            raise ValueError(f"{value!r} is not an https URL without spaces or quotes; {example}")
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                f"{value!r} carries credentials, which would sit in the user data every process on the "
                "instance can read; use a bucket policy or an endpoint that needs none"
            )
        if not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} must be a base URL with a host and no ?query or #fragment; {example}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"{value!r} has a bad port; {example}") from None
        return value.rstrip("/")

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
