"""The spec model: what a valid spec becomes, and one clear line per problem otherwise."""

from __future__ import annotations

import ipaddress

import pytest

from generator.base.errors import SpecError
from generator.cli import main
from generator.module.loaded import load_spec
from tests.conftest import SEED, SEED_TEXT


def test_seed_spec_loads_with_the_seed_topology():
    spec = load_spec(SEED)
    assert spec.name == "ttareungyi"
    assert spec.region == "ap-northeast-2"
    assert spec.vpc_cidr == ipaddress.IPv4Network("10.0.0.0/16")
    assert spec.nat.az == "a" and spec.nat.instance_type == "t3.micro"
    assert spec.brokers.azs == ["b", "c", "d"] and spec.brokers.broker_count == 3
    assert [(t.name, t.partitions, t.replication_factor) for t in spec.kafka.topics] == [
        ("bike-station-status", 3, 3)
    ]


def test_kafka_mirror_url_is_optional_and_kept_as_a_base_url(write_spec):
    assert load_spec(SEED).kafka.mirror_url is None
    text = _seed_with("port: 9092", "port: 9092\n  mirror_url: https://my-bucket.s3.ap-northeast-2.amazonaws.com/apache/")
    spec = load_spec(write_spec(text))
    assert spec.kafka.mirror_url == "https://my-bucket.s3.ap-northeast-2.amazonaws.com/apache"


def test_environment_name_resolves_under_environments():
    assert load_spec("ttareungyi").name == "ttareungyi"


def test_defaults_fill_optional_sections(write_spec):
    spec = load_spec(
        write_spec(
            """
            name: mini
            region: ap-northeast-2
            vpc_cidr: 10.1.0.0/16
            admin_cidrs: [203.0.113.5/32]
            brokers: {azs: [b, c]}
            """
        )
    )
    assert spec.brokers.broker_count == 2
    assert spec.nat.az == "a" and spec.nat.instance_type == "t3.micro"
    assert spec.kafka.port == 9092 and spec.kafka.controller_port == 9093
    assert spec.kafka.version == "3.9.1"
    assert spec.brokers.data_volume_gb == 20
    assert spec.state is None and spec.ssh.public_key is None


def _seed_with(replace: str, by: str) -> str:
    assert replace in SEED_TEXT, replace
    return SEED_TEXT.replace(replace, by, 1)


# (id, spec text, a fragment every problem line for it must contain)
BAD_SPECS = [
    ("malformed-yaml", "name: [ttareungyi\nregion: x\n", "malformed YAML: line"),
    ("impossible-date", _seed_with("name: ttareungyi", "name: 2025-13-01"),
     "malformed YAML: line 4, column 7: '2025-13-01' is not a date (month must be in 1..12)"),
    ("empty-file", "", "the spec is empty"),
    ("comments-only", "# nothing here\n", "the spec is empty"),
    ("not-a-mapping", "- just\n- a list\n", "must be a YAML mapping"),
    ("duplicate-key", _seed_with("region: ap-northeast-2", "region: ap-northeast-2\nregion: us-east-1"),
     "key 'region' appears twice"),
    ("unknown-top-key", SEED_TEXT + "colour: blue\n", "colour: unknown key; allowed here: name, region"),
    ("unknown-nested-key", _seed_with("  az: a\n", "  az: a\n  size: big\n"), "nat.size: unknown key; allowed here: az"),
    ("bad-cidr", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.300/16"), "vpc_cidr: '10.0.0.300/16' is not an IPv4 CIDR"),
    ("cidr-host-bits", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.5.0/16"), "did you mean 10.0.0.0/16"),
    ("cidr-no-prefix", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.0"), "add the prefix length"),
    ("public-vpc-range", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 8.8.0.0/16"), "not a private (RFC 1918) range"),
    ("vpc-too-big", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.0/8"), "a VPC here is /16 to /24"),
    ("vpc-prefix-too-small", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.0/26"), "a VPC here is /16 to /24"),
    ("vpc-too-small-for-brokers", _seed_with("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.0/24").replace("count: 3", "count: 200"),
     "vpc_cidr: 10.0.0.0/24 is too small"),
    ("admin-world", _seed_with("[203.0.113.50/32]", "[0.0.0.0/0]"), "admin_cidrs[0]: 0.0.0.0/0 would open SSH to the whole internet"),
    ("admin-not-cidr", _seed_with("[203.0.113.50/32]", "[my-laptop]"), "admin_cidrs[0]: 'my-laptop' is not a CIDR"),
    ("admin-empty", _seed_with("[203.0.113.50/32]", "[]"), "admin_cidrs: list should have at least 1 item"),
    ("az-not-in-region", _seed_with("azs: [b, c, d]", "azs: [b, c, e]"), "brokers.azs[2]: ap-northeast-2e does not exist"),
    ("nat-az-not-in-region", _seed_with("  az: a\n", "  az: f\n"), "nat.az: ap-northeast-2f does not exist"),
    ("az-not-a-letter", _seed_with("azs: [b, c, d]", "azs: [b, ap-northeast-2c]"), "not an AZ letter"),
    ("az-duplicate", _seed_with("azs: [b, c, d]", "azs: [b, b, d]"), "AZ b listed twice"),
    ("unknown-region", _seed_with("region: ap-northeast-2", "region: mars-north-1"), "region: unknown region 'mars-north-1'"),
    ("zero-brokers", _seed_with("count: 3", "count: 0"), "brokers.count: must be at least 1"),
    ("negative-brokers", _seed_with("count: 3", "count: -2"), "brokers.count: must be at least 1"),
    ("rf-above-brokers", _seed_with("count: 3", "count: 2"), "kafka.topics[0].replication_factor: 3 is more than the 2 broker(s)"),
    ("duplicate-topic", _seed_with("replication_factor: 3}", "replication_factor: 3}\n    - {name: bike-station-status}"),
     "kafka.topics[1].name: topic 'bike-station-status' is defined twice"),
    ("port-out-of-range", _seed_with("port: 9092", "port: 70000"), "kafka.port: 70000 is out of range"),
    ("port-privileged", _seed_with("port: 9092", "port: 80"), "kafka.port: 80 is out of range"),
    ("port-ssh-clash", _seed_with("port: 9092", "port: 22"), "kafka.port: 22 is the SSH port"),
    ("port-controller-clash", _seed_with("port: 9092", "port: 9093"), "kafka.controller_port: 9093 is also kafka.port"),
    ("bad-name-upper", _seed_with("name: ttareungyi", "name: Ttareungyi"), "name: 'Ttareungyi' is not an environment name"),
    ("bad-name-long", _seed_with("name: ttareungyi", "name: a-very-long-environment-name"), "is not an environment name"),
    ("bad-name-trailing-dash", _seed_with("name: ttareungyi", "name: ttareungyi-"), "is not an environment name"),
    ("missing-brokers", SEED_TEXT[: SEED_TEXT.index("brokers:")] + SEED_TEXT[SEED_TEXT.index("kafka:"):],
     "brokers: required key is missing"),
    ("wrong-type", _seed_with("data_volume_gb: 20", "data_volume_gb: lots"), "brokers.data_volume_gb: input should be a valid integer"),
    ("graviton", _seed_with("instance_type: t3.small", "instance_type: t4g.small"), "arm64 (Graviton)"),
    ("old-kafka", _seed_with("version: 3.9.1", "version: 2.8.0"), "kafka.version: 2.8.0 predates production KRaft"),
    ("mirror-http", _seed_with("port: 9092", "port: 9092\n  mirror_url: http://mirror.example.com/apache"),
     "kafka.mirror_url: 'http://mirror.example.com/apache' is not an https URL"),
    ("mirror-credentials", _seed_with("port: 9092", "port: 9092\n  mirror_url: https://ci:s3cret@proxy.example.com/apache"),
     "kafka.mirror_url: 'https://ci:s3cret@proxy.example.com/apache' carries credentials"),
    ("mirror-query", _seed_with("port: 9092", "port: 9092\n  mirror_url: https://proxy.example.com/apache?token=x"),
     "must be a base URL with a host and no ?query or #fragment"),
    ("mirror-no-host", _seed_with("port: 9092", "port: 9092\n  mirror_url: https:///apache"),
     "must be a base URL with a host"),
    ("reserved-tag", _seed_with("team: ttareungyi", "Name: mine"), "tags: tag 'Name' is set by kafkanet"),
    ("bad-public-key", SEED_TEXT + "ssh: {public_key: not-a-key}\n", "ssh.public_key: 'not-a-key' is neither"),
    ("bad-bucket", SEED_TEXT + "state: {bucket: Bad_Bucket}\n", "state.bucket: 'Bad_Bucket' is not an S3 bucket name"),
    ("subnet-outside-vpc", _seed_with("  az: a\n", "  az: a\n  subnet_cidr: 10.1.0.0/24\n"), "nat.subnet_cidr: 10.1.0.0/24 is outside vpc_cidr"),
    ("subnet-overlap", _seed_with("  az: a\n", "  az: a\n  subnet_cidr: 10.0.1.0/24\n").replace(
        "count: 3", "count: 3\n  subnet_cidrs: {b: 10.0.1.0/25}"), "overlaps nat.subnet_cidr"),
]


@pytest.mark.parametrize("text,fragment", [b[1:] for b in BAD_SPECS], ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_clear_line_exit_2_nothing_written(text, fragment, write_spec, capsys, tmp_path):
    path = write_spec(text)
    out_dir = tmp_path / "out"
    code = main(["generate", str(path), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert lines, "no error message"
    assert all(line.startswith(f"kafkanet: error: {path}: ") for line in lines), lines
    assert any(fragment in line for line in lines), f"{fragment!r} not in {lines}"
    assert "Traceback" not in captured.err
    assert not out_dir.exists(), "an invalid spec must write nothing"


def test_every_problem_is_reported_not_just_the_first(write_spec):
    text = _seed_with("count: 3", "count: 0").replace("port: 9092", "port: 22").replace("colour", "x")
    text += "colour: blue\n"
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(text))
    joined = "\n".join(err.value.problems)
    assert "brokers.count" in joined and "kafka.port" in joined and "colour: unknown key" in joined
    assert len(err.value.problems) == 3


def test_cross_field_problems_are_all_reported(write_spec):
    text = _seed_with("azs: [b, c, d]", "azs: [b, e, f]").replace("  az: a\n", "  az: z\n")
    with pytest.raises(SpecError) as err:
        load_spec(write_spec(text))
    fields = [p.split(": ")[1] for p in err.value.problems]
    assert fields == ["nat.az", "brokers.azs[1]", "brokers.azs[2]"]


def test_unknown_spec_name_says_what_exists(capsys):
    assert main(["validate", "no-such-env"]) == 2
    err = capsys.readouterr().err
    assert "no-such-env: no such spec file or environment" in err and "ttareungyi" in err


def test_public_key_from_file_relative_to_spec(write_spec, tmp_path):
    (tmp_path / "team.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P x\n")
    spec = load_spec(write_spec(SEED_TEXT + "ssh: {public_key: team.pub}\n"))
    assert spec.ssh.public_key == "team.pub"
