"""Contract tests of generator/terraform/adapter.py (with its runner, process.py) and generator/terraform/tfcli.py.

Tests marked ``terraform`` run the real terraform binary with the offline
provider mirror against a real moto server on 127.0.0.1 (never real AWS). The
others use a fake ``terraform`` script on PATH and need neither.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from generator.base.errors import InfraError, PrerequisiteError
from generator.localaws import moto_server
from generator.terraform import tfcli
from generator.terraform.adapter import Terraform, terraform_errors

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_module"


# ----------------------------------------------------------------- helpers


def _processes_in(workdir: Path) -> dict[int, tuple[int, str]]:
    """Live processes whose cwd is ``workdir``: {pid: (pgid, argv0)}.

    terraform and its provider plugins both run there.
    """
    found: dict[int, tuple[int, str]] = {}
    target = str(workdir.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != target:
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[2]), argv0)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _fake_terraform(bin_dir: Path, body: str) -> Path:
    """A ``terraform`` shell script on a PATH of its own."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "terraform"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def _fake_tf(tmp_path: Path, body: str, **options: Any) -> Terraform:
    """The adapter around a fake ``terraform`` (``body``) that runs in ``tmp_path``."""
    _fake_terraform(tmp_path / "bin", body)
    config = tmp_path / "terraform.rc"
    config.write_text("")
    options.setdefault("on_line", None)
    return Terraform(tmp_path, cli_config=config, env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}, **options)


def _copy_fixture(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tfcli.write_cli_config(tmp_path_factory.mktemp("tfcli") / "terraform.rc")


@pytest.fixture(scope="module")
def moto(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> moto_server.MotoServer:
    state = tmp_path_factory.mktemp("moto") / ".kafkanet"
    request.addfinalizer(lambda: moto_server.stop(state))  # teardown before setup
    return moto_server.start(state)


@pytest.fixture(scope="module")
def lifecycle(request, tmp_path_factory, cli_config, moto):
    """init -> plan -out -> apply the saved plan -> plan -> outputs -> destroy, once.

    Each test below asserts one fact from these records. Destroy is registered
    as a finalizer before anything is applied. (``apply`` with ``-var`` instead
    of a saved plan runs in the timeout test; a saved plan saves ~10 s of
    provider start-ups here.)
    """
    workdir = _copy_fixture(tmp_path_factory.mktemp("lifecycle") / "tiny")
    lines: list[str] = []
    tf = Terraform(
        workdir, cli_config=cli_config, variables={"name": "kn-tiny-lc"},
        env=moto.env(), on_line=lines.append,
    )
    record: dict = {"workdir": workdir, "lines": lines, "tf": tf, "seconds": {}}

    def cleanup() -> None:
        if "destroy" not in record and (workdir / "terraform.tfstate").exists():
            tf.destroy()

    request.addfinalizer(cleanup)
    ec2 = moto.ec2_client("ap-northeast-2")
    for step, call in [
        ("init", tf.init),
        ("plan_before", lambda: tf.plan(out="tfplan")),
        ("apply", lambda: tf.apply("tfplan")),
        ("plan_after", tf.plan),
        ("outputs", tf.outputs),
        ("vpcs_applied", lambda: [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]),
        ("destroy", tf.destroy),
        ("outputs_destroyed", tf.outputs),
        ("vpcs_destroyed", lambda: [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]),
    ]:
        started = time.monotonic()
        record[step] = call()
        record["seconds"][step] = round(time.monotonic() - started, 2)
    print(f"\ntiny module timings (s): {record['seconds']}")
    return record


# ------------------------------------------------------ real terraform: lifecycle


@pytest.mark.terraform
def test_require_terraform_reports_version() -> None:
    version = tfcli.require_terraform()
    assert tuple(int(p) for p in version.split(".")[:2]) >= (1, 5)


@pytest.mark.terraform
def test_init_links_provider_from_mirror_without_copying(lifecycle) -> None:
    linked = (
        lifecycle["workdir"] / ".terraform/providers/registry.terraform.io/hashicorp/aws"
        / tfcli.PROVIDER_VERSION / tfcli.provider_platform()
    )
    assert lifecycle["init"].rc == 0
    assert linked.is_symlink(), "terraform init copied the provider instead of linking the mirror"
    assert Path(os.readlink(linked)).is_relative_to(tfcli.find_mirror())


@pytest.mark.terraform
def test_plan_before_apply_reports_changes(lifecycle) -> None:
    plan = lifecycle["plan_before"]
    assert (plan.rc, plan.changes) == (2, True)


@pytest.mark.terraform
def test_apply_creates_the_resources(lifecycle) -> None:
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in lifecycle["apply"].stdout


@pytest.mark.terraform
def test_plan_after_apply_has_no_changes(lifecycle) -> None:
    plan = lifecycle["plan_after"]
    assert (plan.rc, plan.changes) == (0, False), plan.stdout


@pytest.mark.terraform
def test_outputs_are_plain_values(lifecycle) -> None:
    outputs = lifecycle["outputs"]
    assert set(outputs) == {"vpc_id", "subnet_cidr", "security_group_id"}
    assert outputs["subnet_cidr"] == "10.42.1.0/24"
    assert outputs["security_group_id"].startswith("sg-")


@pytest.mark.terraform
def test_applied_vpc_is_in_moto(lifecycle) -> None:
    assert lifecycle["outputs"]["vpc_id"] in lifecycle["vpcs_applied"]


@pytest.mark.terraform
def test_destroy_removes_the_vpc_from_moto(lifecycle) -> None:
    assert lifecycle["destroy"].rc == 0
    assert lifecycle["outputs"]["vpc_id"] not in lifecycle["vpcs_destroyed"]


@pytest.mark.terraform
def test_outputs_after_destroy_are_empty(lifecycle) -> None:
    assert lifecycle["outputs_destroyed"] == {}


@pytest.mark.terraform
def test_progress_is_streamed_and_kept(lifecycle) -> None:
    assert "aws_vpc.this: Creating..." in lifecycle["lines"]
    assert "aws_vpc.this: Creating..." in lifecycle["apply"].stdout.splitlines()


@pytest.mark.terraform
def test_argv_uses_terraform_1x_spelling(lifecycle) -> None:
    apply_argv = lifecycle["apply"].argv
    destroy_argv = lifecycle["destroy"].argv
    assert {"-auto-approve=true", "-input=false", "-no-color"} <= set(apply_argv)
    assert apply_argv[-1] == "tfplan" and not any(a.startswith("-var") for a in apply_argv)
    assert "-var=name=kn-tiny-lc" in destroy_argv
    assert "-force" not in destroy_argv and "-auto-approve=true" in destroy_argv
    assert not any(arg.startswith("-var-file") for arg in destroy_argv)


@pytest.mark.terraform
def test_missing_output_is_an_infra_error(lifecycle) -> None:
    with pytest.raises(InfraError, match="output 'nope' not found"):
        lifecycle["tf"].output("nope")


# ------------------------------------------------------ real terraform: failures


@pytest.mark.terraform
def test_failing_command_raises_with_terraforms_error_line(tmp_path, cli_config, moto) -> None:
    workdir = _copy_fixture(tmp_path / "broken")
    with (workdir / "main.tf").open("a") as tf_file:
        tf_file.write('\noutput "broken" {\n  value = aws_vpc.missing.id\n}\n')
    tf = Terraform(workdir, cli_config=cli_config, env=moto.env(), on_line=None)
    tf.init()
    with pytest.raises(InfraError) as caught:
        tf.plan()
    message = str(caught.value)
    assert message.startswith(f"terraform plan failed in {os.path.relpath(workdir)}: ")
    assert "Error: Reference to undeclared resource (main.tf line" in message


class _Blackhole:
    """A TCP server on 127.0.0.1 that accepts and never answers: the provider's
    API call hangs in flight, with terraform and the provider plugin both alive."""

    def __init__(self, on_connect) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.on_connect = on_connect
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.on_connect()

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.sock.close()


@pytest.mark.terraform
def test_timeout_kills_terraform_and_its_provider_plugin(tmp_path, cli_config, request) -> None:
    workdir = _copy_fixture(tmp_path / "hang")
    seen: dict[int, tuple[int, str]] = {}

    def snapshot() -> None:
        if not seen:
            seen.update(_processes_in(workdir))

    hole = _Blackhole(snapshot)
    request.addfinalizer(hole.close)
    tf = Terraform(
        workdir, cli_config=cli_config, on_line=None, kill_grace=2.0,
        env={**{f"AWS_ENDPOINT_URL{suffix}": f"http://127.0.0.1:{hole.port}" for suffix in ("", "_EC2", "_STS", "_IAM")},
             "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_PROFILE": None, "AWS_SESSION_TOKEN": None, "AWS_EC2_METADATA_DISABLED": "true"},
    )
    tf.init()
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"terraform apply timed out after 25s .*killed its process group"):
        tf.apply(timeout=25)  # the provider calls the endpoint ~12 s in, on 2 CPUs
    elapsed = time.monotonic() - started
    assert seen, "the provider never called the endpoint before the timeout: raise the timeout"
    groups = {pgid for pgid, _ in seen.values()}
    names = sorted(Path(argv0).name for _, argv0 in seen.values())
    assert len(groups) == 1, f"terraform and plugin in different groups: {seen}"
    assert any(name.startswith("terraform-provider-aws") for name in names), names
    assert [pid for pid in seen if _alive(pid)] == []
    assert _processes_in(workdir) == {}
    assert elapsed < 25 + 2 + 5


# ------------------------------------------------- fake terraform: runner contract


def test_the_interrupt_waits_for_the_walk_that_can_take_it(tmp_path) -> None:
    """terraform loses a SIGINT that comes before its graph walk has begun (Context.Stop acts only on a
    running walk, and the walk's start resets it). The stand-in ignores SIGINT for its first 1.5 s of
    start-up, then walks: its resource line, and from then on a SIGINT makes it save its state and
    exit. The timeout comes at 0.5 s: a SIGINT then would be lost and the grace end in a SIGKILL."""
    lines: list[str] = []
    tf = _fake_tf(
        tmp_path,
        "trap '' INT\n"
        "sleep 1.5\n"
        "trap 'echo \"state saved\"; exit 1' INT\n"
        "echo 'aws_vpc.this: Creating...'\n"
        "while :; do sleep 0.1; done\n",
        kill_grace=5.0,
        on_line=lines.append,
    )
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"terraform plan timed out after 0.5s"):
        tf.plan(timeout=0.5)
    assert "state saved" in lines, f"the SIGINT was lost and the grace ended in a SIGKILL: {lines}"
    assert time.monotonic() - started < 5


def test_timeout_sigkills_a_group_that_ignores_sigint(tmp_path) -> None:
    pids: list[int] = []
    tf = _fake_tf(
        tmp_path,
        "trap '' INT TERM\n"  # ignored signals stay ignored in children
        "sleep 300 &\n"
        "echo \"pids $$ $!\"\n"
        "sleep 300\n",
        kill_grace=0.5,
        on_line=lambda line: pids.extend(int(p) for p in line.split()[1:]) if line.startswith("pids") else None,
    )
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"terraform plan timed out after 1s in .*: killed its process group"):
        tf.plan(timeout=1)
    assert time.monotonic() - started < 5
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)


def test_plugin_sockets_go_with_the_run_even_when_it_is_killed(tmp_path) -> None:
    """Plugins leave their unix socket in TMPDIR when killed; each run's TMPDIR is its own."""
    tf = _fake_tf(tmp_path, 'echo "$TMPDIR" > tmpdir\ntouch "$TMPDIR/plugin123"\nsleep 300\n', kill_grace=0.5)
    with pytest.raises(InfraError, match="timed out"):
        tf.plan(timeout=1)
    scratch = Path((tmp_path / "tmpdir").read_text().strip())
    assert scratch.name.startswith("kn-tf-") and not scratch.exists()


def test_transient_error_is_retried(tmp_path) -> None:
    tf = _fake_tf(
        tmp_path,
        "if [ ! -e tried ]; then touch tried\n"
        "  echo 'Error: reading EC2 VPC: dial tcp 127.0.0.1:1: connect: connection refused' >&2; exit 1\n"
        "fi\necho ok\n",
        retry_delay=0.01,
    )
    result = tf.apply()
    assert (result.rc, result.attempts, result.stdout) == (0, 2, "ok\n")


def test_other_errors_are_not_retried(tmp_path) -> None:
    tf = _fake_tf(
        tmp_path,
        "echo x >> calls\nprintf 'Error: Unsupported argument\\n\\n  on main.tf line 3:\\n' >&2; exit 1\n",
        retry_delay=0.01,
    )
    with pytest.raises(InfraError, match=r"apply failed in .*: Error: Unsupported argument \(main.tf line 3\)$"):
        tf.apply()
    assert (tmp_path / "calls").read_text() == "x\n"


def test_environment_is_explicit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "real-account")
    config = tmp_path / "terraform.rc"
    env = Terraform(tmp_path, cli_config=config, env={"AWS_PROFILE": None, "X": "1"}).environment()
    assert env["TF_CLI_CONFIG_FILE"] == str(config.resolve())
    assert (env["TF_IN_AUTOMATION"], env["CHECKPOINT_DISABLE"], env["X"]) == ("1", "1", "1")
    assert "AWS_PROFILE" not in env


def test_error_lines_are_extracted_with_location() -> None:
    text = (
        "Error: Reference to undeclared resource\n\n"
        '  on main.tf line 7, in output "x":\n   7:   value = aws_vpc.y.id\n\n'
        "Error: creating EC2 VPC: api error\n\n  with aws_vpc.this,\n"
    )
    assert terraform_errors(text) == [
        "Error: Reference to undeclared resource (main.tf line 7)",
        "Error: creating EC2 VPC: api error",
    ]


# ----------------------------------------------------------- prerequisites


def test_missing_terraform_is_a_prerequisite_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrerequisiteError, match="^terraform not found on PATH: install Terraform >= 1.5"):
        tfcli.require_terraform(path=str(tmp_path / "empty"))


def test_adapter_without_terraform_is_a_prerequisite_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    config = tmp_path / "terraform.rc"
    config.write_text("")
    tf = Terraform(tmp_path, cli_config=config, env={"PATH": str(tmp_path / "empty")})
    with pytest.raises(PrerequisiteError, match="^terraform not found on PATH"):
        tf.init()


def test_old_terraform_is_a_prerequisite_error(tmp_path) -> None:
    _fake_terraform(tmp_path / "bin", 'echo \'{"terraform_version": "1.4.6"}\'\n')
    with pytest.raises(PrerequisiteError, match=r"^terraform 1\.4\.6 at .* is too old"):
        tfcli.require_terraform(path=str(tmp_path / "bin"))


def test_wrong_mirror_override_is_a_prerequisite_error(tmp_path) -> None:
    with pytest.raises(PrerequisiteError, match=r"^provider mirror not found: KAFKANET_TF_MIRROR="):
        tfcli.find_mirror({"KAFKANET_TF_MIRROR": str(tmp_path)})


def test_mirror_override_may_point_inside_the_tree(tmp_path) -> None:
    plat = tmp_path / "registry.terraform.io/hashicorp/aws" / tfcli.PROVIDER_VERSION / tfcli.provider_platform()
    plat.mkdir(parents=True)
    binary = plat / f"terraform-provider-aws_v{tfcli.PROVIDER_VERSION}_x5"
    binary.write_text("")
    binary.chmod(0o755)
    assert tfcli.find_mirror({"KAFKANET_TF_MIRROR": str(plat)}) == tmp_path


def test_without_a_mirror_terraform_keeps_the_users_cli_config(tmp_path, monkeypatch, cli_config) -> None:
    """An infra owner's laptop: terraform and a CLI config of their own, no mirror kafkanet knows of.

    kafkanet must not refuse (it used to: "provider mirror not found") and must not
    override the user's configuration: here the user's own file (a copy of the
    project's, so that init works offline) is what terraform init reads.
    """
    monkeypatch.delenv(tfcli.MIRROR_ENV, raising=False)
    monkeypatch.setattr(tfcli, "MIRROR_CANDIDATES", (str(tmp_path / "no-mirror-here"),))
    assert tfcli.find_mirror() is None
    tfcli.require_terraform()  # terraform alone is enough
    stale = tmp_path / "build" / "terraform.rc"
    stale.parent.mkdir()
    stale.write_text("# an earlier run's config\n")
    assert tfcli.write_cli_config(stale) is None and not stale.exists()
    users = tmp_path / "users.tfrc"
    users.write_text(cli_config.read_text())
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(users))
    tf = Terraform(_copy_fixture(tmp_path / "module"), cli_config=None, on_line=None)
    assert tf.environment()["TF_CLI_CONFIG_FILE"] == str(users)
    tf.init()
    assert (tmp_path / "module" / ".terraform.lock.hcl").is_file()


def test_cli_config_uses_only_the_mirror(tmp_path) -> None:
    path = tfcli.write_cli_config(tmp_path / "build" / "terraform.rc", mirror=Path("/m/tf plugins"))
    text = path.read_text()
    assert 'path    = "/m/tf plugins"' in text
    assert 'include = ["registry.terraform.io/hashicorp/*"]' in text
    assert 'exclude = ["registry.terraform.io/*/*"]' in text
    assert "disable_checkpoint = true" in text and "plugin_cache_dir" not in text
