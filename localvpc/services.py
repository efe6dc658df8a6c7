"""The plane's services daemon: IMDSv2, the VPC resolver and the EC2 API relay, one process per environment.

What an instance reaches on AWS besides other hosts, answered from the
environment's own moto server as it is *now*:

* :mod:`localvpc.imds` at 169.254.169.254:80 and :mod:`localvpc.resolver` at the
  VPC base + 2 (port 53, UDP and TCP), in every instance's namespace: the
  builder puts both addresses on the instance's loopback and the daemon opens
  the listening sockets there (a thread enters the namespace, binds, and leaves
  the socket behind). Traffic to them never crosses the VPC router, so no
  security group applies, as on AWS.
* :mod:`localvpc.apirelay` at the web host's address, port 443, in the
  emulated internet: the regional EC2 endpoint name resolves to it, so an
  instance's call crosses the NAT or the internet gateway like a real one.
  It presents a certificate of :mod:`localvpc.ca`, which only the instances'
  mount namespaces trust.

Process model: :func:`prepare` (in the builder) writes the CA, the combined CA
bundles and the daemon's configuration under ``/run/kn_E/services/``;
:func:`start`, called right after it so that the daemon starts up while the
instances' own daemons do, adds the two addresses and runs ``python -I`` on
this module inside the web host's namespace (``ip netns exec``), handing it
the root network namespace as an open file descriptor. Its EC2/IAM/STS calls
run on a pool of threads that enter the root namespace first, where moto
listens on loopback; nothing listens or is added there. Because the process
lives in a plane namespace, :func:`localvpc.plane.teardown` finds and stops it
by name, also after a crash. It is ready when the relay listens (opened last).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from localvpc import apirelay, cloudview, imds, netns, procs
from localvpc.errors import FAKE_CREDENTIALS, PlanePrerequisiteError
from localvpc.model import Plane

API_TIMEOUT = 15.0  # one EC2/IAM/STS call to moto
MOTO_THREADS = 8
WARM_UP_NICE = 10  # the warm-up thread's niceness: it takes only CPU the build leaves idle
ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages) this localvpc comes from
# The daemon imports only the modules it runs, from this checkout: a bare ``localvpc`` package
# stands in for localvpc/__init__.py, whose public API (the plane builder) it does not need.
BOOTSTRAP = (
    "import sys, types; pkg = types.ModuleType('localvpc'); pkg.__path__ = [sys.argv[1] + '/localvpc'];"
    " sys.modules['localvpc'] = pkg; from localvpc.services import main; main(sys.argv[2:])"
)

log = logging.getLogger("kafkanet.localvpc.services")


def resolver_address(vpc_cidr: str) -> str:
    """The VPC resolver's address: the base of the VPC's (primary) CIDR plus two."""
    return str(ipaddress.ip_network(vpc_cidr).network_address + 2)


def check_prerequisites() -> None:
    """PlanePrerequisiteError when what the daemon imports is missing (dnslib, boto3)."""
    import importlib.util

    missing = [m for m in ("dnslib", "boto3") if importlib.util.find_spec(m) is None]
    if missing:
        raise PlanePrerequisiteError(
            f"local data plane services: {', '.join(missing)} not installed: pip install 'kafkanet[local]'"
        )


def endpoint_name(region: str) -> str:
    return f"ec2.{region}.amazonaws.com"


def public_names(plane: Plane) -> dict[str, str]:
    """The public names the plane's resolver answers: the EC2 endpoint (the relay) and the web host's."""
    web = plane.internet.web_ip
    return {endpoint_name(plane.region): web, "checkip.amazonaws.com": web}


@dataclass(frozen=True)
class HostEntry:
    name: str
    netns: str
    instance_id: str


@dataclass(frozen=True)
class Config:
    env: str
    endpoint_url: str
    region: str
    vpc_id: str
    resolver_ip: str
    relay_ip: str
    endpoint_names: list[str]
    public_names: dict[str, str]
    cert: str
    key: str
    public_ip_map: dict[str, str]
    plane_json: str  # the build's plane.json: its public_ip_map wins once it is newer than the daemon
    hosts: list[HostEntry]
    credentials: list[str]  # access key id, secret: what the plane's build read moto with


@dataclass(frozen=True)
class Prepared:
    config_path: Path
    resolver_ip: str
    ca_cert: Path
    mounts: tuple[tuple[Path, Path], ...]  # (combined bundle, original) bound in every instance's mount namespace
    log: Path
    hosts: tuple[HostEntry, ...]


def client_credentials(client) -> tuple[str, str] | None:
    """The access key pair a boto3 client signs with (None: it has none, e.g. a replayed snapshot)."""
    try:
        frozen = client._get_credentials().get_frozen_credentials()
    except Exception:
        return None
    return (frozen.access_key, frozen.secret_key) if frozen.access_key else None


def prepare(
    env: str,
    plane: Plane,
    host_ns: dict[str, str],
    run: Path,
    state: Path,
    endpoint_url: str,
    credentials: tuple[str, str] | None = None,
) -> Prepared:
    """CA, combined bundles and the daemon's configuration (0600: it holds moto keys), under ``run/services``."""
    from localvpc import ca  # cryptography: the builder's, not the daemon's

    folder = run / "services"
    folder.mkdir(mode=0o700, exist_ok=True)
    names = [endpoint_name(plane.region)]
    files = ca.create(folder / "ca", env, names)
    mounts = tuple(ca.bundle_mounts(folder / "bundles", files.ca_cert))
    config = Config(
        env=env,
        endpoint_url=endpoint_url,
        region=plane.region,
        vpc_id=plane.vpc_id,
        resolver_ip=resolver_address(plane.vpc_cidrs[0]),
        relay_ip=plane.internet.web_ip,
        endpoint_names=names,
        public_names=public_names(plane),
        cert=str(files.server_cert),
        key=str(files.server_key),
        public_ip_map={p.moto_ip: p.emulated_ip for p in plane.public_addresses},
        plane_json=str(state / "plane.json"),
        hosts=[HostEntry(h.name, host_ns[h.name], h.instance_id) for h in plane.hosts],
        credentials=list(credentials or FAKE_CREDENTIALS),
    )
    path = folder / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(asdict(config), indent=2) + "\n")
    return Prepared(path, config.resolver_ip, files.ca_cert, mounts, run / "services.log", tuple(config.hosts))


def start(prepared: Prepared, ns: str) -> subprocess.Popen:
    """The daemon, in namespace ``ns`` (the relay's), holding the root network namespace open for its moto calls.

    First the two addresses go on every instance's loopback, before its own daemons start: until
    the services daemon listens, a lookup is refused at once (ICMP port unreachable) rather than
    routed into the VPC router, where it would wait out the resolver's timeout.
    """
    folder = prepared.config_path.parent
    batch = f"addr add {imds.ADDRESS}/32 dev lo\naddr add {prepared.resolver_ip}/32 dev lo\n"
    jobs = []
    for host in prepared.hosts:
        script = folder / f"{host.name}.addresses"
        script.write_text(batch)
        argv = ["ip", "-n", host.netns, "-batch", str(script)]
        jobs.append(procs.start_job(f"{host.name}: metadata and resolver addresses", argv, folder / f"{host.name}.log"))
    procs.finish_jobs(jobs, procs.STEP_TIMEOUT)
    root_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        argv = [sys.executable, "-I", "-c", BOOTSTRAP, str(ROOT), "--config", str(prepared.config_path),
                "--root-netns-fd", str(root_fd)]  # fmt: skip
        return procs.spawn(procs.in_netns(ns, argv), prepared.log, pass_fds=(root_fd,))
    finally:
        os.close(root_fd)


# --- the daemon --------------------------------------------------------------


def _load(path: Path) -> Config:
    raw = json.loads(path.read_text())
    raw["hosts"] = [HostEntry(**h) for h in raw["hosts"]]
    return Config(**raw)


class PublicMap:
    """moto address -> emulated address: the build's table, then plane.json's once a build or reconcile rewrote it."""

    def __init__(self, config: Config) -> None:
        self.started = time.time()
        self.base = dict(config.public_ip_map)
        self.path = Path(config.plane_json)
        self._seen: float | None = None
        self._table = self.base
        self._static = cloudview.static_public_map({})

    def __call__(self, ip: str) -> str | None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime is not None and mtime >= self.started and mtime != self._seen:
            try:
                table = json.loads(self.path.read_text()).get("public_ip_map") or {}
                self._table = {**self.base, **table}
                self._seen = mtime
            except (OSError, ValueError):
                pass
        return self._table.get(ip) or self._static(ip)


def _clients(config: Config):
    def make(service: str):
        import boto3
        from botocore.config import Config as BotoConfig

        key, secret = config.credentials
        session = boto3.session.Session(region_name=config.region, aws_access_key_id=key, aws_secret_access_key=secret)
        options = BotoConfig(connect_timeout=3, read_timeout=API_TIMEOUT, retries={"max_attempts": 2})
        return session.client(service, endpoint_url=config.endpoint_url, config=options)

    return make


def _serve(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name=f"serve-{server.server_address}", daemon=True)
    thread.start()
    return thread


def _open_host(host: HostEntry, config: Config, view: cloudview.CloudView, dns) -> None:
    """In ``host``'s namespace (this thread enters it): IMDS and DNS listening on the addresses :func:`start` added."""
    fd = os.open(netns.NETNS_DIR / host.netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns.enter_fd(fd, host.netns)
    finally:
        os.close(fd)
    _serve(imds.ImdsServer((imds.ADDRESS, 80), host.instance_id, view, config.region))
    from localvpc import resolver  # dnslib: only the daemon needs it

    for server in resolver.servers(dns, config.resolver_ip):
        server.start_thread()


def _warm_up(view: cloudview.CloudView) -> None:
    """Import boto3 and make the EC2 client (about half a second of CPU) before the first request needs it.

    At low priority (Linux nices one thread by its id): the instances' daemons and the build's
    topic creation, which run at the same time, go first. Making a client opens no connection,
    so this thread needs no namespace.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WARM_UP_NICE)
    except OSError:
        pass
    try:
        view.client("ec2")
    except Exception as exc:  # the first request will try again and report it
        log.warning("warming up the EC2 client: %s", exc)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from localvpc import resolver

    parser = argparse.ArgumentParser(description="kafkanet local data plane services (IMDSv2, resolver, EC2 relay)")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--root-netns-fd", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = _load(args.config)
    log.info("starting for %s (%d instances)", config.env, len(config.hosts))

    pool = ThreadPoolExecutor(MOTO_THREADS, "moto", initializer=netns.enter_fd, initargs=(args.root_netns_fd, "root"))

    def run(fn):
        return pool.submit(fn).result(timeout=API_TIMEOUT * 2)

    view = cloudview.CloudView(_clients(config), config.vpc_id, PublicMap(config), run)
    dns = resolver.VpcResolver(lambda: view.private_names(config.region), config.public_names)

    problems: list[str] = []

    def open_host(host: HostEntry) -> None:
        try:
            _open_host(host, config, view, dns)
        except Exception as exc:
            problems.append(f"{host.name}: {exc}")

    threads = [threading.Thread(target=open_host, args=(h,), name=f"open-{h.name}") for h in config.hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if problems:
        for problem in problems:
            log.error("local data plane services: %s", problem)
        sys.exit(1)
    context = apirelay.server_context(Path(config.cert), Path(config.key))
    forward = apirelay.moto_forwarder(config.endpoint_url)
    relay = apirelay.RelayServer(
        (config.relay_ip, apirelay.PORT), config.endpoint_names, context, lambda *a: run(lambda: forward(*a))
    )
    threading.Thread(target=_warm_up, args=(view,), name="warm-up", daemon=True).start()
    log.info("serving %d instances; relay %s:%d for %s", len(config.hosts), config.relay_ip, apirelay.PORT,
             ", ".join(config.endpoint_names))  # fmt: skip
    relay.serve_forever()
