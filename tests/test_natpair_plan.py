"""One NAT to a NAT pair on a running environment: terraform plans additions, nothing replaced.

The seed (one NAT) is applied to a moto server with real terraform; the spec then
asks for `nat.azs: [a, c]`, the module is generated again into the same
directory, and `terraform show -json` of the plan is read: every new resource is
created, and nothing else changes: no update in place, no replacement, no
deletion. The single NAT already has its role, instance profile and read policy,
and its security group's rules are resources of their own, so the pair's policy
and the probe's rules arrive as new resources. Before that, on the same applied
seed, the one-off import file of docs/upgrade/ adopts the NAT rules an older
module left without resources of their own. No root: no data plane.
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path

import pytest
from python_terraform import IsFlagged

from generator.environment import session
from generator.localaws import moto_server
from generator.module.generate import generate
from generator.module.loaded import load
from tests.conftest import ROOT, SEED, require

pytestmark = [pytest.mark.terraform, pytest.mark.slow]

PAIR_NAT = """nat:
  azs: [a, c]
  instance_type: t3.micro
"""
SINGLE_NAT = """nat:
  az: a
  instance_type: t3.micro        # offered in every Seoul AZ (t2.micro is not); a NAT Gateway costs $0.059/hour
"""

# The pair's new resources, by address: everything the plan may do.
CREATED = {
    "aws_subnet.public_standby",
    "aws_route_table_association.public_standby",
    "aws_instance.nat_standby",
    "aws_iam_role_policy.nat_failover",
    'aws_vpc_security_group_ingress_rule.nat_vxlan["public"]',
    'aws_vpc_security_group_ingress_rule.nat_vxlan["public_standby"]',
}
SEED_RESOURCES = 43  # the seed's module, applied: what must be planned as no change
CREATED_KINDS = {"aws_subnet", "aws_route_table_association", "aws_instance", "aws_iam_role_policy",
                 "aws_vpc_security_group_ingress_rule"}  # fmt: skip


def seed_module_on_moto(tmp_path: Path, request, prefix: str):
    """A copy of the seed under a unique name, its module generated and a moto server started for it
    (stopped at the end, registered before it starts): (env, moto, the spec's path)."""
    require("terraform")
    name = f"{prefix}{secrets.token_hex(3)}"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SEED.read_text().replace("name: ttareungyi", f"name: {name}"))
    env = session.open_env(str(spec), "local", tmp_path / "build" / name)
    request.addfinalizer(lambda: moto_server.stop(env.path(session.MOTO_DIR)))  # teardown before setup
    generate(env.loaded, env.build_dir)
    session.local_backend_override(env)
    return env, session.moto_for(env, start=True), spec


UPGRADE_FILE = ROOT / "docs" / "upgrade" / "nat-rules-import.tf"
NAT_RULES = [
    'aws_vpc_security_group_ingress_rule.nat_ssh["203.0.113.50/32"]',
    *(f'aws_vpc_security_group_ingress_rule.nat_{kind}_from_private["{az}"]' for kind in ("tcp", "icmp") for az in "bcd"),
    "aws_vpc_security_group_egress_rule.nat_anywhere",
]


def test_an_old_single_nat_adopts_its_rules_then_becomes_a_pair_by_additions_only(tmp_path, request):
    """One applied seed, two upgrades an infra owner makes in turn (one apply: each would cost its own).

    First the one-off import file: a module generated before the NAT group's rules were resources
    left them in AWS with no resource of their own (`terraform state rm` of the rule resources gives
    that state); the file adopts each rule (creating it again would fail: InvalidPermission.Duplicate),
    without it the plan would create them, and after it the plan is empty. Then one NAT to a pair:
    the spec asks for `nat.azs: [a, c]` and the plan creates the pair's resources and nothing else."""
    env, moto, spec = seed_module_on_moto(tmp_path, request, "kn-np")
    text = spec.read_text()
    assert SINGLE_NAT in text
    with session.terraform_session(env, moto) as tf:
        tf.init()
        tf.apply()
        single = tf.outputs()
        again = tf.plan()
        assert not again.changes, again.stdout[-3000:]  # the rules and the profile read back as written
        single_resources = [a for a in tf.run("state", "list").stdout.split() if not a.startswith("data.")]

        _adopt_the_orphaned_nat_rules(env, tf)

        spec.write_text(text.replace(SINGLE_NAT, PAIR_NAT))
        generate(load(spec), env.build_dir)
        tf.plan(out="pair.tfplan")
        shown = tf.run("show", "pair.tfplan", json=IsFlagged, no_color=IsFlagged)
    plan = json.loads(shown.stdout)

    changes = [c for c in plan["resource_changes"] if c["mode"] == "managed"]
    actions = {c["address"]: c["change"]["actions"] for c in changes}
    assert "aws_iam_instance_profile.nat" in actions and "aws_vpc_security_group_egress_rule.nat_anywhere" in actions
    changed = {a: act for a, act in actions.items() if act != ["no-op"]}
    updated = [a for a, act in changed.items() if act == ["update"]]
    replaced = [a for a, act in changed.items() if "create" in act and "delete" in act]
    deleted = [a for a, act in changed.items() if act == ["delete"]]
    assert (updated, replaced, deleted) == ([], [], []), changed
    created = {a for a, act in changed.items() if act == ["create"]}
    assert created == set(changed), changed  # only creates
    assert created == CREATED, sorted(created ^ CREATED)
    assert {c["type"] for c in changes if c["address"] in created} == CREATED_KINDS
    # what already runs stays: every one of the seed's resources is planned as no change
    assert len(actions) - len(created) == SEED_RESOURCES == len(single_resources), (len(actions), len(single_resources))
    assert all(actions[a] == ["no-op"] for a in single_resources), {a: actions.get(a) for a in single_resources}
    assert single["bastion"]["public_ip"]


def _adopt_the_orphaned_nat_rules(env, tf) -> None:
    """The NAT rules dropped from the state, as an old module left them: the import file adopts them."""
    tf.run("state", "rm", *NAT_RULES)
    orphaned = tf.run("plan", no_color=IsFlagged, input=False).stdout
    assert f"Plan: {len(NAT_RULES)} to add, 0 to change, 0 to destroy." in orphaned, orphaned[-2000:]

    shutil.copy(UPGRADE_FILE, env.build_dir / UPGRADE_FILE.name)
    tf.plan(out="upgrade.tfplan")
    shown = json.loads(tf.run("show", "upgrade.tfplan", json=IsFlagged, no_color=IsFlagged).stdout)
    changes = {c["address"]: c["change"] for c in shown["resource_changes"]
               if c["mode"] == "managed" and (c["change"]["actions"] != ["no-op"] or "importing" in c["change"])}  # fmt: skip
    # every rule imported, nothing created or deleted; an imported ICMP rule reads its ports
    # (all types: -1) as unset, so the module's -1 is written once, in place
    assert set(changes) == set(NAT_RULES) and all("importing" in c for c in changes.values()), sorted(changes)
    icmp = {a for a in NAT_RULES if "_icmp_" in a}
    assert all(changes[a]["actions"] == ["no-op"] for a in set(NAT_RULES) - icmp), changes
    for address in icmp:
        change = changes[address]
        differ = {k for k in change["after"] if change["before"].get(k) != change["after"][k]}
        assert change["actions"] == ["update"] and differ == {"from_port", "to_port"}, (address, change)
    tf.apply("upgrade.tfplan")
    (env.build_dir / UPGRADE_FILE.name).unlink()
    after = tf.plan()
    assert not after.changes, after.stdout[-2000:]
