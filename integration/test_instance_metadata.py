"""Instance metadata from inside: IMDSv2 refuses a token-less read, and the AZ and its ID are readable.

Run on each host over the session's SSH transport (testinfra), with curl,
each request bounded. The AZ must match what the EC2 API says of the
instance, the AZ ID what it says of the instance's subnet (the ID, not the
account-specific letter, is what ``broker.rack`` should carry). On the local
target the plane's metadata service answers from moto, on AWS EC2's own.
"""

from __future__ import annotations

from integration import aws
from integration.support import expect_equal, fail, host_label

IMDS = "http://169.254.169.254"
MAX_TIME = 3
REMOTE_BUDGET = 20

SCRIPT = f"""
set -u
command -v curl >/dev/null 2>&1 || {{ echo "curl missing"; exit 3; }}
v1=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time {MAX_TIME} {IMDS}/latest/meta-data/instance-id)
token=$(curl -sS --fail --max-time {MAX_TIME} -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \\
        {IMDS}/latest/api/token) || {{ echo "token request failed"; exit 4; }}
get() {{ curl -sS --fail --max-time {MAX_TIME} -H "X-aws-ec2-metadata-token: $token" "{IMDS}/latest/meta-data/$1"; }}
az=$(get placement/availability-zone) || {{ echo "availability-zone failed"; exit 5; }}
az_id=$(get placement/availability-zone-id) || {{ echo "availability-zone-id failed"; exit 6; }}
printf '%s %s %s\\n' "$v1" "$az" "$az_id"
"""


def test_imdsv2_token_required_and_az_id_readable(instance, testinfra_hosts, ec2):
    name = instance["name"]
    result = testinfra_hosts[name].run("timeout -k 2 %s /bin/sh -c %s", str(REMOTE_BUDGET), SCRIPT)
    if result.rc != 0:
        said = (result.stdout + result.stderr).strip()[-300:]
        fail(name, "instance metadata (IMDSv2) from the host", f"exit {result.rc}: {said}")
    fields = result.stdout.split()
    if len(fields) != 3:
        fail(name, "instance metadata (IMDSv2) from the host", f"unexpected output {result.stdout.strip()!r}")
    v1, az, az_id = fields
    expect_equal(v1, "401", host_label(instance), "HTTP status of a metadata read without a token",
                 "401 (IMDSv2 required)")  # fmt: skip
    inst = aws.instance(ec2, instance["instance_id"])
    expect_equal(az, inst["Placement"]["AvailabilityZone"], name, "placement/availability-zone",
                 "the instance's AZ in the EC2 API")  # fmt: skip
    subnet = ec2.describe_subnets(SubnetIds=[inst["SubnetId"]])["Subnets"][0]
    expect_equal(az_id, subnet.get("AvailabilityZoneId"), name, "placement/availability-zone-id",
                 "the AZ ID of its subnet in the EC2 API")  # fmt: skip
