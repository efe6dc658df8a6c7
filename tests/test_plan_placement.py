"""`kafkanet plan` refuses an instance type in an AZ that does not offer it, as AWS would at apply.

The module asks EC2 which AZs offer each instance type (data source
``aws_ec2_instance_type_offerings``) and fails the plan through a precondition on
the instance. moto serves the same offerings data as EC2 (t2.micro in Seoul: 2a and
2c only), so the local plan refuses exactly what RunInstances on AWS would.
Real terraform against a moto server on 127.0.0.1; no root.
"""

from __future__ import annotations

import re

import pytest

from generator.cli import main
from generator.environment import session
from generator.localaws import moto_server
from tests.conftest import require

pytestmark = [pytest.mark.terraform, pytest.mark.slow]

# t2.micro is offered in ap-northeast-2a and 2c only. Brokers go round-robin over
# their AZs: broker-1 in a (offered), broker-2 in b (not); the NAT in b (not).
SPEC = """\
name: kn-offer
region: ap-northeast-2
vpc_cidr: 10.0.0.0/16
admin_cidrs: [203.0.113.50/32]
nat: {az: b, instance_type: t2.micro}
brokers: {azs: [a, b], count: 2, instance_type: t2.micro}
kafka:
  topics:
    - {name: bike-station-status, partitions: 2, replication_factor: 2}
"""


def test_plan_refuses_instance_types_their_az_does_not_offer(write_spec, capsys, request, _build_root):
    require("terraform")
    spec = write_spec(SPEC)
    request.addfinalizer(lambda: moto_server.stop(_build_root / "kn-offer" / session.MOTO_DIR))

    assert main(["plan", str(spec)]) == 3
    err = capsys.readouterr().err
    # terraform wraps each message at 78 columns: a paragraph, up to a blank line or kafkanet's own lines
    paragraphs = re.findall(r"^EC2 does not offer (?:(?!kafkanet: ).+\n)+", err, re.M)
    refusals = [" ".join(p.split()) for p in paragraphs]
    assert sorted(refusals) == [
        "EC2 does not offer t2.micro in ap-northeast-2b, the AZ of broker-2: in the spec, set "
        "brokers.instance_type to a type offered in every AZ of brokers.azs, or drop this AZ from brokers.azs.",
        "EC2 does not offer t2.micro in ap-northeast-2b, the NAT instance's AZ: in the spec, set "
        "nat.instance_type to a type offered there or nat.az to an AZ that offers t2.micro.",
    ], err
    # kafkanet's own verdict names terraform's two errors, nothing else
    verdict = re.findall(r"^kafkanet: error: .*?Error: (.*)$", err, re.M)
    assert sorted(re.sub(r" line \d+", "", v) for v in verdict) == [
        "Resource precondition failed (kafka.tf)", "Resource precondition failed (nat.tf)"], verdict
    assert "ap-northeast-2a" not in "".join(refusals)  # broker-1's AZ offers t2.micro
