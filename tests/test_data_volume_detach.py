"""The brokers' data volumes against EC2's refusal to detach a mounted volume.

EC2 does not finish DetachVolume of a volume mounted on a running instance (the
attachment stays ``busy``), and the moto shim behaves the same
(generator/localaws/moto_compat.py). The generated module leaves the detach to the
broker's termination (``skip_destroy`` on ``aws_volume_attachment.kafka_data``).
Here the seed module as generated, and the same module hand-edited back to a plain
attachment, are applied side by side to one moto server started with the shim;
each rolls broker-1 the way the module tells infra owners to (``terraform apply
-replace``) and is then destroyed. Only the generated one gets through. The
provider (5.100.0) gives up at its first poll on ``busy``; the plain attachment's
short delete timeout bounds the wait should an attachment ever sit in
``detaching`` instead. Real terraform and the offline provider, no root.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from python_terraform import IsFlagged

from generator.base.errors import InfraError
from generator.localaws import moto_server
from generator.module.generate import generate
from generator.terraform import tfcli
from generator.terraform.adapter import Terraform
from tests.conftest import SEED, require

pytestmark = [pytest.mark.terraform, pytest.mark.slow]

BROKER = 'aws_instance.broker["broker-1"]'
ATTACHMENT = "aws_volume_attachment.kafka_data"
KEEP_ATTACHED = re.compile(r"^\s*(skip_destroy|stop_instance_before_detaching|force_detach)\s*=.*\n", re.M)


def without_the_fix(kafka_tf: str) -> str:
    """kafka.tf with a plain attachment: DetachVolume on destroy, bounded by a 1-minute delete timeout."""
    block = re.search(r'^resource "aws_volume_attachment" "kafka_data" \{\n.*?^\}\n', kafka_tf, re.M | re.S)
    assert block, "kafka.tf has no aws_volume_attachment.kafka_data"
    plain = KEEP_ATTACHED.sub("", block.group(0))
    plain = plain[: -len("}\n")] + '\n  timeouts {\n    delete = "1m"\n  }\n}\n'
    return kafka_tf.replace(block.group(0), plain)


def _run(step, lines: list[str]) -> dict[str, Any]:
    """What one terraform step did: rc, its error lines (InfraError) and the lines it printed."""
    start = len(lines)
    try:
        result = step()
        outcome: dict[str, Any] = {"rc": result.rc, "errors": []}
    except InfraError as exc:
        outcome = {"rc": None, "errors": list(exc.problems)}
    outcome["output"] = "\n".join(lines[start:])
    return outcome


def _roll_and_destroy(workdir: Path, cli_config: Path, server: moto_server.MotoServer) -> dict[str, Any]:
    lines: list[str] = []
    tf = Terraform(workdir, cli_config=cli_config, env=server.env(), on_line=lines.append)
    ec2 = server.ec2_client("ap-northeast-2")
    record: dict[str, Any] = {}
    tf.init()
    tf.apply()
    record["before_replace"] = _data_volumes(ec2, workdir.name)
    record["replace"] = _run(lambda: tf.run(
        "apply", input=False, no_color=IsFlagged, auto_approve=True, replace=BROKER, lock_timeout="60s",
    ), lines)
    record["before_destroy"] = _data_volumes(ec2, workdir.name)
    record["destroy"] = _run(tf.destroy, lines)
    record["after_destroy"] = _data_volumes(ec2, workdir.name)
    record["brokers_after_destroy"] = _running_brokers(ec2, workdir.name)
    return record


def _data_volumes(ec2, env: str) -> dict[str, tuple[str, list[tuple[str, str]]]]:
    """broker -> (its data volume, [(instance, attachment state)]), from the volumes' Name tags."""
    found = ec2.describe_volumes(Filters=[{"Name": "tag:kafkanet:env", "Values": [env]}])["Volumes"]
    out = {}
    for volume in found:
        name = next(t["Value"] for t in volume["Tags"] if t["Key"] == "Name")
        broker = name.removeprefix(f"{env}-").removesuffix("-data")
        out[broker] = (volume["VolumeId"], [(a["InstanceId"], a["State"]) for a in volume["Attachments"]])
    return out


def _stuck(step: dict[str, Any], volumes: dict[str, tuple[str, list[tuple[str, str]]]], brokers: list[str]) -> None:
    """``step`` failed exactly on detaching these brokers' data volumes, each left busy on its broker."""
    assert step["rc"] is None, "DetachVolume completed for a volume mounted on a running broker"
    assert len(step["errors"]) == len(brokers), step["errors"]
    for broker in brokers:
        volume, [(instance, _)] = volumes[broker]
        error = f"EBS Volume ({volume}) Attachment ({instance}) delete: unexpected state 'busy'"
        assert any(error in e for e in step["errors"]), (broker, step["errors"])
        assert f'{ATTACHMENT}["{broker}"]: Destroying...' in step["output"]
        assert f'{ATTACHMENT}["{broker}"]: Destruction complete' not in step["output"]


def _running_brokers(ec2, env: str) -> list[str]:
    filters = [{"Name": "tag:kafkanet:env", "Values": [env]}, {"Name": "tag:kafkanet:role", "Values": ["broker"]},
               {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    found = ec2.describe_instances(Filters=filters)["Reservations"]
    return sorted(next(t["Value"] for t in i["Tags"] if t["Key"] == "Name") for r in found for i in r["Instances"])


@pytest.fixture(scope="module")
def rolled(request, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The seed as generated ("generated") and without the fix ("plain"), side by side on one moto server."""
    require("terraform")
    work = tmp_path_factory.mktemp("datavol")
    state = work / ".kafkanet"
    request.addfinalizer(lambda: moto_server.stop(state))  # teardown before setup: moto takes everything with it
    server = moto_server.start(state)
    cli_config = tfcli.write_cli_config(work / "terraform.rc")
    dirs = {}
    for key, name in (("generated", "kn-dv-generated"), ("plain", "kn-dv-plain")):
        spec = work / f"{name}.yaml"
        spec.write_text(SEED.read_text().replace("name: ttareungyi", f"name: {name}"))
        dirs[key] = generate(spec, work / name).out_dir
    kafka_tf = dirs["plain"] / "kafka.tf"
    kafka_tf.write_text(without_the_fix(kafka_tf.read_text()))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two provider walks of mostly waiting
        futures = {key: pool.submit(_roll_and_destroy, path, cli_config, server) for key, path in dirs.items()}
        return {key: future.result() for key, future in futures.items()}


def test_without_the_fix_the_attachment_blocks_replacing_a_broker(rolled):
    plain, generated = rolled["plain"], rolled["generated"]
    _stuck(plain["replace"], plain["before_replace"], ["broker-1"])
    _, [(old_broker, _)] = plain["before_replace"]["broker-1"]
    assert plain["before_destroy"]["broker-1"][1] == [(old_broker, "busy")]  # still on the old, running broker

    assert generated["replace"]["rc"] == 0, generated["replace"]["errors"]
    volume, [(old_broker, _)] = generated["before_replace"]["broker-1"]
    # the old broker's termination let go of the volume, and its successor has it
    new_volume, [(new_broker, state)] = generated["before_destroy"]["broker-1"]
    assert (new_volume, state) == (volume, "attached") and new_broker != old_broker


def test_without_the_fix_destroy_fails_on_the_attachments(rolled):
    plain, generated = rolled["plain"], rolled["generated"]
    _stuck(plain["destroy"], plain["before_destroy"], ["broker-1", "broker-2", "broker-3"])
    # and the brokers are left running, as on AWS
    assert plain["brokers_after_destroy"] == [f"kn-dv-plain-broker-{n}" for n in (1, 2, 3)]

    assert generated["destroy"]["rc"] == 0, generated["destroy"]["errors"]
    assert (generated["after_destroy"], generated["brokers_after_destroy"]) == ({}, [])
