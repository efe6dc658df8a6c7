"""Build, inspect and tear down an environment's local data plane.

Layout, for environment ``E`` (every namespace is named ``kn_E_*``; ``E``
cannot contain ``_``, so the prefix is unambiguous)::

    kn_E_<host> ──veth── kn_E_router ──veth── kn_E_igw ──veth── kn_E_internet ──veth── kn_E_operator
    (one per instance)   subnet gateways      1:1 public          routes 198.51.100.0/24 ├─veth── kn_E_web
                         route tables         address NAT         to the IGW, nothing    └─veth── kn_E_outsider
                         security groups                          else (no default)

* ``router``: owns every subnet's gateway (.1) as a /32 on each instance's veth
  (proxy ARP), applies the subnet's route table with ``ip rule iif <veth> lookup
  <table>`` (``throw`` for the local route, ``blackhole`` where AWS drops), and
  enforces security groups and source/dest check in stateful nftables chains
  that no instance can touch.
* ``igw``: 1:1 NAT between private addresses and their emulated public ones
  (nftables maps); it forwards only for hosts that have a public address.
* ``internet``: the operator (inside the bastion's admin CIDR), a web host that
  answers HTTP with the caller's address (like checkip), and an outsider.

Instances run sshd (key from ``key_path``, per-instance host keys kept in
``state_dir``); those whose user data writes ``/etc/kafka/server.properties``
run the tansu broker (memory store) on the listener and advertised listener it
names (:mod:`localvpc.kafkaconf`), and once they listen, the topics a user data
lists in ``/etc/kafkanet/topics.json`` are created on each of them; one whose
user data installs ``/usr/local/sbin/kafkanet-nat-setup`` runs that script
inside its namespace and a throw-away mount namespace. Built with the moto
server's ``endpoint_url``, the plane also runs :mod:`localvpc.services` (one
daemon in the web namespace): IMDSv2 and the VPC resolver in every instance,
and the regional EC2 endpoint as an HTTPS relay in the emulated internet, its
CA trusted only in the instances' mount namespaces. Nothing is ever added to
the root namespace.

Runtime files live in ``/run/kn_E/``; :func:`teardown` finds everything by name
(namespaces, their processes, that directory), so it needs no state and works
after a crash.

This module is the orchestration (prerequisites, build order, readiness,
manifest, teardown, status). The namespaces' names and configuration text come
from :mod:`localvpc.render`, processes are run through :mod:`localvpc.procs`,
what each instance is given (sshd, keys, /etc, the NAT setup, tansu) from
:mod:`localvpc.instance`, and the entry points return :mod:`localvpc.results`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localvpc import (
    apirelay,
    instance,
    kafkaconf,
    live,
    model,
    netns,
    procs,
    render,
    services,
    snapshot,
    translation,
)
from localvpc.errors import PlaneInfraError, PlanePrerequisiteError
from localvpc.model import Plane
from localvpc.results import HostInfo, PlaneInfo, PlaneStatus, TeardownReport

log = logging.getLogger("kafkanet.localvpc")

RUN_ROOT = Path("/run")
SSH_USER = "root"
SETUP_TIMEOUT = 60.0  # the NAT's network-setup script
READY_BUDGET = 15.0  # daemons listening
TOPICS_BUDGET = 30.0  # creating the topics on every broker
STOP_BUDGET = 3.0  # SIGTERM before SIGKILL

# apt/pip package that provides each tool the plane runs.
TOOLS = {
    "ip": "apt-get install iproute2",
    "nft": "apt-get install nftables",
    "conntrack": "apt-get install conntrack (the live plane forgets a moved address's flows)",
    "sshd": "apt-get install openssh-server",
    "nc": "apt-get install netcat-openbsd (the ssh ProxyCommand uses it)",
    "unshare": "apt-get install util-linux",
    "mount": "apt-get install mount",
    "bash": "apt-get install bash",
}


def runtime_dir(env: str) -> Path:
    return RUN_ROOT / f"kn_{env}"


def check_prerequisites(need_tansu: bool = True) -> None:
    """PlanePrerequisiteError with one line per missing piece (root, tools, tansu)."""
    problems = []
    if os.geteuid() != 0:
        problems.append(
            "local data plane: needs root (network namespaces, veths, nftables); run it as root, e.g. with sudo"
        )
    for tool, install in TOOLS.items():
        if not shutil.which(tool, path=procs.SAFE_PATH):
            problems.append(f"local data plane: {tool} not found: {install}")
    if need_tansu:
        try:
            instance.tansu_binary()
        except PlanePrerequisiteError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PlanePrerequisiteError(*problems)


WEB_HOST = Path(__file__).with_name("webhost.py")
TOPICS_CLIENT = Path(__file__).with_name("kafkatopics.py")


@dataclass
class _Daemon:
    ns: str
    what: str
    port: int
    proc: subprocess.Popen
    log: Path


@dataclass
class _Manifest:
    env: str
    namespaces: list[str]
    daemons: list[dict] = field(default_factory=list)
    live: dict | None = None  # the daemon that makes the packets follow the API (localvpc.live)
    links: dict = field(default_factory=dict)  # what localvpc.faults cuts and restores


@dataclass(frozen=True)
class _LiveSource:
    """What the live daemon starts from: the build's snapshot and the moto server it came from."""

    snapshot: dict
    endpoint_url: str
    credentials: tuple[str, str] | None = None  # the build client's keys: the services daemon reads moto with them


# --- public entry points -----------------------------------------------------


def build(
    env_name: str, ec2_client, key_path: Path | str, state_dir: Path | str, *, endpoint_url: str | None = None
) -> PlaneInfo:
    """Build ``env_name``'s plane from what ``ec2_client`` (a local moto server) holds.

    With ``endpoint_url`` (that moto server's URL, loopback only) the plane then
    follows the API: a daemon (:mod:`localvpc.live`) applies later route, Elastic
    IP, instance state, security group and source/dest check changes; and the
    instances get their services (IMDSv2, the VPC resolver, the EC2 API through
    the emulated internet; :mod:`localvpc.services`), answered from moto's
    current state with the credentials ``ec2_client`` uses.

    Replaces a plane of the same name that is already running. On any failure,
    including Ctrl-C, everything started so far is torn down before the error
    propagates.
    """
    render.check_env_name(env_name)
    check_prerequisites()
    snap = snapshot.collect(ec2_client, env_name)
    plane = translation.translate(snap)
    source = _LiveSource(snap, endpoint_url, services.client_credentials(ec2_client)) if endpoint_url else None
    return _build_checked(env_name, plane, key_path, state_dir, source)


def build_plane(env_name: str, plane: Plane, key_path: Path | str, state_dir: Path | str) -> PlaneInfo:
    """Build from an already translated :class:`~localvpc.model.Plane` (see :func:`localvpc.translation.translate`)."""
    return _build_checked(env_name, plane, key_path, state_dir, None)


def _build_checked(
    env_name: str, plane: Plane, key_path: Path | str, state_dir: Path | str, source: _LiveSource | None
) -> PlaneInfo:
    render.check_env_name(env_name)
    check_prerequisites(need_tansu=any(h.kafka for h in plane.hosts))
    if source is not None:
        services.check_prerequisites()
    # absolute: sshd and the NAT script run in other mount namespaces and working directories
    public_key = instance.public_key(Path(key_path).resolve())
    state = Path(state_dir).resolve()
    started = time.monotonic()
    teardown(env_name)
    try:
        info = _build(env_name, plane, public_key, state, source)
    except BaseException:
        teardown(env_name)
        raise
    info = dataclasses.replace(info, build_seconds=round(time.monotonic() - started, 3))
    state.mkdir(parents=True, exist_ok=True)
    (state / "plane.json").write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True) + "\n")
    return info


def _build(env: str, plane: Plane, public_key: str, state: Path, source: _LiveSource | None = None) -> PlaneInfo:
    for note in plane.notes:
        log.warning("local data plane %s: %s", env, note)
    lay = render.layout(env, plane)
    run = runtime_dir(env)
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    manifest = _Manifest(env=env, namespaces=lay.namespaces)
    _write_manifest(run, manifest)

    # 1. namespaces and veths (created directly inside them), one ip process.
    links = "\n".join(render.render_links(plane, lay)) + "\n"
    procs.run_step(["ip", "-batch", "-"], "creating namespaces and links", input=links)
    # 2. every namespace configures itself, all at once (scripts kept for debugging).
    config_dir = run / "netns"
    config_dir.mkdir(mode=0o700, exist_ok=True)
    jobs = []
    for ns, cfg in render.ns_configs(plane, lay).items():
        script = config_dir / f"{ns}.sh"
        script.write_text(cfg.script())
        jobs.append(
            procs.start_job(
                f"configuring {ns}", ["ip", "netns", "exec", ns, "/bin/sh", str(script)], config_dir / f"{ns}.log"
            )
        )
    procs.finish_jobs(jobs, procs.STEP_TIMEOUT)

    # 3. the NAT's own network setup from its user data, while the daemons start.
    setups = []
    for host in plane.hosts:
        if host.setup_script:
            folder = run / host.name
            folder.mkdir(mode=0o700, exist_ok=True)
            script = folder / "kafkanet-nat-setup"
            script.write_text(host.setup_script)
            script.chmod(0o700)
            argv = instance.setup_argv(lay.host_ns[host.name], script, host)
            setups.append(
                procs.start_job(
                    f"{host.name}: {model.NAT_SETUP_PATH} (from its user data)", argv, folder / "cloud-init-output.log"
                )
            )
    # --- services (IMDSv2, VPC resolver, EC2 API relay; localvpc.services): CA and config first, so that
    # every instance's /etc names the resolver and trusts the CA; the daemon (in the web namespace, where
    # teardown finds it) starts now, before the instances' own daemons ---
    svc = services.prepare(env, plane, lay.host_ns, run, state, source.endpoint_url, source.credentials) if source else None
    svc_proc = services.start(svc, lay.web) if svc else None
    # --- end of services ---
    # 4. daemons.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    tansu = instance.tansu_binary() if any(h.kafka for h in plane.hosts) else ""
    daemons: list[_Daemon] = []
    host_keys: dict[str, str] = {}
    etc_dirs: dict[str, Path] = {}
    for host in plane.hosts:
        ns = lay.host_ns[host.name]
        folder = run / host.name
        folder.mkdir(mode=0o700, exist_ok=True)
        key_file, host_keys[host.name] = instance.host_key(state, host.instance_id)
        authorized = folder / "authorized_keys"
        authorized.write_text(public_key + "\n")
        config = folder / "sshd_config"
        config.write_text(instance.sshd_config(host, key_file, authorized))
        log_file = folder / "sshd.log"
        etc = instance.write_etc(folder, host, plane.region, svc.resolver_ip if svc else None, svc.mounts if svc else ())
        etc_dirs[host.name] = etc
        sshd = ["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(log_file)]
        argv = procs.in_netns(ns, sshd, instance.hostname(host), etc)
        daemons.append(_Daemon(ns, "sshd", 22, procs.spawn(argv, folder / "sshd.out"), log_file))
        if host.kafka:
            tansu_argv = kafkaconf.tansu_argv(tansu, host.kafka, f"kafkanet-{env}")
            argv = procs.in_netns(ns, tansu_argv, instance.hostname(host), etc)
            daemons.append(
                _Daemon(ns, "tansu", host.kafka.port, procs.spawn(argv, folder / "tansu.log"), folder / "tansu.log")
            )
    web_log = run / "web.log"
    web_argv = procs.in_netns(lay.web, [sys.executable, "-I", "-S", str(WEB_HOST), plane.internet.web_ip, "80"])
    daemons.append(_Daemon(lay.web, "web", 80, procs.spawn(web_argv, web_log), web_log))
    if svc and svc_proc:  # services: ready when its relay listens (opened last)
        daemons.append(_Daemon(lay.web, "services", apirelay.PORT, svc_proc, svc.log))
    # argv and log: localvpc.faults.revive restarts a daemon it killed
    manifest.daemons = [{"netns": d.ns, "what": d.what, "pid": d.proc.pid, "port": d.port,
                         "argv": [str(a) for a in d.proc.args], "log": str(d.log)} for d in daemons]  # fmt: skip
    _write_manifest(run, manifest)

    # --- live: the packets follow the API (localvpc.live), and what localvpc.faults needs ---
    # Started here, before the waits below, so that it comes up while they run.
    manifest.links = _fault_links(plane, lay)
    if source is not None:
        proc = live.start(env, run, source.snapshot, source.endpoint_url, run / "live.log", source.credentials)
        manifest.live = {"pid": proc.pid, "what": "live", "endpoint": source.endpoint_url}
    _write_manifest(run, manifest)
    # --- end of live ---

    # As on EC2, a failed setup unit leaves the instance running: the build goes on, the
    # failure is a note (and its log), and the suite's checks find what it did not do.
    problems = [f"{p}; the instance runs without it, as on AWS" for p in procs.collect_jobs(setups, SETUP_TIMEOUT)]
    _wait_ready([d for d in daemons if d.what != "services"])
    problems += _create_topics(plane, lay, run)
    _wait_ready([d for d in daemons if d.what == "services"])  # it came up while the topics were created
    # 5. a NAT pair's monitors (the user data's kafkanet-nat-monitor.service), once IMDS and the relay answer.
    monitors = _start_monitors(plane, lay, run, etc_dirs) if svc else []
    if monitors:
        manifest.daemons += monitors
        _write_manifest(run, manifest)
    elif any(h.monitor_script for h in plane.hosts):
        problems.append(f"NAT pair: {model.NAT_MONITOR_PATH} is not run (no IMDS and EC2 API in this plane)")
    for problem in problems:
        log.warning("local data plane %s: %s", env, problem)

    bastion = plane.host(plane.bastion) if plane.bastion else None
    hosts = {
        h.name: HostInfo(
            name=h.name,
            instance_id=h.instance_id,
            role=h.role,
            netns=lay.host_ns[h.name],
            hostname=instance.hostname(h),
            private_ip=h.private_ip,
            public_ip=h.public_ip,
            moto_public_ip=h.moto_public_ip,
            kafka_port=h.kafka_port,
            host_key=host_keys[h.name],
        )
        for h in plane.hosts
    }
    return PlaneInfo(
        env=env,
        ssh_user=SSH_USER,
        proxy_command=f"ip netns exec {lay.operator} nc %h %p",
        operator_netns=lay.operator,
        operator_ip=plane.internet.operator_ip,
        outsider_netns=lay.outsider,
        outsider_ip=plane.internet.outsider_ip,
        web_netns=lay.web,
        web_ip=plane.internet.web_ip,
        probe_url=f"http://{plane.internet.web_ip}/",
        bastion=plane.bastion,
        bastion_public_ip=bastion.public_ip if bastion else None,
        hosts=hosts,
        public_ip_map={p.moto_ip: p.emulated_ip for p in plane.public_addresses if p.kind != "auto"},
        notes=plane.notes + tuple(problems),
    )


def _fault_links(plane: Plane, lay: render.Layout) -> dict:
    """Each link localvpc.faults can cut: the side it takes down, and the routes to put back on that side.

    The side cut is the one whose routes never change after the build (the
    instance's, the internet gateway's, the internet's), so restoring is replaying them.
    """
    configs = render.ns_configs(plane, lay)

    def side(ns: str, ifname: str) -> dict:
        routes = [line.replace("route add ", "route replace ", 1) for line in configs[ns].ip_batch
                  if line.startswith("route add ") and f" dev {ifname}" in line]  # fmt: skip
        return {"netns": ns, "ifname": ifname, "routes": routes}

    links = {name: side(lay.host_ns[name], lay.host_if[name][0]) for name in lay.host_ns}
    if plane.igw_id:
        links["igw"] = side(lay.igw, lay.router_igw[1])
    links["internet"] = side(lay.internet, lay.igw_inet[1])
    return links


def _start_monitors(plane: Plane, lay: render.Layout, run: Path, etc_dirs: dict[str, Path]) -> list[dict]:
    """Start each NAT's monitor as its systemd unit would: the user data's script, long-running, in the instance.

    In the instance's network, UTS and mount namespaces (its /etc: the VPC
    resolver, the CA that the relay's certificate chains to), with no AWS
    variables: boto3 takes its credentials from IMDS and the default regional
    endpoint name, which the resolver answers with the relay. Teardown finds it
    in the NAT's namespace like every other process there.
    """
    started = []
    for host in plane.hosts:
        if not host.monitor_script:
            continue
        folder = run / host.name
        script = folder / "kafkanet-nat-monitor"
        script.write_text(host.monitor_script)
        script.chmod(0o700)
        ns = lay.host_ns[host.name]
        argv = procs.in_netns(ns, [str(script)], instance.hostname(host), etc_dirs[host.name])
        log_file = folder / "nat-monitor.log"
        proc = procs.spawn(argv, log_file)
        started.append({"netns": ns, "what": "nat-monitor", "pid": proc.pid, "port": None,
                        "argv": [str(a) for a in proc.args], "log": str(log_file)})  # fmt: skip
    return started


def _create_topics(plane: Plane, lay: render.Layout, run: Path) -> list[str]:
    """Create the user data's topics on every broker (each tansu has its own store); what failed, as notes.

    From inside each broker's own namespace, at its private address, as broker
    1's boot does on AWS. A failure does not stop the build: on AWS the apply
    succeeds too and the Kafka checks are what fail.
    """
    if not plane.topics:
        return []
    wanted = json.dumps([asdict(t) for t in plane.topics])
    jobs = []
    for host in plane.hosts:
        if host.kafka:
            folder = run / host.name
            client = [sys.executable, "-I", str(TOPICS_CLIENT), f"{host.private_ip}:{host.kafka.port}", wanted]
            argv = procs.in_netns(lay.host_ns[host.name], client, instance.hostname(host), folder / "etc")
            what = f"{host.name}: creating the topics of {kafkaconf.TOPICS_PATH}"
            jobs.append(procs.start_job(what, argv, folder / "topics.log"))
    return [
        f"{problem}; its Kafka checks will fail, as they would on AWS"
        for problem in procs.collect_jobs(jobs, TOPICS_BUDGET)
    ]


def _write_manifest(run: Path, manifest: _Manifest) -> None:
    tmp = run / ".manifest.json.tmp"
    tmp.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    os.replace(tmp, run / "manifest.json")


def _wait_ready(daemons: list[_Daemon]) -> None:
    deadline = time.monotonic() + READY_BUDGET
    pending = list(daemons)
    while pending:
        for d in list(pending):
            if d.proc.poll() is not None:
                tail = " | ".join(procs.log_tail(d.log, 4))
                raise PlaneInfraError(f"local data plane: {d.what} in {d.ns} exited (code {d.proc.returncode}): {tail}")
            if netns.listening(d.proc.pid, d.port):
                pending.remove(d)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise PlaneInfraError(
                *(
                    f"local data plane: {d.what} in {d.ns} not listening on {d.port} after {READY_BUDGET:.0f} s"
                    for d in pending
                )
            )
        time.sleep(0.01)


def teardown(env_name: str) -> TeardownReport:
    """Remove every namespace, process and runtime file of ``env_name``'s plane; idempotent."""
    render.check_env_name(env_name)
    if os.geteuid() != 0:
        raise PlanePrerequisiteError(
            "local data plane: teardown needs root (network namespaces); run it as root, e.g. with sudo"
        )
    started = time.monotonic()
    live.stop(env_name)  # by its command line: needs no state, works after a crash
    names = netns.list_netns(render.netns_prefix(env_name))
    stopped = _stop(names)
    if names:
        # ip deletes what it can and reports the rest; check that all are gone.
        subprocess.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
                       capture_output=True, text=True, env=procs.safe_env(), timeout=procs.STEP_TIMEOUT)  # fmt: skip
    left = netns.list_netns(render.netns_prefix(env_name))
    _remove_stray_links(env_name)
    shutil.rmtree(runtime_dir(env_name), ignore_errors=True)
    procs.reap()
    if left:
        raise PlaneInfraError(*(f"local data plane: namespace {n} could not be deleted" for n in left))
    return TeardownReport(env_name, tuple(names), stopped, round(time.monotonic() - started, 3))


def _stop(names: list[str]) -> int:
    """Stop every process in the namespaces ``names``: SIGTERM, then SIGKILL after STOP_BUDGET.

    The namespaces are re-scanned before each signal and while waiting, so a
    process forked meanwhile is caught and a recycled pid is never signalled.
    Returns how many processes were signalled.
    """
    signalled: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = netns.pids_in(names)
        if not pids:
            return len(signalled)
        for pid in pids:
            try:
                os.kill(pid, sig)
                if sig == signal.SIGTERM:
                    os.kill(pid, signal.SIGCONT)  # a stopped instance's frozen process must see it
            except ProcessLookupError:
                pass
        signalled |= set(pids)
        deadline = time.monotonic() + STOP_BUDGET
        while time.monotonic() < deadline:
            procs.reap()
            pids = netns.pids_in(names)
            if not pids:
                return len(signalled)
            for pid in pids.keys() - signalled:  # forked after the signal
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                signalled.add(pid)
            time.sleep(0.01)
    left = netns.pids_in(names)
    if left:
        raise PlaneInfraError(*(f"local data plane: process {pid} in {ns} survived SIGKILL" for pid, ns in left.items()))
    return len(signalled)


def _remove_stray_links(env: str) -> None:
    """Safety net: a veth of ours in the root namespace (only possible mid-crash of ip itself)."""
    prefix = render.link_prefix(env)
    try:
        names = os.listdir("/sys/class/net")
    except OSError:
        return
    for name in names:
        if re.fullmatch(rf"{prefix}[a-z][a-z0-9]{{0,3}}", name):
            subprocess.run(
                ["ip", "link", "del", name], capture_output=True, env=procs.safe_env(), timeout=procs.STEP_TIMEOUT
            )


def status(env_name: str) -> PlaneStatus:
    """What of ``env_name``'s plane is running, compared with what its build recorded."""
    render.check_env_name(env_name)
    names = netns.list_netns(render.netns_prefix(env_name))
    processes: dict[str, list[tuple[int, str]]] = {n: [] for n in names}
    for pid, ns in sorted(netns.pids_in(names).items()):
        comm = netns.process_name(pid)
        if comm:
            processes[ns].append((pid, comm))
    expected: tuple[str, ...] = ()
    missing: list[str] = []
    try:
        manifest = json.loads((runtime_dir(env_name) / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if manifest:
        expected = tuple(manifest.get("namespaces", []))
        for d in manifest.get("daemons", []):
            if d["pid"] not in {pid for pid, _ in processes.get(d["netns"], [])}:
                missing.append(f"{d['netns']}/{d['what']}")
        if manifest.get("live") and manifest["live"]["pid"] not in live.find(env_name):
            missing.append("live (the packets no longer follow the API)")
    return PlaneStatus(
        env=env_name,
        namespaces=tuple(names),
        processes={k: tuple(v) for k, v in processes.items()},
        expected_namespaces=expected,
        missing_daemons=tuple(missing),
    )
