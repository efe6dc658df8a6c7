"""`kafkanet check DIR`: the seed module passes every tool; a hand-broken copy fails each at its file and line.

The broken copy carries one mistake per tool, each found only by running that
tool: an unformatted line (terraform fmt), a reference to a resource that does not
exist (terraform validate), an unquoted variable in a setup script (shellcheck), a
systemd unit with an Environment= line systemd 252 ignores (systemd-analyze), a
``runcmd`` that is not a list (cloud-init schema) and an unencrypted EBS volume
(checkov).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.cli import main
from generator.module import check, userdata
from generator.module.check import check_module
from generator.module.generate import generate
from generator.terraform.tfcli import write_cli_config
from tests.conftest import ROOT, SEED, require

pytestmark = pytest.mark.terraform

TOOLS = ("terraform fmt", "terraform init", "terraform validate", "shellcheck", "systemd-analyze", "cloud-init",
         "checkov")  # fmt: skip
LINE = re.compile(rf"^(?P<file>[^:]+)(?::(?P<line>\d+))?: (?P<tool>{'|'.join(TOOLS)}): (?P<message>.*)$")

# The broker unit as today's broker-setup.sh writes it, with a 1 MB heap: the backslash-escaped
# space is not systemd syntax, so systemd ignores the whole line (and Kafka gets its default heap).
@dataclass(frozen=True)
class Found:
    file: str
    line: int | None
    tool: str
    message: str


@dataclass(frozen=True)
class Run:
    rc: int
    findings: list[Found]
    stderr: str


def _check(directory: Path) -> Run:
    result = subprocess.run([sys.executable, "-m", "generator.cli", "check", str(directory)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    findings = []
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        assert match, f"not FILE:LINE: tool: message: {line!r}"
        number = int(match["line"]) if match["line"] else None
        findings.append(Found(match["file"], number, match["tool"], match["message"]))
    return Run(result.returncode, findings, result.stderr)


def _replace(path: Path, old: str, new: str) -> int:
    """Replace the one occurrence of ``old``; the line (1-based) where it started."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name}: {old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))
    return text[: text.index(old)].count("\n") + 1


@pytest.fixture(scope="module")
def seed_module(tmp_path_factory) -> Path:
    require("terraform")
    return generate(SEED, tmp_path_factory.mktemp("check") / "seed").out_dir


@pytest.fixture(scope="module")
def seed_run(seed_module) -> Run:
    return _check(seed_module)


@pytest.fixture(scope="module")
def broken(seed_module, tmp_path_factory) -> tuple[Path, dict[str, tuple[str, int]]]:
    """A copy of the seed module with one mistake per tool; {tool: (file, line)} of each."""
    mod = Path(shutil.copytree(seed_module, tmp_path_factory.mktemp("check") / "broken"))
    where: dict[str, tuple[str, int]] = {}

    line = _replace(mod / "providers.tf", "\n  region = local.region\n", "\nregion = local.region\n") + 1
    where["terraform fmt"] = ("providers.tf", line)

    line = _replace(mod / "nat.tf", "= aws_subnet.public.id\n", "= aws_subnet.missing.id\n")
    where["terraform validate"] = ("nat.tf", line)

    line = _replace(mod / "user-data/broker-2.yaml", "    set -euo pipefail\n",
                    "    set -euo pipefail\n    ls $HOME\n") + 1  # fmt: skip
    where["shellcheck"] = ("user-data/broker-2.yaml", line)

    # the heap line as 24d1c87's heredoc wrote it, in the unit the module now ships as a file
    line = _replace(mod / "user-data/broker-1.yaml", "    EnvironmentFile=/etc/kafkanet/kafka.env\n",
                    "    Environment=KAFKA_HEAP_OPTS=-Xms1m\\ -Xmx1m\n")
    where["systemd-analyze"] = ("user-data/broker-1.yaml", line)

    runcmd = (mod / "user-data/broker-3.yaml").read_text().split("\nruncmd:\n", 1)[1]
    line = _replace(mod / "user-data/broker-3.yaml", "\nruncmd:\n" + runcmd, "\nruncmd: 5\n") + 1
    where["cloud-init"] = ("user-data/broker-3.yaml", line)

    kafka_tf = mod / "kafka.tf"
    _replace(kafka_tf, "  type              = \"gp3\"\n  encrypted         = true\n", "  type              = \"gp3\"\n")
    volume = kafka_tf.read_text().splitlines().index('resource "aws_ebs_volume" "kafka_data" {') + 1
    where["checkov"] = ("kafka.tf", volume)
    return mod, where


@pytest.fixture(scope="module")
def broken_run(broken) -> Run:
    return _check(broken[0])


def _at(run: Run, broken, tool: str) -> list[Found]:
    mod, where = broken
    file, line = where[tool]
    return [f for f in run.findings if f.tool == tool and f.file == str(mod / file) and f.line == line]


def test_the_generated_seed_module_is_clean(seed_run, seed_module):
    assert seed_run.findings == [] and seed_run.rc == 0, seed_run
    assert "clean" in seed_run.stderr
    # terraform init ran in a scratch copy: the module got nothing it did not have
    assert not (seed_module / ".terraform").exists() and not (seed_module / ".terraform.lock.hcl").exists()


def test_terraform_fmt_finds_the_unformatted_line(broken_run, broken):
    assert _at(broken_run, broken, "terraform fmt"), broken_run.findings


def test_terraform_validate_finds_the_undeclared_reference(broken_run, broken):
    found = _at(broken_run, broken, "terraform validate")
    assert [f.message.split(":")[0] for f in found] == ["Reference to undeclared resource"], broken_run.findings


def test_shellcheck_finds_the_unquoted_variable_at_its_user_data_line(broken_run, broken):
    found = _at(broken_run, broken, "shellcheck")
    assert [f.message.split(" ")[0] for f in found] == ["SC2086"], broken_run.findings


def test_systemd_analyze_finds_the_environment_line_systemd_ignores(broken_run, broken):
    found = _at(broken_run, broken, "systemd-analyze")
    assert len(found) == 1 and "Invalid syntax, ignoring" in found[0].message, broken_run.findings


def test_cloud_init_schema_rejects_a_runcmd_that_is_not_a_list(broken_run, broken):
    found = _at(broken_run, broken, "cloud-init")
    assert [f.message for f in found] == ["runcmd: 5 is not of type 'array'"], broken_run.findings


def test_checkov_finds_the_unencrypted_volume(broken_run, broken):
    found = _at(broken_run, broken, "checkov")
    assert {f.message.split(":")[0] for f in found} >= {"CKV_AWS_3"}, broken_run.findings


def test_the_broken_copy_fails_with_those_findings_and_no_others(broken_run, broken):
    mod, where = broken
    assert broken_run.rc == 1
    expected = {(tool, str(mod / file), line) for tool, (file, line) in where.items()}
    assert {(f.tool, f.file, f.line) for f in broken_run.findings} == expected, broken_run.findings


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == f"kafkanet: error: {tmp_path / 'nowhere'}: no such directory"
    (tmp_path / "notes.txt").write_text("no terraform here\n")
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Terraform module" in err[0] and "kafkanet generate" in err[0]


def test_a_missing_tool_is_one_line_naming_how_to_get_it(seed_module, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "terraform").symlink_to(require("terraform"))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(check, "CHECKOV", tmp_path / "no-venv" / "bin" / "checkov")
    assert main(["check", str(seed_module)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" not found")[0] for line in err] == [
        "kafkanet: error: shellcheck", "kafkanet: error: systemd-analyze", "kafkanet: error: cloud-init",
        "kafkanet: error: checkov",
    ]  # fmt: skip
    assert all("make install" in line for line in err)


def test_a_tool_that_outlives_its_budget_is_a_finding_naming_it(seed_module, tmp_path):
    config = write_cli_config(tmp_path / "terraform.rc")
    budgets = {tool: 0.001 for tool in check.DEFAULT_TIMEOUTS}
    findings = check_module(seed_module, cli_config=config, timeouts=budgets)
    assert {f.tool for f in findings} == {
        "terraform fmt", "terraform init", "shellcheck", "systemd-analyze", "cloud-init", "checkov"
    }  # fmt: skip
    assert {f.message for f in findings} == {"timed out after 0.001 s"}
    assert not (seed_module / ".terraform").exists() and not (seed_module / ".terraform.lock.hcl").exists()


def test_user_data_entries_know_their_lines_kind_and_unit(tmp_path):
    (tmp_path / "user-data").mkdir()
    (tmp_path / ".terraform").mkdir()
    (tmp_path / ".terraform" / "x.yaml").write_text("#cloud-config\n")
    (tmp_path / "extra.cfg").write_text("#cloud-config\nruncmd: []\n")
    (tmp_path / "README.md").write_text("# not user data\n")
    doc = tmp_path / "user-data" / "a.yaml"
    doc.write_text(
        "#cloud-config\n"
        "write_files:\n"
        "  - path: /usr/local/sbin/literal\n"
        "    content: |\n"
        "      #!/usr/bin/env bash\n"
        "      ls $HOME\n"
        "  - path: /usr/local/sbin/quoted\n"
        '    content: "#!/bin/sh\\nls $HOME\\n"\n'
        "  - path: /etc/systemd/system/sshd.service.d/override.conf\n"
        "    content: |\n"
        "      [Service]\n"
        "  - path: /etc/kafka/server.properties\n"
        "    content: 'a=b'\n"
    )
    assert userdata.documents(tmp_path) == [tmp_path / "extra.cfg", doc]
    literal, quoted, drop_in, plain = userdata.load(doc).write_files
    assert (literal.is_shell_script, literal.line, literal.document_line(2)) == (True, 3, 6)
    assert (quoted.is_shell_script, quoted.document_line(2)) == (True, None)  # named by script path and line
    assert (drop_in.unit_name, drop_in.is_unit, plain.unit_name, plain.is_shell_script) == (
        "sshd.service", False, None, False)
    assert userdata.load(doc).line_of("write_files.1.content") == 8
