"""The plane's services without namespaces: IMDSv2, the resolver and the EC2 relay on loopback, against moto.

A moto server (its own process, on 127.0.0.1) holds the reference topology;
each service is bound to 127.0.0.1 with an ephemeral port, the way the daemon
binds it inside an instance's namespace. No root needed.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from localvpc import (
    apirelay,
    ca,
    cloudview,
    imds,
    instance,
    render,
    resolver,
    services,
    translation,
)
from tests.localvpc.helpers import load_snapshot

pytestmark = pytest.mark.slow  # a moto server of its own

REGION = "ap-northeast-2"
ENDPOINT = "ec2.ap-northeast-2.amazonaws.com"
EMULATED_EIP = "198.51.100.10"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    from generator.localaws import moto_server
    from localvpc import reference

    server = moto_server.start(tmp_path_factory.mktemp("moto"))
    try:
        ec2 = server.ec2_client(REGION)
        created = reference.create(ec2, "svcunit")
        yield server, ec2, created
    finally:
        server.stop()


@pytest.fixture(scope="module")
def view(moto) -> cloudview.CloudView:
    server, ec2, created = moto

    def clients(service: str):
        import boto3

        return boto3.session.Session(region_name=REGION, **CREDS).client(service, endpoint_url=server.url)

    return cloudview.CloudView(clients, created.vpc_id, cloudview.static_public_map({created.eip: EMULATED_EIP}), ttl=0)


@pytest.fixture
def metadata(view, moto):
    """An IMDS for broker-1 on 127.0.0.1 (ephemeral port); yields (server, connect)."""
    created = moto[2]
    server = imds.ImdsServer(("127.0.0.1", 0), created.instances["broker-1"], view, REGION)
    services._serve(server)
    try:
        yield server, lambda: http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    finally:
        server.shutdown()
        server.server_close()


def ask(connect, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    conn = connect()
    try:
        conn.request(method, path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read().decode(), dict(answer.getheaders())
    finally:
        conn.close()


def token(connect, ttl: int = 60) -> str:
    status, body, headers = ask(connect, "PUT", imds.TOKEN_PATH, {imds.TTL_HEADER: str(ttl)})
    assert status == 200 and headers[imds.TTL_HEADER] == str(ttl)
    return body


def read(connect, path: str) -> tuple[int, str]:
    status, body, _ = ask(connect, "GET", path, {imds.TOKEN_HEADER: token(connect)})
    return status, body


# --- IMDSv2 ---------------------------------------------------------------------------


def test_imds_requires_a_token_as_http_tokens_required(metadata):
    _, connect = metadata
    assert ask(connect, "GET", "/latest/meta-data/instance-id")[0] == 401
    assert ask(connect, "GET", "/latest/meta-data/instance-id", {imds.TOKEN_HEADER: "forged"})[0] == 401
    assert ask(connect, "PUT", imds.TOKEN_PATH)[0] == 400  # the TTL header is required
    assert ask(connect, "PUT", imds.TOKEN_PATH, {imds.TTL_HEADER: "21601"})[0] == 400
    assert ask(connect, "PUT", imds.TOKEN_PATH, {imds.TTL_HEADER: "60", "X-Forwarded-For": "1.2.3.4"})[0] == 403
    assert read(connect, "/latest/meta-data/instance-id")[0] == 200  # positive control


def test_imds_token_expires(metadata):
    server, connect = metadata
    expired = token(connect, 1)
    server.tokens[expired] = 0.0  # as if its second had passed
    assert ask(connect, "GET", "/latest/meta-data/instance-id", {imds.TOKEN_HEADER: expired})[0] == 401


def test_imds_answers_from_moto(metadata, moto):
    _, ec2, created = moto
    _, connect = metadata
    inst = ec2.describe_instances(InstanceIds=[created.instances["broker-1"]])["Reservations"][0]["Instances"][0]
    az = inst["Placement"]["AvailabilityZone"]
    zone_id = {z["ZoneName"]: z["ZoneId"] for z in ec2.describe_availability_zones()["AvailabilityZones"]}[az]
    assert read(connect, "/latest/meta-data/instance-id") == (200, inst["InstanceId"])
    assert read(connect, "/latest/meta-data/placement/availability-zone") == (200, az)
    assert read(connect, "/latest/meta-data/placement/availability-zone/") == (200, az)  # as the SDKs ask
    assert read(connect, "/latest/meta-data/placement/availability-zone-id") == (200, zone_id)
    assert read(connect, "/latest/meta-data/placement/region") == (200, REGION)
    assert read(connect, "/latest/meta-data/local-ipv4") == (200, inst["PrivateIpAddress"])
    mac = inst["NetworkInterfaces"][0]["MacAddress"]
    assert read(connect, "/latest/meta-data/mac") == (200, mac)
    assert read(connect, "/latest/meta-data/network/interfaces/macs/") == (200, mac + "/")
    base = f"/latest/meta-data/network/interfaces/macs/{mac}"
    assert read(connect, f"{base}/interface-id") == (200, inst["NetworkInterfaces"][0]["NetworkInterfaceId"])
    assert read(connect, f"{base}/subnet-id") == (200, inst["SubnetId"])
    assert read(connect, f"{base}/vpc-ipv4-cidr-block") == (200, "10.0.0.0/16")
    status, listing = read(connect, "/latest/meta-data/")
    assert status == 200 and {"instance-id", "placement/", "network/", "local-ipv4", "mac"} <= set(listing.split())
    assert read(connect, "/latest/meta-data/public-ipv4")[0] == 404  # a broker has none
    assert read(connect, "/latest/meta-data/iam/")[0] == 404  # and no instance profile
    status, user_data = read(connect, "/latest/user-data")
    assert status == 200 and user_data.startswith("#cloud-config")
    status, document = read(connect, "/latest/dynamic/instance-identity/document")
    assert status == 200 and json.loads(document)["region"] == REGION
    assert read(connect, "/latest/meta-data/no-such-key")[0] == 404


def test_public_ipv4_follows_an_elastic_ip_moved_through_the_api(view, moto):
    _, ec2, created = moto
    nat, broker = created.instances["nat"], created.instances["broker-2"]
    assert view.public_ip(nat) == EMULATED_EIP
    allocation = ec2.describe_addresses(PublicIps=[created.eip])["Addresses"][0]
    ec2.associate_address(AllocationId=allocation["AllocationId"], InstanceId=broker, AllowReassociation=True)
    try:
        assert view.public_ip(broker) == EMULATED_EIP
        assert view.public_ip(nat) is None, "the old holder must lose the address, whatever moto keeps on it"
    finally:
        ec2.associate_address(AllocationId=allocation["AllocationId"], InstanceId=nat, AllowReassociation=True)
    assert view.public_ip(nat) == EMULATED_EIP


def test_instance_profile_credentials_are_moto_sts_credentials_shaped_like_ec2s(view, moto):
    server, ec2, created = moto
    import boto3

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=server.url, **CREDS)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "ec2.amazonaws.com"}}]}  # fmt: skip
    iam.create_role(RoleName="svcunit-nat", AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName="svcunit-nat")
    iam.add_role_to_instance_profile(InstanceProfileName="svcunit-nat", RoleName="svcunit-nat")
    nat = created.instances["nat"]
    ec2.associate_iam_instance_profile(InstanceId=nat, IamInstanceProfile={"Name": "svcunit-nat"})
    server_ = imds.ImdsServer(("127.0.0.1", 0), nat, view, REGION)
    services._serve(server_)
    try:

        def connect():
            return http.client.HTTPConnection("127.0.0.1", server_.server_address[1], timeout=5)

        assert read(connect, "/latest/meta-data/iam/security-credentials/") == (200, "svcunit-nat")
        status, body = read(connect, "/latest/meta-data/iam/security-credentials/svcunit-nat")
        assert status == 200
        creds = json.loads(body)
        assert set(creds) == {"Code", "LastUpdated", "Type", "AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
        assert creds["Code"] == "Success" and creds["Type"] == "AWS-HMAC"
        assert creds["Expiration"].endswith("Z") and creds["Expiration"] > creds["LastUpdated"]
        assert read(connect, "/latest/meta-data/iam/security-credentials/other-role")[0] == 404
        status, info = read(connect, "/latest/meta-data/iam/info")
        assert status == 200 and json.loads(info)["InstanceProfileArn"].endswith("/svcunit-nat")
        sts = boto3.client("sts", region_name=REGION, endpoint_url=server.url, aws_access_key_id=creds["AccessKeyId"],
                           aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["Token"])  # fmt: skip
        assert ":assumed-role/svcunit-nat/" in sts.get_caller_identity()["Arn"]  # moto knows them
    finally:
        server_.shutdown()
        server_.server_close()


def test_imds_lookup_lists_directories_with_a_slash():
    tree = {"a": "1", "b": {"c": "2"}, "d": lambda: "3", "e": lambda: None}
    assert imds.lookup(tree, "/") == "a\nb/\nd\ne"
    assert imds.lookup(tree, "/b/c") == "2"
    assert imds.lookup(tree, "/d/") == "3"
    assert imds.lookup(tree, "/e") is None
    assert imds.lookup(tree, "/a/x") is None


# --- the resolver -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dns(view):
    vpc = resolver.VpcResolver(lambda: view.private_names(REGION), {ENDPOINT: "203.0.113.80"})
    udp, tcp = resolver.servers(vpc, "127.0.0.1", 0)
    udp.start_thread()
    try:
        yield udp.server.server_address[1]
    finally:
        udp.stop()
        tcp.server.server_close()


def query(port: int, name: str, qtype: str = "A") -> DNSRecord:
    return DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", port, timeout=3))


def test_resolver_answers_private_names_the_endpoint_and_nxdomain(dns, moto):
    _, ec2, created = moto
    ip = ec2.describe_instances(InstanceIds=[created.instances["broker-2"]])["Reservations"][0]["Instances"][0][
        "PrivateIpAddress"
    ]
    name = f"ip-{ip.replace('.', '-')}.{REGION}.compute.internal"
    answer = query(dns, name)
    assert answer.header.rcode == RCODE.NOERROR and [str(r.rdata) for r in answer.rr] == [ip]
    assert [str(r.rdata) for r in query(dns, name.upper()).rr] == [ip]
    assert [str(r.rdata) for r in query(dns, ENDPOINT).rr] == ["203.0.113.80"]
    empty = query(dns, ENDPOINT, "AAAA")
    assert empty.header.rcode == RCODE.NOERROR and not empty.rr
    assert query(dns, "bike.example.com").header.rcode == RCODE.NXDOMAIN
    assert query(dns, f"ip-10-0-99-99.{REGION}.compute.internal").header.rcode == RCODE.NXDOMAIN
    assert query(dns, "ip-10-0-1-10.us-east-1.compute.internal").header.rcode == RCODE.NXDOMAIN


def test_resolver_servfails_when_the_api_does_not_answer():
    def broken():
        raise TimeoutError("moto did not answer")

    vpc = resolver.VpcResolver(broken, {})
    reply = vpc.resolve(DNSRecord.question("ip-10-0-1-10.ap-northeast-2.compute.internal", "A"), None)
    assert reply.header.rcode == RCODE.SERVFAIL
    assert QTYPE.A == 1  # dnslib's own constants, not a hand-written table


# --- the EC2 relay and its CA -----------------------------------------------------------


@pytest.fixture(scope="module")
def relay(moto, tmp_path_factory):
    server = moto[0]
    files = ca.create(tmp_path_factory.mktemp("ca"), "svcunit", [ENDPOINT])
    relay = apirelay.RelayServer(("127.0.0.1", 0), [ENDPOINT], apirelay.server_context(files.server_cert, files.server_key),
                                 apirelay.moto_forwarder(server.url))  # fmt: skip
    services._serve(relay)
    try:
        yield relay.server_address[1], files
    finally:
        relay.shutdown()
        relay.server_close()


def signed(host: str, body: str, service: str) -> dict[str, str]:
    """SigV4 headers (botocore's signer) of a POST to ``host``, as an SDK sends them."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("POST", f"https://{host}/", data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})  # fmt: skip
    SigV4Auth(Credentials("testing", "testing"), service, REGION).add_auth(request)
    return dict(request.headers.items())


def https(port: int, context: ssl.SSLContext, host: str, body: str, service: str | None = "ec2") -> tuple[int, str]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.sock = context.wrap_socket(raw, server_hostname=ENDPOINT)
    headers = signed(host, body, service) if service else {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        conn.request("POST", "/", body=body, headers={"Host": host, **headers})
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def test_relay_forwards_to_moto_over_https_verified_with_the_plane_ca(relay):
    port, files = relay
    trusted = ssl.create_default_context(cafile=str(files.ca_cert))
    status, body = https(port, trusted, ENDPOINT, "Action=DescribeRegions&Version=2016-11-15")
    assert status == 200 and "<regionName>ap-northeast-2</regionName>" in body
    assert https(port, trusted, "iam.amazonaws.com", "Action=ListRoles&Version=2010-05-08", "iam")[0] == 421
    status, body = https(port, trusted, ENDPOINT, "Action=DescribeRegions&Version=2016-11-15", None)
    assert status == 401 and "MissingAuthenticationToken" in body  # never moto's S3, its default
    status, body = https(port, trusted, ENDPOINT, "Action=ListRoles&Version=2010-05-08", "iam")
    assert status == 403 and "SignatureDoesNotMatch" in body


def test_the_relay_certificate_is_not_trusted_by_the_system_bundle(relay):
    port, _ = relay
    system = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        https(port, system, ENDPOINT, "Action=DescribeRegions&Version=2016-11-15")


def test_relay_refuses_a_non_loopback_upstream():
    with pytest.raises(ValueError, match="loopback"):
        apirelay.moto_forwarder("https://ec2.ap-northeast-2.amazonaws.com")


# --- what the builder prepares ------------------------------------------------------------


def test_prepare_writes_ca_bundles_and_config_without_touching_the_originals(tmp_path: Path):
    plane_ = translation.translate(load_snapshot())
    lay = render.layout("svcunit", plane_)
    originals = {p: p.read_bytes() for p in ca.bundle_paths()}
    prepared = services.prepare("svcunit", plane_, lay.host_ns, tmp_path, tmp_path / "state", "http://127.0.0.1:5000")
    assert {p for p in originals} == {target for _, target in prepared.mounts}
    ca_pem = prepared.ca_cert.read_bytes()
    for combined, target in prepared.mounts:
        assert combined.read_bytes().startswith(originals[target]) and combined.read_bytes().endswith(ca_pem)
        assert target.read_bytes() == originals[target]
    config = json.loads(prepared.config_path.read_text())
    assert config["resolver_ip"] == prepared.resolver_ip == "10.0.0.2"
    assert config["relay_ip"] == plane_.internet.web_ip
    assert config["public_names"] == {ENDPOINT: plane_.internet.web_ip, "checkip.amazonaws.com": plane_.internet.web_ip}
    assert {h["instance_id"] for h in config["hosts"]} == {h.instance_id for h in plane_.hosts}
    assert (tmp_path / "services" / "ca" / "server.key").stat().st_mode & 0o077 == 0
    assert config["credentials"] == ["testing", "testing"]  # none given: moto's fake keys
    assert prepared.config_path.stat().st_mode & 0o077 == 0  # it holds them


def test_instance_etc_names_the_resolver_and_lists_the_bundle_mounts(tmp_path: Path):
    host = translation.translate(load_snapshot()).hosts[0]
    etc = instance.write_etc(tmp_path, host, REGION, "10.0.0.2", [(tmp_path / "b.pem", Path("/etc/ssl/x.crt"))])
    resolv = (etc / "resolv.conf").read_text()
    assert "nameserver 10.0.0.2\n" in resolv and f"search {REGION}.compute.internal\n" in resolv
    assert (etc / "mounts").read_text() == f"{tmp_path / 'b.pem'} /etc/ssl/x.crt\n"
    plain = instance.write_etc(tmp_path, host, REGION)
    assert "nameserver 127.0.0.1" in (plain / "resolv.conf").read_text() and not (plain / "mounts").exists()
