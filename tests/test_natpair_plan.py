"""One NAT to a NAT pair on a running environment: terraform plans additions, nothing replaced.

The seed (one NAT) is applied to a moto server with real terraform; the spec then
asks for `nat.azs: [a, c]`, the module is generated again into the same
directory, and `terraform show -json` of the plan is read: every new resource is
created, no resource is deleted or replaced, and the only in-place updates are
the two the pair needs on the running NAT (its security group gains the probe's
two rules, the instance gains its instance profile). No root: no data plane.
"""

from __future__ import annotations

import json
import secrets

import pytest
from python_terraform import IsFlagged

from generator.environment import session
from generator.localaws import moto_server
from generator.module.generate import generate
from generator.module.loaded import load
from tests.conftest import SEED, require

pytestmark = [pytest.mark.terraform, pytest.mark.slow]

PAIR_NAT = """nat:
  azs: [a, c]
  instance_type: t3.micro
"""
SINGLE_NAT = """nat:
  az: a
  instance_type: t3.micro        # offered in every Seoul AZ (t2.micro is not); a NAT Gateway costs $0.059/hour
"""

# The pair's new resources, by address; and the only updates allowed on what runs.
CREATED = {
    "aws_subnet.public_standby",
    "aws_route_table_association.public_standby",
    "aws_instance.nat_standby",
    "aws_iam_role.nat",
    "aws_iam_instance_profile.nat",
    "aws_iam_role_policy.nat_failover",
}
UPDATED_IN_PLACE = {"aws_security_group.nat", "aws_instance.nat"}


def test_one_nat_to_a_pair_plans_additions_only(tmp_path, request):
    require("terraform")
    name = f"kn-np{secrets.token_hex(3)}"
    text = SEED.read_text().replace("name: ttareungyi", f"name: {name}")
    assert SINGLE_NAT in text
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    build = tmp_path / "build" / name
    env = session.open_env(str(spec), "local", build)
    request.addfinalizer(lambda: moto_server.stop(env.path(session.MOTO_DIR)))  # teardown before setup

    generate(env.loaded, env.build_dir)
    session.local_backend_override(env)
    moto = session.moto_for(env, start=True)
    with session.terraform_session(env, moto) as tf:
        tf.init()
        tf.apply()
        single = tf.outputs()

        spec.write_text(text.replace(SINGLE_NAT, PAIR_NAT))
        generate(load(spec), env.build_dir)
        tf.plan(out="pair.tfplan")
        shown = tf.run("show", "pair.tfplan", json=IsFlagged, no_color=IsFlagged)
    plan = json.loads(shown.stdout)

    actions = {c["address"]: c["change"]["actions"] for c in plan["resource_changes"]}
    changed = {a: act for a, act in actions.items() if act not in (["no-op"], ["read"])}
    assert not [a for a, act in changed.items() if "delete" in act], changed  # nothing destroyed or replaced
    created = {a for a, act in changed.items() if act == ["create"]}
    updated = {a for a, act in changed.items() if act == ["update"]}
    assert created == CREATED, changed
    assert updated <= UPDATED_IN_PLACE, changed
    # the running NAT's update is the profile only: no new user data, no new AMI, same subnet
    nat = next(c for c in plan["resource_changes"] if c["address"] == "aws_instance.nat")["change"]
    differ = {k for k in set(nat["before"]) | set(nat["after"]) if nat["before"].get(k) != nat["after"].get(k)}
    assert differ - {"iam_instance_profile"} <= set(nat.get("after_unknown", {})), differ
    # the subnets, the route tables and every broker stay as they are
    for address, act in actions.items():
        if address.startswith(("aws_subnet.", "aws_route_table.", "aws_instance.broker", "aws_ebs_volume.")):
            assert act in (["no-op"], ["create"]), (address, act)
    assert actions["aws_route.private_nat"] == ["no-op"] and actions["aws_eip.nat"] == ["no-op"]
    assert single["bastion"]["public_ip"]
