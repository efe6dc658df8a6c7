"""Rolling a broker change one broker at a time.

A broker's user data is read by cloud-init at its first boot only, so the
module replaces a broker whose configuration changed (``user_data_replace_on_change``)
rather than stopping and starting every broker in place at once. kafkanet
never lets one terraform apply replace several brokers: it applies each
broker's replacement on its own (``-target`` the instance and its data-volume
attachment; the volume itself survives) and waits until that broker has
rejoined before the next, stopping at the first failure. What "rejoined"
means is the caller's: on AWS, the cluster reports the new broker and no
under-replicated partition (checked through the bastion by the access layer);
on the local target, the rebuilt data plane has the broker's Kafka answering.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from generator.base.errors import InfraError, UserError
from generator.environment.session import Timings, say
from generator.terraform.adapter import Terraform

BROKER = re.compile(r'^aws_instance\.broker\["(?P<name>[^"]+)"\]$')
DATA_VOLUME = re.compile(r'^aws_ebs_volume\.kafka_data\["(?P<name>[^"]+)"\]$')

Rejoined = Callable[[str], None]  # raises when broker NAME has not rejoined in its budget


def _changes(plan_json: dict[str, Any]) -> Iterable[tuple[str, list[str]]]:
    for change in plan_json.get("resource_changes", []):
        yield change.get("address", ""), change.get("change", {}).get("actions", [])


def brokers_to_roll(plan_json: dict[str, Any]) -> list[str]:
    """Names of the brokers the plan replaces (or would update in place), in order."""
    found = []
    for address, actions in _changes(plan_json):
        match = BROKER.match(address)
        if match and ("delete" in actions and "create" in actions or "update" in actions):
            found.append(match["name"])
    return sorted(found, key=_node_order)


def lost_data_volumes(plan_json: dict[str, Any]) -> list[str]:
    """Addresses of Kafka data volumes the plan deletes (with their partitions)."""
    return [address for address, actions in _changes(plan_json) if DATA_VOLUME.match(address) and "delete" in actions]


def _node_order(name: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", name)
    return (int(digits) if digits else 0, name)


def targets(name: str) -> list[str]:
    return [f'aws_instance.broker["{name}"]', f'aws_volume_attachment.kafka_data["{name}"]']


def roll(tf: Terraform, brokers: list[str], rejoined: Rejoined, stop: Callable[[str], None], timings: Timings) -> None:
    """Replace ``brokers`` one at a time, each only after the previous one has rejoined.

    Each broker is stopped first (``stop``): Kafka shuts down cleanly and unmounts its
    log, so the detach of its data volume completes even for an attachment created
    before ``skip_destroy`` (EC2 never finishes detaching a mounted volume).
    """
    for done, name in enumerate(brokers):
        say(f"rolling {name} ({done + 1} of {len(brokers)}); the others keep serving")
        try:
            with timings.step(f"roll {name}: stop"):
                stop(name)
            with timings.step(f"roll {name}: replace"):
                tf.apply_targets(targets(name))
            with timings.step(f"roll {name}: rejoin"):
                rejoined(name)
        except (InfraError, UserError) as exc:
            left = brokers[done + 1:]
            raise InfraError(
                *exc.problems,
                f"roll stopped at {name}: {', '.join(left) or 'no other broker'} not replaced; "
                "fix the cause and run apply again to continue the roll",
            ) from exc


def stopper(client: Callable[[], Any], env_name: str, *, delay: float, attempts: int) -> Callable[[str], None]:
    """``stop(name)``: StopInstances on broker ``name`` (its Name tag) and wait, bounded, until it is stopped.

    ``client`` makes the EC2 client, only once a broker is actually rolled (most applies roll none).
    """

    def stop(name: str) -> None:
        ec2 = client()
        found = ec2.describe_instances(Filters=[
            {"Name": "tag:Name", "Values": [f"{env_name}-{name}"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping"]},
        ])  # fmt: skip
        ids = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
        if not ids:
            return  # already stopped, or gone: nothing holds the volume
        ec2.stop_instances(InstanceIds=ids)
        try:
            ec2.get_waiter("instance_stopped").wait(
                InstanceIds=ids, WaiterConfig={"Delay": delay, "MaxAttempts": attempts}
            )
        except Exception as exc:  # botocore's WaiterError: a bounded wait that ran out
            raise InfraError(f"{name} ({', '.join(ids)}) did not stop within {delay * attempts:.0f} s: {exc}") from None

    return stop
