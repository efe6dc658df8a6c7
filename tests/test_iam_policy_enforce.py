"""moto's IAM enforcement on the local target: the principal holds only the policy given.

The fast tests start a bare moto server with a one-action policy. The slow ones
run the whole `kafkanet e2e` with `KAFKANET_IAM_ENFORCE`: it passes with the
`Resource: "*"` rendering of `kafkanet iam-policy`, and fails naming the action
when one is left out.
"""

from __future__ import annotations

import json
import stat
import subprocess

import pytest
from botocore.exceptions import ClientError

from generator.localaws import moto_server
from generator.module import iampolicy
from generator.module.loaded import load
from tests.conftest import ROOT
from tests.envs import (
    e2e_argv,
    e2e_env,
    e2e_spec,
    machine_leftovers,
    moto_alive,
    needs_root,
)

ONLY_DESCRIBE_VPCS = {"Version": "2012-10-17",
                      "Statement": [{"Effect": "Allow", "Action": ["ec2:DescribeVpcs"], "Resource": "*"}]}


@pytest.fixture
def enforced(tmp_path):
    server = moto_server.start(tmp_path / "moto", iam_policy=ONLY_DESCRIBE_VPCS)
    try:
        yield server
    finally:
        server.stop()


def test_the_principal_may_call_what_its_policy_allows(enforced):
    assert enforced.iam_enforced
    vpcs = enforced.ec2_client("ap-northeast-2").describe_vpcs()["Vpcs"]
    assert vpcs, "moto's default VPC should be listed"


def test_a_call_the_policy_lacks_fails_naming_its_action(enforced):
    with pytest.raises(ClientError) as caught:
        enforced.ec2_client("ap-northeast-2").create_vpc(CidrBlock="10.9.0.0/16")
    message = str(caught.value)
    assert "ec2:CreateVpc" in message and moto_server.PRINCIPAL_USER in message, message
    lines = enforced.actions_path.read_text().splitlines()
    assert f"denied ec2:CreateVpc {moto_server.PRINCIPAL_USER}" in lines, lines


def test_the_local_stand_in_of_aws_s_machinery_reads_as_the_administrator(enforced):
    """The data plane's reads are not the role's: they must not need (or prove) a permission."""
    enforced.admin_ec2_client("ap-northeast-2").describe_subnets()
    lines = enforced.actions_path.read_text().splitlines()
    assert f"allowed ec2:DescribeSubnets {moto_server.ADMIN_USER}" in lines, lines
    with pytest.raises(ClientError):
        enforced.ec2_client("ap-northeast-2").describe_subnets()


def test_moto_s_fake_credentials_are_refused_once_iam_is_enforced(enforced):
    with pytest.raises(ClientError) as caught:
        moto_server.ec2_client(enforced.url, "ap-northeast-2").describe_vpcs()
    assert caught.value.response["Error"]["Code"] == "AuthFailure", caught.value.response


def test_the_principal_s_keys_are_private_and_reach_terraform_s_environment(enforced):
    assert stat.S_IMODE(enforced.iam_file.stat().st_mode) == 0o600
    key, secret = enforced.credentials
    assert key != "testing" and enforced.env()["AWS_ACCESS_KEY_ID"] == key
    assert enforced.env()["AWS_SECRET_ACCESS_KEY"] == secret


def test_a_server_started_without_enforcement_is_not_switched_over(tmp_path):
    from generator.base.errors import PrerequisiteError

    server = moto_server.start(tmp_path / "moto")
    try:
        assert not server.iam_enforced and server.credentials == moto_server.FAKE_CREDENTIALS
        with pytest.raises(PrerequisiteError, match="without IAM enforcement"):
            moto_server.ensure_running(tmp_path / "moto", iam_policy=ONLY_DESCRIBE_VPCS)
    finally:
        server.stop()
    assert not (tmp_path / "moto" / moto_server.IAM_FILE).exists()


# ------------------------------------------------------------------ live e2e

LEFT_OUT = "ec2:CreateVpc"  # among the apply's first creates: the run fails within seconds
# Denials a run survives, each with what was seen. Any other denial fails the test.
TOLERATED_DENIALS = {
    # once per apply, from the AWS provider's aws_ami reader right after DescribeImages (nothing
    # of kafkanet calls it), which ignores the call's error: the policy leaves it out
    "ec2:GetInstanceUefiData",
}


def _e2e(tmp_path, prefix: str, enforce: str) -> tuple[str, subprocess.CompletedProcess]:
    needs_root()
    name, spec = e2e_spec(tmp_path, prefix)
    env = {**e2e_env(tmp_path), "KAFKANET_IAM_ENFORCE": enforce}
    if enforce != "1":  # a path relative to the spec's directory
        env["KAFKANET_IAM_ENFORCE"] = str(tmp_path / enforce)
        policy = iampolicy.moto_rendering(iampolicy.permissions_policy(load(spec)), without=(LEFT_OUT,))
        (tmp_path / enforce).write_text(json.dumps(policy))
    proc = subprocess.run(e2e_argv(spec), env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    return name, proc


@pytest.mark.terraform
@pytest.mark.root
@pytest.mark.slow
def test_e2e_passes_as_a_principal_holding_only_the_generated_policy(seed, tmp_path):
    """The nightly job (`kafkanet e2e`, as a subprocess) as the least-privilege principal would run it,
    on a copy of the seed with the same VPC CIDR while the session's seed is up (a team's environment
    beside the nightly's): the whole suite passes, nothing is left, and the seed is undisturbed."""
    name, proc = _e2e(tmp_path, "iam", "1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "moto enforces IAM" in out and "e2e passed" in out, out[-4000:]
    # 65 checks for the seed (38 control plane, 4 outbound, 14 no-inbound, 5 Kafka, 4 instance metadata)
    # + 2 real-Kafka skips
    assert "65 passed, 2 skipped" in proc.stdout, out[-4000:]
    (run_dir,) = (tmp_path / "build").glob(f"{name}-*")  # e2e builds run <name>-<run id>
    assert (run_dir / "reports" / "integration.xml").exists()
    actions_log = run_dir / ".kafkanet" / "moto" / moto_server.ACTIONS_FILE
    lines = actions_log.read_text().splitlines()
    used = {line.split()[1] for line in lines
            if line.startswith("allowed") and line.endswith(moto_server.PRINCIPAL_USER)}  # fmt: skip
    denied = [line for line in lines if line.startswith("denied") and line.split()[1] not in TOLERATED_DENIALS]
    assert denied == [], denied
    granted = set(iampolicy.actions(iampolicy.permissions_policy(load(tmp_path / f"{name}.yaml"))))
    assert used <= granted, sorted(used - granted)
    print(f"actions used by the run ({len(used)}): {' '.join(sorted(used))}")
    print(f"granted but not used on the local target ({len(granted - used)}): {' '.join(sorted(granted - used))}")
    # the proof covers apply, the suite and destroy: each left its calls
    assert {"ec2:RunInstances", "ec2:DescribeInstanceAttribute", "ec2:TerminateInstances"} <= used, sorted(used)
    assert machine_leftovers(name) == [] and not moto_alive(tmp_path / "build" / name)
    # the seed is untouched: its moto still answers, its plane still forwards
    running = seed.ec2().describe_instances(Filters=[{"Name": "tag:kafkanet:env", "Values": [seed.name]},
                                                     {"Name": "instance-state-name", "Values": ["running"]}])
    assert sum(len(r["Instances"]) for r in running["Reservations"]) == 4
    fetched = subprocess.run(
        ["ip", "netns", "exec", f"kn_{seed.name}_broker-1", "curl", "-s", "-m", "5", seed.inventory["probe_url"]],
        capture_output=True, text=True, timeout=10,
    )
    assert fetched.stdout.strip() == seed.inventory["bastion"]["public_ip"]


@pytest.mark.terraform
@pytest.mark.root
@pytest.mark.slow
def test_e2e_fails_naming_the_action_left_out_of_the_policy(tmp_path):
    name, proc = _e2e(tmp_path, "iamx", "policy-without-one.json")
    out = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 2), out[-4000:]
    assert LEFT_OUT in out, out[-4000:]
    assert machine_leftovers(name) == [] and not moto_alive(tmp_path / "build" / name)


# ------------------------------------------------------- KAFKANET_IAM_ENFORCE


@pytest.mark.parametrize("target", ["local", "aws"])
def test_enforcement_is_off_unless_asked_and_never_on_aws(monkeypatch, target):
    from generator.environment import session
    from tests.conftest import SEED

    env = session.open_env(str(SEED), target)
    monkeypatch.delenv("KAFKANET_IAM_ENFORCE", raising=False)
    assert session.enforced_policy(env) is None
    monkeypatch.setenv("KAFKANET_IAM_ENFORCE", "1")
    expected = iampolicy.moto_rendering(iampolicy.permissions_policy(env.loaded)) if target == "local" else None
    assert session.enforced_policy(env) == expected


def test_enforcement_takes_a_policy_file_and_refuses_a_bad_one(monkeypatch, tmp_path):
    from generator.base.errors import UserError
    from generator.environment import session
    from tests.conftest import SEED

    env = session.open_env(str(SEED), "local")
    good = tmp_path / "p.json"
    good.write_text(json.dumps(ONLY_DESCRIBE_VPCS))
    monkeypatch.setenv("KAFKANET_IAM_ENFORCE", str(good))
    assert session.enforced_policy(env) == ONLY_DESCRIBE_VPCS
    for bad, says in ((tmp_path / "missing.json", "not 1 and not a readable JSON policy file"),
                      (good.with_name("list.json"), "a policy document has a Statement list")):  # fmt: skip
        if bad.name == "list.json":
            bad.write_text("[]")
        monkeypatch.setenv("KAFKANET_IAM_ENFORCE", str(bad))
        with pytest.raises(UserError, match=says):
            session.enforced_policy(env)
