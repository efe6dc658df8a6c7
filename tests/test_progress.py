"""generator/environment/progress.py: terraform's lines to a log and counted, the live line, heartbeats, failures.

terraform is a fake shell script printing lines in terraform 1.x's own format
(``-no-color``), as tests/test_terraform_adapter.py does; nothing is applied.
"""

from __future__ import annotations

import io
import re
import stat
import time
from pathlib import Path

import pytest

from generator.base.errors import InfraError
from generator.environment import progress
from generator.environment.session import Timings
from generator.terraform.adapter import Terraform

APPLY = """\
Terraform used the selected providers to generate the following execution
plan. Resource actions are indicated with the following symbols:
  + create

Terraform will perform the following actions:

  # aws_instance.broker["1"] will be created
  + resource "aws_instance" "broker" {
      + ami                                  = "ami-0a1b2c3d4e5f60718"
      + instance_type                        = "t3.small"
    }

Plan: 4 to add, 0 to change, 0 to destroy.
aws_vpc.main: Creating...
aws_vpc.main: Creation complete after 1s [id=vpc-5d6f1b2a]
aws_subnet.public: Creating...
aws_subnet.private["a"]: Creating...
aws_subnet.public: Creation complete after 0s [id=subnet-0c3f6e2d]
aws_subnet.private["a"]: Still creating... [10s elapsed]
aws_subnet.private["a"]: Creation complete after 11s [id=subnet-7a8b9c0d]
aws_instance.broker["1"]: Creating...
aws_instance.broker["1"]: Still creating... [10s elapsed]
aws_instance.broker["1"]: Creation complete after 12s [id=i-0123456789abcdef0]

Apply complete! Resources: 4 added, 0 changed, 0 destroyed.
"""

DESTROY = """\
aws_vpc.main: Refreshing state... [id=vpc-5d6f1b2a]

Plan: 0 to add, 0 to change, 3 to destroy.
aws_instance.broker["1"]: Destroying... [id=i-0123456789abcdef0]
aws_instance.broker["1"]: Destruction complete after 1s
aws_subnet.public: Destroying... [id=subnet-0c3f6e2d]
aws_subnet.public: Destruction complete after 0s
aws_vpc.main: Destroying... [id=vpc-5d6f1b2a]
aws_vpc.main: Destruction complete after 0s

Destroy complete! Resources: 3 destroyed.
"""

FAILING = """\
Plan: 2 to add, 0 to change, 0 to destroy.
aws_vpc.main: Creating...
aws_vpc.main: Creation complete after 1s [id=vpc-5d6f1b2a]
aws_instance.broker["1"]: Creating...
"""

ERROR = """\

Error: creating EC2 Instance: InvalidAMIID.NotFound: The image id '[ami-0a1b2c3d4e5f60718]' does not exist

  with aws_instance.broker["1"],
  on brokers.tf line 12, in resource "aws_instance" "broker":
  12: resource "aws_instance" "broker" {

"""

# terraform plan -no-color refusing two instances, as printed (two diagnostics, more than TAIL lines)
PRECONDITIONS = """\

Error: Resource precondition failed

  on kafka.tf line 141, in resource "aws_instance" "broker":
 141:       condition     = length(data.aws_ec2_instance_type_offerings.broker[each.value.subnet].instance_types) > 0
    ├────────────────
    │ data.aws_ec2_instance_type_offerings.broker is object with 2 attributes
    │ each.value.subnet is "b"

EC2 does not offer t2.micro in ap-northeast-2b, the AZ of broker-2: in the
spec, set brokers.instance_type to a type offered in every AZ of brokers.azs,
or drop this AZ from brokers.azs.

Error: Resource precondition failed

  on nat.tf line 125, in resource "aws_instance" "nat":
 125:       condition     = length(data.aws_ec2_instance_type_offerings.nat.instance_types) > 0
    ├────────────────
    │ data.aws_ec2_instance_type_offerings.nat.instance_types is empty list of string

EC2 does not offer t2.micro in ap-northeast-2b, the NAT instance's AZ: in the
spec, set nat.instance_type to a type offered there or nat.az to an AZ that
offers t2.micro.
"""


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Each test: its own output, no terminal, not verbose, no sinks of other tests."""
    out = io.StringIO()
    monkeypatch.setattr(progress, "settings", progress.Settings(stream=out, tty=False))
    monkeypatch.setattr(progress, "_sinks", {})
    monkeypatch.setattr(progress, "_live", None)
    monkeypatch.setattr(progress, "_drawn", 0)
    return out


def _terraform(tmp_path: Path, stdout: str, stderr: str = "", rc: int = 0, sleep: float = 0) -> Terraform:
    """The adapter around a fake terraform printing ``stdout``/``stderr``, to a sink logging to tmp_path.

    The two pipes are read by two threads: the pause keeps their lines in the order printed."""
    (tmp_path / "out.txt").write_text(stdout)
    (tmp_path / "err.txt").write_text(stderr)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "terraform"
    script.write_text(f"#!/bin/sh\nsleep {sleep}\ncat '{tmp_path}/out.txt'\nsleep 0.3\ncat '{tmp_path}/err.txt' >&2\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "terraform.rc"
    config.write_text("")
    sink = progress.terraform_sink(tmp_path / progress.LOG_FILE)
    return Terraform(
        tmp_path, cli_config=config, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, on_line=sink, attempts=1
    )


def test_the_sink_counts_an_apply_and_a_destroy(tmp_path: Path, fresh: io.StringIO) -> None:
    tf = _terraform(tmp_path, APPLY)
    sink = progress.terraform_sink(tmp_path / progress.LOG_FILE)
    with progress.activity("terraform apply"):
        tf.apply()
        assert sink.status("terraform apply") == "4/4 resources"
    (tmp_path / "out.txt").write_text(DESTROY)
    with progress.activity("terraform destroy"):
        tf.destroy()
        assert sink.status("terraform destroy") == "3/3 resources"
    log = (tmp_path / progress.LOG_FILE).read_text()
    assert all(line in log for line in APPLY.splitlines() + DESTROY.splitlines())
    assert re.findall(r"^==== .* (terraform \w+)$", log, re.M) == ["terraform apply", "terraform destroy"]
    # terraform's lines are in the log only; the terminal hears of the log once
    assert fresh.getvalue() == f"kafkanet: terraform output goes to {progress._display(sink.log)}\n"


def test_the_adapters_own_notes_still_reach_the_terminal(tmp_path: Path, fresh: io.StringIO) -> None:
    sink = progress.terraform_sink(tmp_path / progress.LOG_FILE)
    sink("kafkanet: terraform apply hit a transient error (endpoint refused the connection); retrying in 5s")
    assert fresh.getvalue().splitlines()[-1].endswith("retrying in 5s")


def test_a_saved_plans_total_carries_over_to_its_apply(tmp_path: Path) -> None:
    sink = progress.terraform_sink(tmp_path / progress.LOG_FILE)
    with progress.activity("terraform plan"):
        sink("Plan: 2 to add, 1 to change, 0 to destroy.")
        assert sink.status("terraform plan") is None  # a plan changes nothing: no count
    with progress.activity("terraform apply"):
        sink("aws_vpc.main: Modifications complete after 0s [id=vpc-5d6f1b2a]")
        assert sink.status("terraform apply") == "1/3 resources"
    with progress.activity("terraform init"):
        assert sink.status("terraform init") is None  # not the last apply's total


def test_a_step_without_terraform_between_plan_and_apply_keeps_the_total(tmp_path: Path) -> None:
    """A first local apply waits for the module check between its plan and its apply."""
    sink = progress.terraform_sink(tmp_path / progress.LOG_FILE)
    with progress.activity("terraform plan"):
        sink("Plan: 3 to add, 0 to change, 0 to destroy.")
    with progress.activity("module check", terraform=False):
        pass
    with progress.activity("terraform apply"):
        sink("aws_vpc.main: Creation complete after 0s [id=vpc-5d6f1b2a]")
        assert sink.status("terraform apply") == "1/3 resources"


def test_without_a_terminal_a_heartbeat_comes_within_the_interval(tmp_path: Path, fresh: io.StringIO) -> None:
    progress.settings.heartbeat = 0.05
    sink = progress.terraform_sink(tmp_path / progress.LOG_FILE)
    with progress.activity("terraform apply"):
        sink("Plan: 4 to add, 0 to change, 0 to destroy.")
        sink("aws_vpc.main: Creation complete after 1s [id=vpc-5d6f1b2a]")
        time.sleep(1.5)  # the ticker checks every min(heartbeat, 1 s)
    beats = re.findall(r"^kafkanet: terraform apply \.\.\. 1/4 resources, \d+ s$", fresh.getvalue(), re.M)
    assert beats, fresh.getvalue()
    assert "\r" not in fresh.getvalue() and "\x1b" not in fresh.getvalue()  # plain lines for CI logs


def test_no_heartbeat_before_the_interval(fresh: io.StringIO) -> None:
    with progress.activity("generate"):
        time.sleep(1.2)
    assert fresh.getvalue() == ""  # the default 10 s have not passed


def test_a_terminal_gets_one_updating_line_dim_unless_no_color(
    tmp_path: Path, fresh: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress.settings.tty = True
    progress.settings.redraw = 0.05
    monkeypatch.delenv("NO_COLOR", raising=False)
    with progress.activity("terraform apply"):
        time.sleep(0.3)
    assert "\rkafkanet: terraform apply" not in fresh.getvalue()  # drawn dim: colour codes first
    assert "\x1b[2mkafkanet: terraform apply ... 0 s\x1b[0m" in fresh.getvalue()
    assert fresh.getvalue().endswith("\r")  # cleared at the end: the step's own line follows

    fresh.truncate(0)
    fresh.seek(0)
    monkeypatch.setenv("NO_COLOR", "1")
    with progress.activity("terraform apply"):
        time.sleep(0.3)
    assert "kafkanet: terraform apply ... 0 s" in fresh.getvalue()
    assert "\x1b" not in fresh.getvalue()


def test_verbose_streams_every_line(tmp_path: Path, fresh: io.StringIO) -> None:
    progress.configure(verbose=True)
    tf = _terraform(tmp_path, APPLY)
    with progress.activity("terraform apply"):
        tf.apply()
    shown = fresh.getvalue().splitlines()
    assert [line for line in shown if not line.startswith("kafkanet: ")] == APPLY.splitlines()
    assert (tmp_path / progress.LOG_FILE).is_file()  # and the log is kept all the same


def test_a_failure_shows_the_resource_the_log_tail_and_path(tmp_path: Path) -> None:
    refreshed = "".join(f"aws_subnet.private[\"{n}\"]: Refreshing state... [id=subnet-{n:08x}]\n" for n in range(30))
    tf = _terraform(tmp_path, refreshed + FAILING, ERROR, rc=1)
    log = progress._display(tmp_path / progress.LOG_FILE)
    with pytest.raises(InfraError) as caught, Timings().step("terraform apply"):
        tf.apply()
    problems = caught.value.problems
    assert problems[0].startswith("terraform apply failed in ")
    assert "InvalidAMIID.NotFound" in problems[0] and "(brokers.tf line 12)" in problems[0]
    assert problems[1:] == [  # terraform's stderr, whole: the log interleaves it with stdout in no fixed order
        'failing resource: aws_instance.broker["1"]',
        "\n".join(["terraform said:", *ERROR.splitlines()]),
        f"terraform's full output: {log}",
    ]


def test_a_failure_shows_every_diagnostic_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from generator.cli import _print_problems

    tf = _terraform(tmp_path, "data.aws_ami.ubuntu: Reading...\n" * 30, PRECONDITIONS, rc=1)
    with pytest.raises(InfraError) as caught, Timings().step("terraform plan"):
        tf.plan()
    _print_problems(caught.value)
    err = capsys.readouterr().err
    # each diagnostic whole, at the start of its lines as terraform printed it
    assert PRECONDITIONS in err
    assert f"terraform said:\n{PRECONDITIONS}" in err
    # kafkanet's own verdict names terraform's two errors, and the log; the tail is not behind "kafkanet: error:"
    assert re.findall(r"^kafkanet: error: .*Error: (.*)$", err, re.M) == [
        "Resource precondition failed (kafka.tf line 141)", "Resource precondition failed (nat.tf line 125)"]


def test_step_lines_keep_their_format(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress.settings, "stream", None)  # sys.stderr, as the CLI has it
    timings = Timings()
    with timings.step("roll broker-1: replace"):
        pass
    assert re.fullmatch(r"kafkanet: roll broker-1: replace \.\.\.\nkafkanet: roll broker-1: replace: \d\.\d s\n",
                        capsys.readouterr().err)  # fmt: skip
