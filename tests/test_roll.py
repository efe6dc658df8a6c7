"""A changed broker configuration reaches the brokers one at a time (audit finding 12/6).

Unit: what the roll reads from a plan, and the AWS rejoin check through the
bastion (a stand-in session: no AWS here). Live, on the local target: a copy of
the seed with two brokers (enough to show one at a time, a third would only add a
minute of make test) is applied, its Kafka version changed (every broker's user data
changes), the plan's JSON replaces each broker and updates none in place,
and `kafkanet apply` replaces them one at a time, each only after the rebuilt
plane has its Kafka answering; the suite passes afterwards.
"""

from __future__ import annotations

import json
import re

import pytest

from generator.access.rejoin import rejoined_through_bastion
from generator.access.ssh import RunResult
from generator.base.errors import InfraError
from generator.environment import roll
from generator.environment.session import PLAN_FILE, moto_for, terraform_session
from tests.envs import apply_env

TWO_BROKERS = {"azs: [b, c, d]": "azs: [b, c]", "count: 3": "count: 2", "replication_factor: 3": "replication_factor: 2"}


def _change(address: str, actions: list[str]) -> dict:
    return {"address": address, "change": {"actions": actions}}


def test_the_roll_takes_replaced_brokers_in_node_order_and_flags_lost_volumes():
    plan = {"resource_changes": [
        _change('aws_instance.broker["broker-10"]', ["create", "delete"]),
        _change('aws_instance.broker["broker-2"]', ["delete", "create"]),
        _change('aws_instance.broker["broker-3"]', ["update"]),
        _change('aws_instance.broker["broker-4"]', ["no-op"]),
        _change('aws_instance.nat', ["delete", "create"]),
        _change('aws_ebs_volume.kafka_data["broker-2"]', ["delete"]),
        _change('aws_volume_attachment.kafka_data["broker-2"]', ["delete", "create"]),
    ]}  # fmt: skip
    assert roll.brokers_to_roll(plan) == ["broker-2", "broker-3", "broker-10"]
    assert roll.lost_data_volumes(plan) == ['aws_ebs_volume.kafka_data["broker-2"]']


INVENTORY = {
    "kafka": {"port": 9092},
    "brokers": [{"name": "broker-1", "private_ip": "10.0.1.10"}, {"name": "broker-2", "private_ip": "10.0.2.10"}],
}


class _Session:
    """The bastion as the rejoin check uses it: answers in turn, records what was asked where."""

    def __init__(self, answers: list[RunResult]) -> None:
        self.answers, self.asked = answers, []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def run(self, host: str, command: str, timeout: float) -> RunResult:
        self.asked.append((host, command))
        return self.answers.pop(0)


def _result(rc: int, stdout: str = "", stderr: str = "") -> RunResult:
    return RunResult("broker-2", "kafka-topics.sh", rc, stdout, stderr, 0.1)


def test_rejoin_asks_a_surviving_broker_until_no_partition_is_under_replicated():
    session = _Session([_result(1, stderr="Connection to node -1 could not be established"),
                        _result(0, "Topic: bike-station-status Partition: 0 Leader: 2 Isr: 2"),
                        _result(0, "")])  # fmt: skip
    now = [0.0]
    check = rejoined_through_bastion(INVENTORY, connect=lambda inv: session, budget=100, interval=10,
                                     clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    check("broker-1")
    assert [host for host, _ in session.asked] == ["broker-2"] * 3, "never the replaced broker (its host key is new)"
    assert "10.0.1.10:9092" in session.asked[0][1] and "--under-replicated-partitions" in session.asked[0][1]


def test_rejoin_gives_up_after_its_budget_naming_the_broker_and_what_it_saw():
    session = _Session([_result(0, "Topic: t Partition: 0 Leader: 2 Isr: 2")] * 20)
    now = [0.0]
    check = rejoined_through_bastion(INVENTORY, connect=lambda inv: session, budget=60, interval=15,
                                     clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    with pytest.raises(InfraError, match=r"broker-1 has not rejoined after 60 s .*under-replicated"):
        check("broker-1")
    assert len(session.asked) == 5  # at 0, 15, 30, 45 and 60 s: never past the budget


@pytest.mark.terraform
@pytest.mark.root
@pytest.mark.slow(seconds=240)
def test_a_changed_broker_configuration_rolls_one_broker_at_a_time(request, tmp_path_factory, capsys):
    env = apply_env(request, tmp_path_factory, "rl", **TWO_BROKERS)
    assert len(env.inventory["brokers"]) == 2, "the copy does not have two brokers: the seed's brokers: text changed"
    before = {b["name"]: b["instance_id"] for b in env.inventory["brokers"]}
    env.spec.write_text(env.spec.read_text().replace("version: 3.9.1", "version: 3.9.2"))
    assert env.cli("generate", str(env.spec)) == 0

    # the plan: every broker replaced, none stopped and started in place
    moto = moto_for(env.env, start=False)
    with terraform_session(env.env, moto) as tf:
        tf.init()
        tf.plan(out=PLAN_FILE)
        plan = json.loads(tf.run("show", "-json", PLAN_FILE, quiet=True).stdout)
    env.env.path(PLAN_FILE).unlink()
    actions = {c["address"]: c["change"]["actions"] for c in plan["resource_changes"]
               if c["address"].startswith("aws_instance.broker")}  # fmt: skip
    assert sorted(actions) == [f'aws_instance.broker["{b}"]' for b in before]
    assert all(set(a) == {"delete", "create"} for a in actions.values()), actions

    capsys.readouterr()
    assert env.cli("apply", str(env.spec)) == 0
    said = capsys.readouterr().err
    steps = re.findall(r"kafkanet: (roll broker-\d: (?:stop|replace|rejoin)): \d", said)
    assert steps == [f"roll {b}: {s}" for b in before for s in ("stop", "replace", "rejoin")], said[-3000:]
    after = {b["name"]: b["instance_id"] for b in env.inventory["brokers"]}
    assert all(after[b] != before[b] for b in before), (before, after)
    assert env.cli("test", str(env.spec)) == 0
