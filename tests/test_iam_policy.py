"""`kafkanet iam-policy`: the nightly role's permissions, scoped, and its GitHub OIDC trust policy."""

from __future__ import annotations

import json

import pytest

from generator.cli import main
from generator.module import iampolicy
from generator.module.loaded import load
from tests.conftest import SEED, SPECS

TEAM = SPECS / "team-state.yaml"


def _policy(spec=SEED) -> dict:
    return iampolicy.permissions_policy(load(spec))


def _statements(policy: dict) -> dict[str, dict]:
    return {s["Sid"]: s for s in policy["Statement"]}


def _ec2(statement: dict) -> bool:
    return all(a.startswith("ec2:") for a in _as_list(statement["Action"]))


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def test_cli_prints_the_permissions_policy(capsys):
    assert main(["iam-policy", str(SEED)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == _policy()
    assert printed["Version"] == "2012-10-17"


def test_only_reads_are_granted_on_every_resource():
    """A statement on Resource "*" holds only calls that take no resource (Describe, List, the caller check)."""
    for st in _policy()["Statement"]:
        if st["Resource"] == "*":
            verbs = {a.split(":")[1] for a in _as_list(st["Action"])}
            assert all(v.startswith(("Describe", "List", "GetCallerIdentity")) for v in verbs), st


def test_every_ec2_statement_holds_in_the_spec_s_region_only():
    spec = load(SEED).spec
    for st in _policy()["Statement"]:
        if any(a.startswith("ec2:") for a in _as_list(st["Action"])):
            assert st["Condition"]["StringEquals"]["aws:RequestedRegion"] == spec.region, st["Sid"]
            for arn in _as_list(st["Resource"]):
                assert arn == "*" or f":ec2:{spec.region}:" in arn, (st["Sid"], arn)


def test_creating_needs_the_run_tag_and_changing_or_deleting_needs_it_on_the_resource():
    st = _statements(_policy())
    creates = {sid: c for sid, c in st.items() if sid.endswith("OnlyWithRunIdTag") and _ec2(c)}
    assert {"CreateVpcOnlyWithRunIdTag", "RunInstancesOnlyWithRunIdTag", "AllocateAddressOnlyWithRunIdTag",
            "ImportKeyPairOnlyWithRunIdTag"} <= set(creates)  # fmt: skip
    for sid, create in creates.items():  # one call, the one type it creates
        assert create["Condition"]["Null"] == {"aws:RequestTag/kafkanet:run-id": "false"}, sid
        assert len(create["Action"]) == 1 and isinstance(create["Resource"], str), sid
    assert st["CreateSubnetOnlyWithRunIdTag"]["Resource"] == "arn:aws:ec2:ap-northeast-2:*:subnet/*"
    # the VPC a subnet goes into must be the run's own
    assert "ec2:CreateSubnet" in st["ChangeAndDeleteOnlyRunIdTagged"]["Action"]
    own = st["ChangeAndDeleteOnlyRunIdTagged"]
    assert own["Condition"]["Null"] == {"aws:ResourceTag/kafkanet:run-id": "false"}
    deletes = {a for p in _policy()["Statement"] for a in _as_list(p["Action"])
               if a.split(":")[1].startswith(("Delete", "Terminate", "Release", "Detach", "Disassociate", "Remove"))}
    for sid, statement in st.items():  # no delete anywhere without the resource tag
        if deletes & set(_as_list(statement["Action"])):
            assert statement["Condition"]["Null"].get("aws:ResourceTag/kafkanet:run-id") == "false", sid
    # sweep's order of work: each of its kinds of deletion is there
    assert {"ec2:TerminateInstances", "ec2:DisassociateAddress", "ec2:ReleaseAddress", "ec2:DeleteNetworkInterface",
            "ec2:DeleteVolume", "ec2:DeleteSecurityGroup", "ec2:DeleteRoute", "ec2:DisassociateRouteTable",
            "ec2:DeleteRouteTable", "ec2:DeleteSubnet", "ec2:DetachInternetGateway", "ec2:DeleteInternetGateway",
            "ec2:DeleteVpc", "ec2:DeleteKeyPair", "iam:DeleteInstanceProfile", "iam:DeleteRole",
            "iam:DeleteRolePolicy", "iam:RemoveRoleFromInstanceProfile"} <= deletes  # fmt: skip


def test_tags_are_written_only_while_creating_except_on_the_default_security_group():
    st = _statements(_policy())
    tagging = st["TagOnlyWhileCreating"]
    assert set(tagging["Condition"]["StringEquals"]["ec2:CreateAction"]) == {
        c["Action"][0].split(":")[1] for sid, c in st.items() if sid.endswith("OnlyWithRunIdTag") and _ec2(c)
    }
    # the NAT group's rules: each Authorize call creates a tagged rule in the run's own group
    rule = st["AuthorizeSecurityGroupIngressOnlyWithRunIdTag"]
    assert rule["Resource"] == "arn:aws:ec2:ap-northeast-2:*:security-group-rule/*"
    assert "ec2:AuthorizeSecurityGroupIngress" in st["ChangeAndDeleteOnlyRunIdTagged"]["Action"]
    adopt = st["AdoptDefaultSecurityGroup"]
    assert adopt["Action"] == ["ec2:CreateTags"] and adopt["Resource"].endswith(":security-group/*")


def test_no_s3_without_a_state_backend_and_only_the_key_s_folder_with_one():
    assert not [a for a in iampolicy.actions(_policy()) if a.startswith("s3:")]
    st = _statements(_policy(TEAM))
    assert st["StateBucketListUnderKeyFolder"]["Resource"] == "arn:aws:s3:::ttareungyi-terraform-state"
    assert st["StateBucketListUnderKeyFolder"]["Condition"] == {"StringLike": {"s3:prefix": ["kafkanet/team-state*"]}}
    objects = st["StateObjects"]
    assert objects["Resource"] == "arn:aws:s3:::ttareungyi-terraform-state/kafkanet/team-state*"
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}  # lockfile: true


def test_the_moto_rendering_has_the_same_actions_on_every_resource_and_no_conditions():
    policy = _policy()
    moto = iampolicy.moto_rendering(policy)
    assert iampolicy.actions(moto) == iampolicy.actions(policy)
    assert all(s["Resource"] == "*" and "Condition" not in s for s in moto["Statement"])
    less = iampolicy.moto_rendering(policy, without=("ec2:CreateVpc",))
    assert "ec2:CreateVpc" not in iampolicy.actions(less) and len(iampolicy.actions(less)) == len(
        iampolicy.actions(policy)
    ) - 1


def test_cli_moto_rendering_without_an_action(capsys):
    assert main(["iam-policy", str(SEED), "--document", "moto", "--without", "ec2:DeleteVpc"]) == 0
    assert "ec2:DeleteVpc" not in iampolicy.actions(json.loads(capsys.readouterr().out))
    assert main(["iam-policy", str(SEED), "--document", "moto", "--without", "ec2:LaunchRockets"]) == 2
    assert "not in the policy" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "subject"),
    [
        (["--github-ref", "refs/heads/main"], "repo:seoul-bikes/infra:ref:refs/heads/main"),
        (["--github-environment", "nightly"], "repo:seoul-bikes/infra:environment:nightly"),
    ],
    ids=["branch", "environment"],
)
def test_trust_policy_is_pinned_on_the_token_s_subject_and_audience(capsys, flags, subject):
    argv = ["iam-policy", str(SEED), "--document", "trust", "--github-repo", "seoul-bikes/infra",
            "--account-id", "123456789012", *flags]  # fmt: skip
    assert main(argv) == 0
    trust = json.loads(capsys.readouterr().out)
    (st,) = trust["Statement"]
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert st["Principal"] == {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    }
    assert st["Condition"] == {"StringEquals": {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                                                "token.actions.githubusercontent.com:sub": subject}}  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--document", "trust"], "--document trust needs --github-repo"),
        (["--github-repo", "a/b", "--account-id", "123456789012"], "exactly one of --github-ref"),
        (["--github-repo", "a/b", "--github-ref", "refs/heads/main", "--github-environment", "x",
          "--account-id", "123456789012"], "exactly one of --github-ref"),  # fmt: skip
        (["--github-repo", "a/b", "--github-ref", "refs/heads/main"], "add --account-id"),
        (["--github-repo", "a/b", "--github-ref", "main", "--account-id", "123456789012"], "a full ref"),
        (["--github-repo", "not a repo", "--github-ref", "refs/heads/main", "--account-id", "123456789012"],
         "OWNER/REPO"),  # fmt: skip
        (["--github-repo", "a/b", "--github-ref", "refs/heads/main", "--account-id", "12345"], "12-digit"),
        (["--github-ref", "refs/heads/main"], "add --github-repo"),
        (["--max-duration", "12h"], "IAM's maximum of 12 h"),
        (["--without", "ec2:DeleteVpc"], "add --document moto"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(capsys, argv, says):
    assert main(["iam-policy", str(SEED), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_out_dir_writes_both_documents_and_says_how_to_create_the_role(tmp_path, capsys):
    out = tmp_path / "iam"
    argv = ["iam-policy", str(SEED), "--github-repo", "seoul-bikes/infra", "--github-ref", "refs/heads/main",
            "--account-id", "123456789012", "--max-duration", "90m", "-o", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert json.loads((out / "permissions-policy.json").read_text()) == _policy()
    assert "repo:seoul-bikes/infra:ref:refs/heads/main" in (out / "trust-policy.json").read_text()
    seconds = iampolicy.session_seconds(90)
    assert seconds >= (90 + iampolicy.DESTROY_BUDGET_MIN) * 60 and seconds % 3600 == 0
    assert f"aws iam create-role --role-name kafkanet-nightly-ttareungyi --max-session-duration {seconds} " in text
    assert f"--assume-role-policy-document file://{out}/trust-policy.json" in text
    assert "aws iam put-role-policy" in text and "create-open-id-connect-provider" in text
    # a second run refuses to overwrite, and leaves the files as they were
    before = (out / "trust-policy.json").read_text()
    assert main([*argv[:-2], "--github-environment", "x", "-o", str(out)][:0] or argv) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert (out / "trust-policy.json").read_text() == before
    assert main([*argv, "--force"]) == 0


def test_session_covers_apply_test_and_destroy_in_whole_hours():
    assert iampolicy.session_seconds(60) == 7200  # 60 + 30 + 10 minutes
    assert iampolicy.session_seconds(20) == 3600  # IAM's minimum
    assert iampolicy.session_seconds(140) == 10800


def test_the_largest_policy_fits_iam_s_inline_role_policy_limit():
    """`aws iam put-role-policy` takes at most 10,240 characters (whitespace not counted) per role;
    the largest policy kafkanet writes has the S3 state's statements (a NAT pair needs none more)."""
    text = json.dumps(iampolicy.permissions_policy(load(TEAM)))
    assert len("".join(text.split())) < 10_240
