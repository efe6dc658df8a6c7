"""The plane's services with real packets (root): IMDSv2, the VPC resolver, the EC2 API from inside.

A plane of the reference topology built *with* its moto endpoint (as the
lifecycle builds it), so that the services daemon runs. Commands run inside an
instance exactly where its sshd runs (``nsenter`` into the network, mount and
UTS namespaces of that sshd), so they see its resolv.conf and CA bundles;
the AWS CLI test goes through SSH to the bastion like an operator would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from localvpc import ca, plane, services
from tests.localvpc.helpers import Live, require_root_plane, unique_env

pytestmark = [pytest.mark.root, pytest.mark.slow]

BROKERS = ["broker-1", "broker-2", "broker-3"]
AWS_CLI = "/usr/bin/aws"  # Debian's awscli (Makefile APT_PACKAGES)
IMDS = "http://169.254.169.254"


@pytest.fixture(scope="module")
def svc(request, tmp_path_factory) -> Live:
    require_root_plane()
    from generator.localaws import moto_server
    from generator.module.keys import ensure_key
    from localvpc import reference

    env = unique_env("s")
    request.addfinalizer(lambda: plane.teardown(env))  # before anything is built
    state = tmp_path_factory.mktemp("services")
    server = moto_server.start(state / "moto")
    request.addfinalizer(server.stop)
    ec2 = server.ec2_client("ap-northeast-2")
    key, public = ensure_key(state, env)
    created = reference.create(ec2, env, public_key=public)
    info = plane.build(env, ec2, key, state, endpoint_url=server.url)
    return Live(env, info, key, state, ec2, created.eip)


def sshd_pid(live: Live, host: str) -> int:
    manifest = json.loads((plane.runtime_dir(live.env) / "manifest.json").read_text())
    ns = live.info.hosts[host].netns
    return next(d["pid"] for d in manifest["daemons"] if d["netns"] == ns and d["what"] == "sshd")


def inside(live: Live, host: str, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    """``argv`` in ``host``'s network, mount and UTS namespaces (those its sshd and its sessions have)."""
    pid = sshd_pid(live, host)
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "-m", "-u", "--", *argv],
        capture_output=True, text=True, timeout=timeout,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
    )  # fmt: skip


def curl(live: Live, host: str, *args: str) -> subprocess.CompletedProcess:
    return inside(live, host, ["curl", "-sS", "--max-time", "5", *args])


def imds_get(live: Live, host: str, path: str) -> str:
    token = curl(live, host, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60", f"{IMDS}/latest/api/token")
    assert token.returncode == 0 and token.stdout, f"{host}: IMDS token: {token.stderr}"
    got = curl(live, host, "-f", "-H", f"X-aws-ec2-metadata-token: {token.stdout}", f"{IMDS}/latest/meta-data/{path}")
    assert got.returncode == 0, f"{host}: IMDS {path}: {got.stderr}"
    return got.stdout


def zone_ids(live: Live) -> dict[str, str]:
    return {z["ZoneName"]: z["ZoneId"] for z in live.ec2.describe_availability_zones()["AvailabilityZones"]}


@pytest.mark.parametrize("broker", BROKERS)
def test_broker_reads_its_az_and_az_id_through_imdsv2(svc: Live, broker: str):
    host = svc.info.hosts[broker]
    inst = svc.ec2.describe_instances(InstanceIds=[host.instance_id])["Reservations"][0]["Instances"][0]
    az = inst["Placement"]["AvailabilityZone"]
    assert imds_get(svc, broker, "placement/availability-zone") == az
    assert imds_get(svc, broker, "placement/availability-zone-id") == zone_ids(svc)[az]
    assert imds_get(svc, broker, "instance-id") == host.instance_id
    assert imds_get(svc, broker, "local-ipv4") == host.private_ip
    mac = imds_get(svc, broker, "mac")
    assert mac == inst["NetworkInterfaces"][0]["MacAddress"]
    assert imds_get(svc, broker, f"network/interfaces/macs/{mac}/local-ipv4s") == host.private_ip
    # a script that finds its interface by IMDS's MAC finds it, as on EC2
    links = inside(svc, broker, ["ip", "-o", "link", "show"])
    assert f"link/ether {mac} " in links.stdout, f"{broker}: no interface with IMDS's mac {mac}: {links.stdout}"


def test_a_v1_request_gets_401(svc: Live):
    v1 = curl(svc, "broker-1", "-o", "/dev/null", "-w", "%{http_code}", f"{IMDS}/latest/meta-data/instance-id")
    assert v1.stdout == "401", f"broker-1: IMDSv1 read answered {v1.stdout!r} {v1.stderr}"
    bad = curl(svc, "broker-1", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-aws-ec2-metadata-token: forged",
               f"{IMDS}/latest/meta-data/instance-id")  # fmt: skip
    assert bad.stdout == "401"
    no_ttl = curl(svc, "broker-1", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", f"{IMDS}/latest/api/token")
    assert no_ttl.stdout == "400"


def test_public_ipv4_follows_the_elastic_ip_in_the_api(svc: Live):
    nat_public = svc.info.hosts["nat"].public_ip
    assert imds_get(svc, "nat", "public-ipv4") == nat_public
    missing = curl(svc, "broker-1", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                   f"X-aws-ec2-metadata-token: {_token(svc, 'broker-1')}", f"{IMDS}/latest/meta-data/public-ipv4")  # fmt: skip
    assert missing.stdout == "404", "a broker has no public address"


def _token(live: Live, host: str) -> str:
    return curl(live, host, "-X", "PUT", "-H", "X-aws-ec2-metadata-token-ttl-seconds: 60",
                f"{IMDS}/latest/api/token").stdout  # fmt: skip


def test_broker_resolves_another_brokers_private_name_and_nxdomain_otherwise(svc: Live):
    other = svc.info.hosts["broker-2"]
    name = f"{other.hostname}.ap-northeast-2.compute.internal"
    got = inside(svc, "broker-1", ["getent", "ahostsv4", name])
    assert got.returncode == 0 and got.stdout.split()[0] == other.private_ip, f"broker-1: {name}: {got.stderr}"
    short = inside(svc, "broker-1", ["getent", "ahostsv4", other.hostname])  # the search domain, as on EC2
    assert short.returncode == 0 and short.stdout.split()[0] == other.private_ip
    endpoint = inside(svc, "broker-1", ["getent", "ahostsv4", "ec2.ap-northeast-2.amazonaws.com"])
    assert endpoint.stdout.split()[0] == svc.info.web_ip
    started = time.monotonic()
    unknown = inside(svc, "broker-1", ["getent", "ahostsv4", "bike.example.com"])
    assert unknown.returncode == 2, f"broker-1: unknown name: exit {unknown.returncode} {unknown.stdout}"
    assert time.monotonic() - started < 3, "NXDOMAIN must come at once"
    if shutil.which("dig") or shutil.which("host"):  # the rcode itself, when a DNS client is installed
        tool = shutil.which("host") or shutil.which("dig")
        argv = [tool, "bike.example.com", "10.0.0.2"] if tool.endswith("host") else [tool, "@10.0.0.2", "bike.example.com"]
        assert "NXDOMAIN" in inside(svc, "broker-1", argv).stdout


def test_a_broker_calls_the_ec2_api_through_the_nat(svc: Live):
    """HTTPS to the endpoint name, verified with the instance's own CA bundle, crossing the NAT (the relay logs the caller)."""
    got = curl(svc, "broker-1", "-f", "--aws-sigv4", "aws:amz:ap-northeast-2:ec2", "--user", "testing:testing",
               "-d", "Action=DescribeRegions&Version=2016-11-15", "https://ec2.ap-northeast-2.amazonaws.com/")  # fmt: skip
    assert got.returncode == 0, f"broker-1: https to the EC2 endpoint: {got.stderr}"
    assert "<regionName>ap-northeast-2</regionName>" in got.stdout, f"broker-1: not moto's EC2: {got.stdout[:200]}"
    log = (plane.runtime_dir(svc.env) / "services.log").read_text()
    assert f"relay {svc.info.bastion_public_ip} " in log, "the relay should see the NAT's public address"


def test_bastion_runs_the_aws_cli_against_moto_over_its_own_internet_path(svc: Live, tmp_path: Path):
    if not Path(AWS_CLI).is_file():
        pytest.fail(f"{AWS_CLI} missing: apt-get install awscli (make install does)")
    from localvpc import netns

    known = tmp_path / "known_hosts"
    known.write_text(svc.info.known_hosts())
    client = paramiko.SSHClient()
    client.load_host_keys(str(known))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = netns.netns_socket(svc.info.operator_netns, (svc.info.bastion_public_ip, 22), 5)
    client.connect(svc.info.bastion_public_ip, username=svc.info.ssh_user, key_filename=str(svc.key), sock=sock,
                   timeout=5, banner_timeout=5, auth_timeout=5, look_for_keys=False, allow_agent=False)  # fmt: skip
    try:
        # credentials only (the bastion has no instance profile); region from IMDS, endpoint the default
        command = (
            "env -i PATH=/usr/bin:/bin HOME=/tmp AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
            f"{AWS_CLI} ec2 describe-instances --output json"
        )
        _, stdout, stderr = client.exec_command(command, timeout=60)
        out = stdout.read().decode()
        code = stdout.channel.recv_exit_status()
        assert code == 0, f"bastion: aws ec2 describe-instances exit {code}: {stderr.read().decode()}"
    finally:
        client.close()
    ids = {i["InstanceId"] for r in json.loads(out)["Reservations"] for i in r["Instances"]}
    assert {h.instance_id for h in svc.info.hosts.values()} <= ids
    log = (plane.runtime_dir(svc.env) / "services.log").read_text()
    assert f"relay {svc.info.bastion_public_ip} " in log, "the call should arrive from the bastion's public address"


def test_instance_profile_credentials_from_imds_work_against_moto(svc: Live):
    import boto3

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=svc.ec2.meta.endpoint_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}  # fmt: skip
    iam.create_role(RoleName=f"{svc.env}-broker", AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName=f"{svc.env}-broker")
    iam.add_role_to_instance_profile(InstanceProfileName=f"{svc.env}-broker", RoleName=f"{svc.env}-broker")
    host = svc.info.hosts["broker-3"]
    svc.ec2.associate_iam_instance_profile(InstanceId=host.instance_id,
                                           IamInstanceProfile={"Name": f"{svc.env}-broker"})  # fmt: skip
    deadline, token = time.monotonic() + 5, _token(svc, "broker-3")
    while True:  # moto's state is read with a 0.5 s cache: bounded wait for the new profile
        roles = curl(svc, "broker-3", "-H", f"X-aws-ec2-metadata-token: {token}",
                     f"{IMDS}/latest/meta-data/iam/security-credentials/").stdout  # fmt: skip
        if roles.strip() == f"{svc.env}-broker":
            break
        assert time.monotonic() < deadline, f"broker-3: the instance profile not in IMDS within 5 s: {roles!r}"
        time.sleep(0.2)
    creds = json.loads(imds_get(svc, "broker-3", f"iam/security-credentials/{svc.env}-broker"))
    assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
    assert creds["Expiration"].endswith("Z") and creds["Token"]
    # the AWS CLI inside broker-3 finds them itself (no credentials given), over the NAT
    got = inside(svc, "broker-3", ["env", "-i", "PATH=/usr/bin:/bin", "HOME=/tmp", AWS_CLI, "ec2",
                                   "describe-instances", "--instance-ids", host.instance_id, "--output", "json"],
                 timeout=60)  # fmt: skip
    assert got.returncode == 0, f"broker-3: aws ec2 with IMDS credentials: {got.stderr}"
    seen = json.loads(got.stdout)["Reservations"][0]["Instances"][0]
    assert seen["IamInstanceProfile"]["Arn"].endswith(f"/{svc.env}-broker")


def test_the_ca_is_trusted_inside_the_instances_only(svc: Live):
    ca_pem = (plane.runtime_dir(svc.env) / "services" / "ca" / "ca.pem").read_text().strip()
    body = ca_pem.splitlines()[1]  # a line of the certificate itself
    for bundle in ca.bundle_paths():
        assert body not in bundle.read_text(), f"{bundle}: the plane's CA leaked into the root mount namespace"
        seen = inside(svc, "broker-1", ["cat", str(bundle)])
        assert body in seen.stdout, f"broker-1: {bundle} does not carry the plane's CA (positive control)"


def test_services_daemon_lives_in_a_plane_namespace_so_teardown_finds_it_by_name(svc: Live):
    from localvpc import netns

    manifest = json.loads((plane.runtime_dir(svc.env) / "manifest.json").read_text())
    daemon = next(d for d in manifest["daemons"] if d["what"] == "services")
    assert daemon["netns"] == svc.info.web_netns
    assert netns.pids_in([svc.info.web_netns]).get(daemon["pid"]) == svc.info.web_netns
    assert not plane.status(svc.env).missing_daemons
    assert services.endpoint_name("ap-northeast-2") == "ec2.ap-northeast-2.amazonaws.com"


CRASHING_BUILD = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
import boto3
from localvpc import plane
ec2 = boto3.client("ec2", region_name="ap-northeast-2", endpoint_url={url!r},
                   aws_access_key_id="testing", aws_secret_access_key="testing")
plane.build({env!r}, ec2, Path({key!r}), Path({state!r}), endpoint_url={url!r})
print("built", flush=True)
time.sleep(120)
"""


def test_teardown_after_a_crash_stops_the_services_daemon(svc: Live, request, tmp_path: Path):
    """The builder dies and its records are lost: teardown still finds the daemon, by its namespace."""
    import sys

    from generator.module.keys import ensure_key
    from localvpc import netns, reference, render

    env = unique_env("sc")
    request.addfinalizer(lambda: plane.teardown(env))
    key, public = ensure_key(tmp_path, env)
    reference.create(svc.ec2, env, public_key=public)  # a second VPC in the same moto, same CIDR
    code = CRASHING_BUILD.format(root=str(Path(__file__).resolve().parents[2]), env=env, key=str(key),
                                 state=str(tmp_path), url=svc.ec2.meta.endpoint_url)  # fmt: skip
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "built", child.stderr.read()
        manifest = json.loads((plane.runtime_dir(env) / "manifest.json").read_text())
        daemon = next(d["pid"] for d in manifest["daemons"] if d["what"] == "services")
        assert netns.process_name(daemon) is not None
    finally:
        child.kill()
        child.wait(timeout=10)
    shutil.rmtree(plane.runtime_dir(env))
    report = plane.teardown(env)
    assert report.processes >= 9  # 4 sshd, 3 tansu, the web host, the services daemon (and what else it found)
    assert netns.list_netns(render.netns_prefix(env)) == []
    assert netns.process_name(daemon) is None
