"""The instance metadata service (IMDSv2) of one emulated instance, answered from the EC2 API's current state.

One :class:`ImdsServer` per instance, listening on 169.254.169.254:80 inside
that instance's namespace (the services daemon opens the socket there). As on
EC2 with ``http_tokens = required``: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600) gives a token, and every
read without a valid ``X-aws-ec2-metadata-token`` gets 401; with ``optional``
(as moto reports the instance's ``MetadataOptions``) a v1 read is answered; with
the endpoint ``disabled``, 403. A token request carrying ``X-Forwarded-For`` is
refused (403), as EC2 refuses it.

Paths served: the ``meta-data`` tree (``instance-id``, ``instance-type``,
``ami-id``, ``hostname``, ``local-hostname``, ``local-ipv4``, ``mac``,
``network/interfaces/macs/<mac>/...``, ``placement/availability-zone``,
``availability-zone-id`` and ``region``, ``public-ipv4``, ``security-groups``,
``services/...``, ``iam/info`` and ``iam/security-credentials/<role>`` for an
instance with an instance profile), ``user-data`` and
``dynamic/instance-identity/document``. Directories list their entries, a
sub-directory with a trailing ``/``, as EC2 does; a leaf answers with or without
a trailing ``/`` (the AWS SDKs ask for ``placement/availability-zone/``).
"""

from __future__ import annotations

import json
import logging
import secrets
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from localvpc.cloudview import CloudView, private_domain, private_name

ADDRESS = "169.254.169.254"
TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600

log = logging.getLogger("kafkanet.localvpc.imds")

Tree = dict[str, Any]  # values: str, bytes, a sub-Tree, or a callable giving one of those (None: absent)


def _primary_eni(inst: dict) -> dict:
    enis = inst.get("NetworkInterfaces") or []
    return next((e for e in enis if (e.get("Attachment") or {}).get("DeviceIndex") == 0), enis[0] if enis else {})


def metadata_tree(view: CloudView, inst: dict, region: str) -> Tree:
    """The ``/latest/meta-data/`` tree of ``inst`` (a DescribeInstances record)."""
    iid = inst["InstanceId"]
    domain = private_domain(region)
    private_ip = inst.get("PrivateIpAddress", "")
    hostname = f"{private_name(private_ip)}.{domain}"
    az = (inst.get("Placement") or {}).get("AvailabilityZone", "")
    public = view.public_ip(iid)
    groups = inst.get("SecurityGroups") or []
    macs: Tree = {}
    for eni in inst.get("NetworkInterfaces") or []:
        mac = eni.get("MacAddress")
        if not mac:
            continue
        subnet = view.subnets().get(eni.get("SubnetId", ""), {})
        eni_groups = eni.get("Groups") or []
        vpc_cidrs = [a["CidrBlock"] for a in view.vpc().get("CidrBlockAssociationSet") or [] if a.get("CidrBlock")]
        entry: Tree = {
            "device-number": str((eni.get("Attachment") or {}).get("DeviceIndex", 0)),
            "interface-id": eni.get("NetworkInterfaceId", ""),
            "local-hostname": f"{private_name(eni.get('PrivateIpAddress', ''))}.{domain}",
            "local-ipv4s": "\n".join(p["PrivateIpAddress"] for p in eni.get("PrivateIpAddresses") or []),
            "mac": mac,
            "owner-id": eni.get("OwnerId", ""),
            "security-group-ids": "\n".join(g["GroupId"] for g in eni_groups),
            "security-groups": "\n".join(g["GroupName"] for g in eni_groups),
            "subnet-id": eni.get("SubnetId", ""),
            "subnet-ipv4-cidr-block": subnet.get("CidrBlock", ""),
            "vpc-id": eni.get("VpcId", ""),
            "vpc-ipv4-cidr-block": view.vpc().get("CidrBlock", ""),
            "vpc-ipv4-cidr-blocks": "\n".join(vpc_cidrs),
        }
        if eni is _primary_eni(inst) and public:
            entry["public-ipv4s"] = public
        macs[mac] = entry
    tree: Tree = {
        "ami-id": inst.get("ImageId", ""),
        "ami-launch-index": str(inst.get("AmiLaunchIndex", 0)),
        "hostname": hostname,
        "instance-id": iid,
        "instance-type": inst.get("InstanceType", ""),
        "local-hostname": hostname,
        "local-ipv4": private_ip,
        "mac": _primary_eni(inst).get("MacAddress", ""),
        "network": {"interfaces": {"macs": macs}},
        "placement": {
            "availability-zone": az,
            "availability-zone-id": lambda: view.availability_zone_id(iid),
            "region": region,
        },
        "security-groups": "\n".join(g["GroupName"] for g in groups),
        "services": {"domain": "amazonaws.com", "partition": "aws"},
    }
    if public:
        tree["public-ipv4"] = public
    role = view.role_of(iid)
    if role:
        profile = inst["IamInstanceProfile"]
        tree["iam"] = {
            "info": lambda: json.dumps(
                {
                    "Code": "Success",
                    "LastUpdated": (view.credentials(iid, role) or {}).get("LastUpdated", ""),
                    "InstanceProfileArn": profile.get("Arn", ""),
                    "InstanceProfileId": profile.get("Id", ""),
                },
                indent=2,
            ),
            "security-credentials": {role: lambda: _credentials_json(view.credentials(iid, role))},
        }
    return tree


def _credentials_json(creds: dict | None) -> str | None:
    if creds is None:
        return None
    return json.dumps({k: v for k, v in creds.items() if not k.startswith("_")}, indent=2)


def identity_document(view: CloudView, inst: dict, region: str) -> str:
    launch = inst.get("LaunchTime")
    return json.dumps(
        {
            "accountId": _primary_eni(inst).get("OwnerId", ""),
            "architecture": inst.get("Architecture", "x86_64"),
            "availabilityZone": (inst.get("Placement") or {}).get("AvailabilityZone", ""),
            "imageId": inst.get("ImageId", ""),
            "instanceId": inst["InstanceId"],
            "instanceType": inst.get("InstanceType", ""),
            "pendingTime": launch.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(launch, "strftime") else str(launch or ""),
            "privateIp": inst.get("PrivateIpAddress", ""),
            "region": region,
            "version": "2017-09-30",
        },
        indent=2,
    )


def lookup(tree: Tree, path: str) -> str | bytes | None:
    """The answer for ``path`` (relative to the tree) or None (404): a leaf's value, or a directory's listing."""
    node: Any = tree
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if callable(node):
            node = node()
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if callable(node):
        node = node()
    if node is None:
        return None
    if isinstance(node, dict):
        entries = []
        for key, value in node.items():
            if callable(value) and not isinstance(value, dict):
                entries.append(key)  # a leaf computed on demand: listed without asking the API
            elif isinstance(value, dict):
                entries.append(key + "/")
            else:
                entries.append(key)
        return "\n".join(entries)
    if isinstance(node, str) and path.endswith("/") and not node:
        return None
    return node


class ImdsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the address's name (getfqdn): inside a namespace
        # that waits out the host resolver's timeout. The name is only used for CGI variables.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def __init__(self, address: tuple[str, int], instance_id: str, view: CloudView, region: str,
                 *, bind_and_activate: bool = True) -> None:  # fmt: skip
        self.instance_id = instance_id
        self.view = view
        self.region = region
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.tokens_lock = threading.Lock()
        super().__init__(address, ImdsHandler, bind_and_activate=bind_and_activate)

    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        now = time.monotonic()
        with self.tokens_lock:
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
            self.tokens[token] = now + ttl
        return token

    def token_ttl(self, token: str | None) -> int | None:
        """Seconds left of ``token`` (None: missing, unknown or expired)."""
        if not token:
            return None
        with self.tokens_lock:
            expiry = self.tokens.get(token)
        if expiry is None:
            return None
        left = int(expiry - time.monotonic())
        return left if left > 0 else None


class ImdsHandler(BaseHTTPRequestHandler):
    server: ImdsServer
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.info("%s %s %s", self.server.instance_id, self.client_address[0], format % args)

    def _send(self, status: int, body: str | bytes = b"", headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))

    def _guarded(self, answer: Callable[[], None]) -> None:
        try:
            answer()
        except Exception as exc:  # the API did not answer: as EC2 under trouble, a 500, never a hang
            log.warning("%s: %s %s: %s", self.server.instance_id, self.command, self.path, exc)
            self._send(500, "Internal Server Error")

    def do_PUT(self) -> None:  # noqa: N802 (http.server's naming)
        self._drain()
        if self.path.split("?")[0] != TOKEN_PATH:
            self._send(405, "Method Not Allowed")
            return
        if self.headers.get("X-Forwarded-For"):
            self._send(403, "Forbidden")
            return
        raw = self.headers.get(TTL_HEADER)
        try:
            ttl = int(raw or "")
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TTL:
            self._send(400, "Bad Request")
            return

        def answer() -> None:
            inst = self.server.view.instance(self.server.instance_id)
            if inst is not None and (inst.get("MetadataOptions") or {}).get("HttpEndpoint") == "disabled":
                self._send(403, "Forbidden")
                return
            self._send(200, self.server.new_token(ttl), {TTL_HEADER: str(ttl)})

        self._guarded(answer)

    def do_GET(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def _get(self) -> None:
        view = self.server.view
        inst = view.instance(self.server.instance_id)
        if inst is None:
            self._send(404, "Not Found")
            return
        options = inst.get("MetadataOptions") or {}
        if options.get("HttpEndpoint") == "disabled":
            self._send(403, "Forbidden")
            return
        token = self.headers.get(TOKEN_HEADER)
        left = self.server.token_ttl(token)
        if left is None and (token or options.get("HttpTokens", "required") != "optional"):
            self._send(401, "Unauthorized")
            return
        headers = {TTL_HEADER: str(left)} if left is not None else {}
        path = self.path.split("?")[0]
        body: str | bytes | None
        if path in ("", "/"):
            body = "latest"
        elif path.rstrip("/") == "/latest":
            body = "dynamic\nmeta-data\nuser-data"
        elif path.rstrip("/") == "/latest/user-data":
            body = view.user_data(self.server.instance_id)
        elif path.rstrip("/") == "/latest/dynamic":
            body = "instance-identity/"
        elif path.rstrip("/") == "/latest/dynamic/instance-identity":
            body = "document"
        elif path.rstrip("/") == "/latest/dynamic/instance-identity/document":
            body = identity_document(view, inst, self.server.region)
        elif path == "/latest/meta-data" or path.startswith("/latest/meta-data/"):
            body = lookup(metadata_tree(view, inst, self.server.region), path[len("/latest/meta-data") :])
        else:
            body = None
        if body is None:
            self._send(404, "Not Found", headers)
        else:
            self._send(200, body, headers)
