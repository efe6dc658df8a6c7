"""The least-privilege IAM policy the nightly (apply, test, destroy, sweep) needs on AWS, and its GitHub OIDC role.

Pure: a spec in, policy documents (dicts) out. Every statement names the API
calls it is for; the actions come from what the generated module's resources
and data sources call through the AWS provider (hashicorp/aws 5.x) and what
kafkanet itself calls (the leftover check, host keys from the console output,
the integration suite's control-plane reads, ``kafkanet sweep``).

Scoping, where AWS allows it:

* every EC2 statement holds only in the spec's region (``aws:RequestedRegion``
  and the region in each ARN);
* resources are created only with a ``kafkanet:run-id`` tag in the request
  (``aws:RequestTag``; e2e stamps it through the provider's ``default_tags``),
  and tags are written at creation only (``ec2:CreateAction``);
* resources are changed and deleted only when they carry ``kafkanet:run-id``
  (``aws:ResourceTag``), which only e2e sets: a team environment made with
  ``apply`` is out of the role's reach;
* the S3 state is reachable under its key's folder only.

What AWS cannot scope is said per statement (``Sid``) and in the README:
``Describe*`` calls take no resource, and the VPC's default security group
(adopted by ``aws_default_security_group``) carries no tag until the run
writes one.

:func:`moto_rendering` is the same actions with ``Resource: "*"`` and no
conditions: moto checks actions only, and that is what the local target
enforces (``KAFKANET_IAM_ENFORCE``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from generator.base.errors import UserError
from generator.module.loaded import Loaded

VERSION = "2012-10-17"
RUN_ID_TAG = "kafkanet:run-id"
OIDC_HOST = "token.actions.githubusercontent.com"
OIDC_AUDIENCE = "sts.amazonaws.com"

# What one nightly run may take, end to end (the workflow's budget uses the same numbers).
DEFAULT_MAX_DURATION_MIN = 60  # `kafkanet e2e --max-duration`: apply + test, then teardown starts
DESTROY_BUDGET_MIN = 30  # terraform destroy on AWS (instances terminate, volumes detach) and the leftover check
SETUP_BUDGET_MIN = 10  # checkout, installs, terraform init
MIN_SESSION_S, MAX_SESSION_S = 3600, 43200  # what IAM accepts for a role's MaxSessionDuration


def session_seconds(max_duration_min: int = DEFAULT_MAX_DURATION_MIN) -> int:
    """A role session that outlives apply + test (``--max-duration``) + destroy + setup, in whole hours."""
    need = (max_duration_min + DESTROY_BUDGET_MIN + SETUP_BUDGET_MIN) * 60
    seconds = max(MIN_SESSION_S, math.ceil(need / 3600) * 3600)
    if seconds > MAX_SESSION_S:
        raise UserError(
            f"--max-duration {max_duration_min}m plus {DESTROY_BUDGET_MIN}m for destroy needs a session longer than "
            f"IAM's maximum of 12 h; use a --max-duration of at most {MAX_SESSION_S // 60 - DESTROY_BUDGET_MIN - SETUP_BUDGET_MIN}m"
        )
    return seconds


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


@dataclass(frozen=True)
class Statement:
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict[str, dict[str, Any]] | None = None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "Sid": self.sid,
            "Effect": "Allow",
            "Action": sorted(self.actions),
            "Resource": list(self.resources) if len(self.resources) > 1 else self.resources[0],
        }
        if self.condition:
            doc["Condition"] = self.condition
        return doc


# EC2 resource types the module creates, by ARN resource part.
_CREATED = ("vpc", "subnet", "security-group", "security-group-rule", "route-table", "internet-gateway",
            "elastic-ip", "network-interface", "volume", "instance", "key-pair")  # fmt: skip

# Create calls that take tags (TagSpecifications), each with the one resource type it creates.
# One statement each: a statement listing every created type would also let, say,
# CreateSubnet use any VPC (the VPC's ARN is in the request too); the resources a call
# uses must carry the run tag (ChangeAndDeleteOnlyRunIdTagged).
_CREATES = {
    "ec2:CreateVpc": "vpc",  # aws_vpc
    "ec2:CreateSubnet": "subnet",  # aws_subnet
    "ec2:CreateSecurityGroup": "security-group",  # aws_security_group
    # aws_vpc_security_group_ingress_rule / _egress_rule (the NAT group's rules): each call
    # creates a rule, tagged, in a group the run made (ChangeAndDeleteOnlyRunIdTagged)
    "ec2:AuthorizeSecurityGroupIngress": "security-group-rule",
    "ec2:AuthorizeSecurityGroupEgress": "security-group-rule",
    "ec2:CreateRouteTable": "route-table",  # aws_route_table
    "ec2:CreateInternetGateway": "internet-gateway",  # aws_internet_gateway
    "ec2:AllocateAddress": "elastic-ip",  # aws_eip
    "ec2:CreateNetworkInterface": "network-interface",  # aws_network_interface (the brokers' fixed addresses)
    "ec2:CreateVolume": "volume",  # aws_ebs_volume (Kafka data)
    "ec2:RunInstances": "instance",  # aws_instance (NAT and brokers)
    "ec2:ImportKeyPair": "key-pair",  # aws_key_pair
}
_CREATE_ACTIONS = tuple(_CREATES)

# Calls on resources the run created (each carries kafkanet:run-id from default_tags).
_OWN_ACTIONS = (
    # network.tf
    "ec2:ModifyVpcAttribute",  # enable_dns_support / enable_dns_hostnames
    "ec2:AttachInternetGateway", "ec2:DetachInternetGateway",
    "ec2:ModifySubnetAttribute",  # map_public_ip_on_launch
    "ec2:CreateRoute", "ec2:DeleteRoute",
    "ec2:AssociateRouteTable", "ec2:DisassociateRouteTable",
    # nat.tf, kafka.tf: security groups (the brokers' inline rules are written separately from
    # the group, the NAT's are resources of their own); the default group's rules are revoked
    # (on AWS it also has an inbound rule, moto's has not)
    "ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
    # instances: source/dest check off on the NAT, the Elastic IP, the data volumes
    "ec2:ModifyInstanceAttribute",
    "ec2:AssociateAddress", "ec2:DisassociateAddress",
    "ec2:AttachVolume",  # never detached: skip_destroy, terminating the broker lets go (kafka.tf)
    # reads that take a resource: the provider's read-back, the suite's source/dest check,
    # host keys from each instance's console output
    "ec2:DescribeVpcAttribute", "ec2:DescribeInstanceAttribute", "ec2:GetConsoleOutput",
    # destroy and sweep, in dependency order
    "ec2:TerminateInstances",
    "ec2:DeleteNetworkInterface", "ec2:ReleaseAddress", "ec2:DeleteVolume",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteSubnet", "ec2:DeleteRouteTable", "ec2:DeleteInternetGateway", "ec2:DeleteVpc",
    "ec2:DeleteKeyPair",
    # the provider writes tags of its own resources separately after some changes
    "ec2:CreateTags",
)  # fmt: skip

# Reads: EC2 takes no resource for these. The provider reads back every resource
# after each change; kafkanet's leftover check, the suite and the sweeper list by tag.
_DESCRIBE_ACTIONS = (
    "ec2:DescribeAddresses", "ec2:DescribeAddressesAttribute",
    "ec2:DescribeImages",  # data.aws_ami.al2023
    "ec2:DescribeInstanceCreditSpecifications",
    "ec2:DescribeInstanceTypeOfferings",  # data.aws_ec2_instance_type_offerings
    "ec2:DescribeInstanceTypes", "ec2:DescribeInstances",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeNetworkAcls", "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroupRules", "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "ec2:DescribeVpcs",
)  # fmt: skip


def _ec2_arns(region: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"arn:{partition(region)}:ec2:{region}:*:{kind}/*" for kind in kinds)


def _in_region(region: str) -> dict[str, dict[str, Any]]:
    return {"StringEquals": {"aws:RequestedRegion": region}}


def _statements(loaded: Loaded) -> list[Statement]:
    spec = loaded.spec
    region = spec.region
    part = partition(region)
    here = _in_region(region)
    run_tagged_request = {**here, "Null": {f"aws:RequestTag/{RUN_ID_TAG}": "false"}}
    run_tagged_resource = {**here, "Null": {f"aws:ResourceTag/{RUN_ID_TAG}": "false"}}
    statements = [
        Statement("ReadEc2InRegion", _DESCRIBE_ACTIONS, ("*",), here),
        Statement("CallerIdentity", ("sts:GetCallerIdentity",), ("*",)),  # the provider's account check
        # Creating: the new resource must carry the run's tag in the request.
        *(Statement(f"{action.split(':')[1]}OnlyWithRunIdTag", (action,), _ec2_arns(region, (kind,)),
                    run_tagged_request) for action, kind in _CREATES.items()),
        # RunInstances also creates the root volume and (for the NAT) the primary interface,
        # which the provider may launch untagged: scoped by region only, and useless
        # without the tagged instance of the same call.
        Statement("RunInstancesRootVolumeAndInterface", ("ec2:RunInstances",),
                  _ec2_arns(region, ("volume", "network-interface")), here),
        Statement("TagOnlyWhileCreating", ("ec2:CreateTags",), _ec2_arns(region, _CREATED),
                  {"StringEquals": {"aws:RequestedRegion": region,
                                    "ec2:CreateAction": [a.split(":")[1] for a in _CREATE_ACTIONS]}}),
        # RunInstances also names the Amazon Linux image it launches from; images carry no run tag.
        Statement("LaunchFromAmazonImages", ("ec2:RunInstances",), (f"arn:{part}:ec2:{region}::image/*",),
                  {"StringEquals": {"aws:RequestedRegion": region, "ec2:Owner": "amazon"}}),
        # Using and changing what the run made, and deleting it (destroy, sweep).
        Statement("ChangeAndDeleteOnlyRunIdTagged", _OWN_ACTIONS + ("ec2:RunInstances", "ec2:CreateSubnet",
                  "ec2:CreateSecurityGroup", "ec2:CreateRouteTable", "ec2:CreateNetworkInterface"),
                  _ec2_arns(region, _CREATED), run_tagged_resource),  # fmt: skip
        # aws_default_security_group adopts the VPC's default group, which AWS makes
        # untagged: the provider tags it first (then it is the run's, and the statement
        # above lets its rules go). EC2 cannot tell that group from any other untagged
        # one, so here a group may get the run's tag without having been created by it.
        Statement("AdoptDefaultSecurityGroup", ("ec2:CreateTags",), _ec2_arns(region, ("security-group",)),
                  run_tagged_request),
    ]
    statements += _nat_iam(spec.name, part)
    statements += _sweep_iam(part)
    if spec.state is not None:
        statements += _state(loaded, part)
    return statements


def _nat_iam(name: str, part: str) -> list[Statement]:
    """The NAT's role and instance profile (``<name>-nat-failover``), which every NAT has: created
    with the run's tag, changed and deleted only when tagged, passed to EC2 only. Every NAT's role
    holds the monitor's read policy; a NAT pair (``nat.azs``) adds its moves as a second one."""
    roles = f"arn:{part}:iam::*:role/{name}-*"
    profiles = f"arn:{part}:iam::*:instance-profile/{name}-*"
    tagged_request = {"Null": {f"aws:RequestTag/{RUN_ID_TAG}": "false"}}
    tagged_resource = {"Null": {f"aws:ResourceTag/{RUN_ID_TAG}": "false"}}
    statements = [
        Statement("NatCreateRoleAndProfileOnlyWithRunIdTag",
                  ("iam:CreateRole", "iam:CreateInstanceProfile", "iam:TagRole", "iam:TagInstanceProfile"),
                  (roles, profiles), tagged_request),
        Statement("NatRoleAndProfileOnlyRunIdTagged",
                  ("iam:GetRole", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
                   "iam:ListInstanceProfilesForRole", "iam:DeleteRole", "iam:GetInstanceProfile",
                   "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"),
                  (roles, profiles), tagged_resource),
        # RunInstances with the instance profile passes its role to EC2, and to nothing else
        Statement("NatPassRoleToEc2Only", ("iam:PassRole",), (roles,),
                  {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
    ]  # fmt: skip
    # aws_iam_role_policy.nat_read (every NAT), and a pair's nat_failover
    statements.append(Statement("NatRolePoliciesOnlyRunIdTaggedRole",
                                ("iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"),
                                (roles,), tagged_resource))  # fmt: skip
    return statements


def _sweep_iam(part: str) -> list[Statement]:
    """What ``kafkanet sweep`` needs to remove instance profiles and roles a run left (the NAT pair's)."""
    return [
        Statement("SweepListIam", ("iam:ListInstanceProfiles", "iam:ListRoles"), ("*",)),
        Statement(
            "SweepOnlyRunIdTaggedIam",
            ("iam:GetInstanceProfile", "iam:ListInstanceProfileTags", "iam:RemoveRoleFromInstanceProfile",
             "iam:DeleteInstanceProfile", "iam:GetRole", "iam:ListRoleTags", "iam:ListRolePolicies",
             "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole", "iam:DeleteRolePolicy",
             "iam:DetachRolePolicy", "iam:DeleteRole"),
            (f"arn:{part}:iam::*:instance-profile/*", f"arn:{part}:iam::*:role/*"),
            {"Null": {f"aws:ResourceTag/{RUN_ID_TAG}": "false"}},
        ),  # fmt: skip
    ]


def state_key_prefix(loaded: Loaded) -> str:
    """The folder of the spec's state key, without its closing slash: each e2e run keeps its
    own key under ``<folder>/`` or, when the run id suffixes the environment's name, beside it
    (``kafkanet/<name>-<run id>/``); both start with this prefix."""
    state = loaded.spec.state
    assert state is not None
    key = state.key or f"kafkanet/{loaded.spec.name}/terraform.tfstate"
    return key.rsplit("/", 1)[0] if "/" in key else ""


def _state(loaded: Loaded, part: str) -> list[Statement]:
    """The S3 backend: the state objects and their S3-native lock files under the key's folder
    (and its run-suffixed siblings)."""
    state = loaded.spec.state
    assert state is not None
    bucket = state.bucket
    prefix = state_key_prefix(loaded)
    objects = ["s3:GetObject", "s3:PutObject"]
    if state.lockfile:
        objects.append("s3:DeleteObject")  # the .tflock lock file is removed on unlock
    return [
        Statement("StateBucketListUnderKeyFolder", ("s3:ListBucket",), (f"arn:{part}:s3:::{bucket}",),
                  {"StringLike": {"s3:prefix": [f"{prefix}*"]}}),  # fmt: skip
        Statement("StateObjects", tuple(objects), (f"arn:{part}:s3:::{bucket}/{prefix}*",)),
    ]


def permissions_policy(loaded: Loaded) -> dict[str, Any]:
    """The identity policy of the nightly's role: what apply, test, destroy and sweep call, scoped."""
    return {"Version": VERSION, "Statement": [s.document() for s in _statements(loaded)]}


def actions(policy: dict[str, Any]) -> list[str]:
    """Every action a policy document allows, sorted, once each."""
    found: set[str] = set()
    for statement in policy["Statement"]:
        value = statement["Action"]
        found.update([value] if isinstance(value, str) else value)
    return sorted(found)


def moto_rendering(policy: dict[str, Any], without: tuple[str, ...] = ()) -> dict[str, Any]:
    """The same actions with ``Resource: "*"`` and no conditions (moto checks actions only);
    ``without`` drops actions, to prove that a missing one fails and names itself."""
    unknown = sorted(set(without) - set(actions(policy)))
    if unknown:
        raise UserError(f"not in the policy, so cannot be left out: {', '.join(unknown)}")
    kept = [a for a in actions(policy) if a not in without]
    return {"Version": VERSION, "Statement": [{"Sid": "ActionsOnly", "Effect": "Allow", "Action": kept,
                                               "Resource": "*"}]}  # fmt: skip


# ----------------------------------------------------------------- GitHub OIDC

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$")
_REF_RE = re.compile(r"^refs/(heads|tags)/[A-Za-z0-9._/-]+$")
_ENV_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class GitHubTrust:
    repo: str
    account_id: str
    ref: str | None = None
    environment: str | None = None

    def __post_init__(self) -> None:
        if not _REPO_RE.match(self.repo):
            raise UserError(f"--github-repo {self.repo!r}: give OWNER/REPO, e.g. seoul-bikes/kafkanet-infra")
        if (self.ref is None) == (self.environment is None):
            raise UserError("--github-repo needs exactly one of --github-ref refs/heads/BRANCH or "
                            "--github-environment NAME: the role is pinned to one of them")  # fmt: skip
        if self.ref is not None and not _REF_RE.match(self.ref):
            raise UserError(f"--github-ref {self.ref!r}: give a full ref such as refs/heads/main")
        if self.environment is not None and not _ENV_RE.match(self.environment):
            raise UserError(f"--github-environment {self.environment!r}: letters, digits, '.', '_' or '-'")
        if not _ACCOUNT_RE.match(self.account_id):
            raise UserError(f"--account-id {self.account_id!r}: the 12-digit AWS account id "
                            "(aws sts get-caller-identity --query Account --output text)")  # fmt: skip

    @property
    def subject(self) -> str:
        """The token's ``sub`` claim this role accepts, exactly."""
        if self.environment is not None:
            return f"repo:{self.repo}:environment:{self.environment}"
        return f"repo:{self.repo}:ref:{self.ref}"


def trust_policy(trust: GitHubTrust, region: str) -> dict[str, Any]:
    """Who may assume the role: GitHub Actions' OIDC tokens for one repository and branch (or environment)."""
    provider = f"arn:{partition(region)}:iam::{trust.account_id}:oidc-provider/{OIDC_HOST}"
    return {
        "Version": VERSION,
        "Statement": [{
            "Sid": "GitHubActionsOidcPinnedOnSubject",
            "Effect": "Allow",
            "Principal": {"Federated": provider},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {f"{OIDC_HOST}:aud": OIDC_AUDIENCE, f"{OIDC_HOST}:sub": trust.subject}},
        }],
    }  # fmt: skip


def role_name(loaded: Loaded) -> str:
    return f"kafkanet-nightly-{loaded.spec.name}"


def create_role_commands(loaded: Loaded, trust: GitHubTrust, out_dir: str, seconds: int) -> list[str]:
    """The AWS CLI commands an account administrator runs once to create the role."""
    name = role_name(loaded)
    return [
        # once per account: GitHub's OIDC identity provider (IAM fetches its certificate itself)
        f"aws iam create-open-id-connect-provider --url https://{OIDC_HOST} --client-id-list {OIDC_AUDIENCE}",
        f"aws iam create-role --role-name {name} --max-session-duration {seconds} "
        f"--assume-role-policy-document file://{out_dir}/trust-policy.json "
        f"--tags Key=kafkanet:env,Value={loaded.spec.name}",
        f"aws iam put-role-policy --role-name {name} --policy-name kafkanet-nightly "
        f"--policy-document file://{out_dir}/permissions-policy.json",
        f"aws iam get-role --role-name {name} --query Role.Arn --output text   # the workflow's role-to-assume",
    ]
