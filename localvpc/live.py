"""The packets follow the API: a daemon that keeps a built plane in step with moto's state.

After :func:`localvpc.plane.build`, the EC2 API can still change the network:
routes are created, replaced or deleted, an Elastic IP moves, an instance
stops, starts or is terminated, a security group rule is revoked, source/dest
check is switched. This daemon (one per environment, ``python -m
localvpc.live --env E ...``, started by the build and stopped by
:func:`localvpc.plane.teardown`) reflects each of them in the plane:

* it reads what can change, four ``describe_*`` calls against the
  environment's own moto server (route tables, security groups, instances in
  every state, addresses), whenever moto's change counter moved (the moto
  shim counts the EC2 calls that are not Describe*/Get* and answers a long
  poll as soon as the count moves) and every 30 s anyway; against a moto
  without the counter, every ``INTERVAL`` (0.2 s). The rest (VPC, subnets, internet gateway, user
  data) is the build's snapshot;
* translates the result with the same pure :func:`localvpc.translation.translate`
  as the build, its public addresses and kernel table numbers pinned to what
  the plane already uses;
* diffs it against the model it last applied (:func:`plan`) and applies only
  what changed (:func:`apply`): the router's routes and ``ip rule`` per route
  table (``route replace``/``route del``, atomic per route), the router's
  nftables chains of the hosts whose security groups or source/dest check
  changed (each flushed and refilled in one nft transaction), the set of
  stopped instances' veths, the internet gateway's 1:1 NAT maps; and freezes
  (SIGSTOP) a stopped instance's processes, thaws them at start, kills them at
  termination.

Why a counter from the moto shim and then a full read, rather than events that
carry the change: a read compares the whole of what matters, so no event can
be missed, misread or arrive out of order, and the translation is the build's
own; the counter only says when to read (four describe calls take 100-250 ms
of moto's time on this machine, too much to repeat five times a second for
every idle environment, and even a tiny GET of the counter costs moto ~5 ms
of CPU, so the daemon long-polls it: an idle environment costs one request
every 5 s; bench/live_bench.py prints the costs). Without the
shim (any moto) the daemon falls back to the plain bounded poll.

A configurable propagation delay models EC2's eventual consistency: a change
first seen at ``t`` is applied at ``t + delay``, where delay comes from the
file ``<run>/live/delay`` (see :func:`localvpc.faults.set_delay`) or else
``--delay`` (default from ``KAFKANET_PLANE_DELAY``).

Instances launched after the build are not emulated (no namespace is made for
them): the daemon says so once in its log. The daemon exits by itself when the
plane's router namespace is gone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localvpc import netns, procs, render, snapshot, translation
from localvpc.errors import (
    FAKE_CREDENTIALS,
    PlaneError,
    PlaneUserError,
    is_loopback_url,
)
from localvpc.model import Plane, Route, RouteTable

log = logging.getLogger("kafkanet.localvpc.live")

MODULE = "localvpc.live"
# moto's shim (generator.localaws.moto_compat) counts the EC2 calls that may change state here
GENERATION_PATH = "/kafkanet/ec2-generation"
CHANGE_WAIT = 5.0  # the longest a long poll of that counter waits for a change
FULL_POLL = 30.0  # with the counter, read the state anyway this often (a change no call made)
# run as ``-c`` (not ``-m``: the package imports this module first); MODULE follows as a marker for find()
LAUNCH = "import sys; from localvpc.live import main; sys.exit(main(sys.argv[2:]))"
INTERVAL = 0.2  # seconds between two reads of moto's state when moto has no change counter
DELAY_ENV = "KAFKANET_PLANE_DELAY"
APPLY_TIMEOUT = 5.0
STOP_BUDGET = 1.0
RUNNING, STOPPED, TERMINATED = "running", "stopped", "terminated"


def live_dir(run: Path) -> Path:
    return run / "live"


# --- the model the daemon compares -------------------------------------------


@dataclass(frozen=True)
class Desired:
    """What the plane should be: the translated model and each built host's state."""

    plane: Plane
    states: Mapping[str, str]  # host name (as built) -> running | stopped | terminated

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Desired) and self.plane == other.plane and dict(self.states) == dict(other.states)

    def __hash__(self) -> int:  # pragma: no cover - not used as a key
        return hash(self.plane.vpc_id)


@dataclass
class Changes:
    """What to run to go from one :class:`Desired` to the next; empty when nothing changed."""

    router_ip: list[str] = field(default_factory=list)  # ip -batch lines in the router
    router_nft: list[str] = field(default_factory=list)  # nft -f lines in the router
    igw_nft: list[str] = field(default_factory=list)  # nft -f lines in the internet gateway
    # conntrack -D selectors ("-d ADDR": flows to a public address, "-s ADDR": flows from a private
    # one) whose 1:1 NAT changed: forgotten in the internet gateway, as EC2 keeps no flow across a move
    igw_forget: list[tuple[str, str]] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)  # hosts whose processes stop
    thaw: list[str] = field(default_factory=list)  # hosts whose processes continue
    kill: list[str] = field(default_factory=list)  # hosts whose processes end (terminated)

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))

    def summary(self) -> str:
        parts = [f"{len(self.router_ip)} route/rule change(s)" if self.router_ip else ""]
        parts.append("router nftables" if self.router_nft else "")
        parts.append("igw NAT maps" if self.igw_nft else "")
        parts.append(f"{len(self.igw_forget)} address(es)' flows forgotten" if self.igw_forget else "")
        parts += [f"{what} {', '.join(hosts)}" for what, hosts in
                  (("freeze", self.freeze), ("thaw", self.thaw), ("kill", self.kill)) if hosts]  # fmt: skip
        return "; ".join(p for p in parts if p)


def align(new: Plane, built: Plane) -> Plane:
    """``new`` with the built plane's host names, without hosts the build did not make.

    A Name tag may change and an instance may be launched after the build; the
    namespaces and veths are the build's, so hosts are matched by instance id,
    and a route to an instance that has no namespace drops (a blackhole).
    """
    names = {h.instance_id: h.name for h in built.hosts}
    hosts = tuple(dataclasses.replace(h, name=names[h.instance_id]) for h in new.hosts if h.instance_id in names)
    by_private = {h.private_ip: h.name for h in hosts}

    def route(r: Route) -> Route:
        if r.kind != "instance":
            return r
        if r.next_hop in by_private:
            return dataclasses.replace(r, via_host=by_private[r.next_hop])
        return Route(r.destination, "blackhole", r.target, reason="the target instance has no namespace in this plane")

    tables = tuple(RouteTable(t.id, t.name, t.table, t.main, tuple(route(r) for r in t.routes)) for t in new.route_tables)
    return dataclasses.replace(new, hosts=hosts, route_tables=tables, bastion=built.bastion, internet=built.internet)


def states_of(snap: Mapping[str, Any], built: Plane) -> dict[str, str]:
    """Each built host's state from the instances in ``snap`` (absent: terminated)."""
    seen = {i["InstanceId"]: (i.get("State") or {}).get("Name", RUNNING)
            for r in snap.get("reservations") or [] for i in r.get("Instances") or []}  # fmt: skip
    states = {}
    for host in built.hosts:
        state = seen.get(host.instance_id, "terminated")
        if state in ("pending", "running"):
            states[host.name] = RUNNING
        elif state in ("stopping", "stopped"):
            states[host.name] = STOPPED
        else:
            states[host.name] = TERMINATED
    return states


def plan(old: Desired, new: Desired, lay: render.Layout) -> Changes:
    """The commands that turn ``old`` into ``new`` in the plane laid out as ``lay``. Pure."""
    changes = Changes()
    # Routes, per (table, destination): replace what is new or different, delete what went.
    old_routes, new_routes = render.router_routes(old.plane, lay), render.router_routes(new.plane, lay)
    for key, spec in old_routes.items():
        if key not in new_routes:
            changes.router_ip.append(f"route del {key[1]} table {key[0]}")
    for key, spec in new_routes.items():
        if old_routes.get(key) != spec:
            changes.router_ip.append(f"route replace {spec}")
    # Which table each host's subnet uses. Every built host keeps exactly one rule at its own
    # priority (a stopped host's stays: the stopped set drops its packets), so del + add is safe.
    old_rules, new_rules = render.router_rules(old.plane, lay), render.router_rules(new.plane, lay)
    for rif, rule in new_rules.items():
        if old_rules.get(rif) != rule:
            changes.router_ip += [f"rule del pref {rule.rsplit(' ', 1)[1]}", f"rule add {rule}"]
    # Security groups and source/dest check: refill the chains whose rules changed.
    old_chains, new_chains = _chains(old.plane, lay), _chains(new.plane, lay)
    for name, rules in new_chains.items():
        if old_chains.get(name) != rules:
            changes.router_nft.append(f"flush chain ip kafkanet {name}")
            changes.router_nft += [f"add rule ip kafkanet {name} {r}" for r in rules if not r.startswith("#")]
    stopped_old = _stopped_ifs(old, lay)
    stopped_new = _stopped_ifs(new, lay)
    if stopped_old != stopped_new:
        changes.router_nft.append(f"flush set ip kafkanet {render.STOPPED_SET}")
        if stopped_new:
            names = ", ".join(f'"{n}"' for n in sorted(stopped_new))
            changes.router_nft.append(f"add element ip kafkanet {render.STOPPED_SET} {{ {names} }}")
    # The internet gateway's 1:1 NAT.
    old_maps, new_maps = render.igw_maps(old.plane), render.igw_maps(new.plane)
    for name, before, after in zip(("public_to_private", "private_to_public"), old_maps[:2], new_maps[:2]):
        if before != after:
            changes.igw_nft.append(f"flush map ip kafkanet {name}")
            if after:
                changes.igw_nft.append(f"add element ip kafkanet {name} {{ {', '.join(f'{k} : {v}' for k, v in after.items())} }}")
    # An established flow keeps the translation it began with (conntrack), so after an Elastic IP
    # moves a TCP session to it would go on reaching the old holder; on EC2 it reaches the new
    # one, which resets it. The flows of every changed address are forgotten.
    (old_in, old_out), (new_in, new_out) = old_maps[:2], new_maps[:2]
    changes.igw_forget += [("-d", a) for a in sorted(set(old_in) | set(new_in)) if old_in.get(a) != new_in.get(a)]
    changes.igw_forget += [("-s", a) for a in sorted(set(old_out) | set(new_out)) if old_out.get(a) != new_out.get(a)]
    if old_maps[2] != new_maps[2]:
        changes.igw_nft.append("flush set ip kafkanet with_public")
        if new_maps[2]:
            changes.igw_nft.append(f"add element ip kafkanet with_public {{ {', '.join(new_maps[2])} }}")
    # Processes.
    for name in lay.host_if:
        before, after = old.states.get(name, RUNNING), new.states.get(name, RUNNING)
        if before == after:
            continue
        if after == TERMINATED:
            changes.kill.append(name)
        elif after == STOPPED:
            changes.freeze.append(name)
        elif before == STOPPED:
            changes.thaw.append(name)
    return changes


def _chains(plane: Plane, lay: render.Layout) -> dict[str, tuple[str, ...]]:
    """Every built host's two chains; a host that does not run has ``drop`` only."""
    chains = {}
    present = render.router_host_chains(plane, lay)
    for name in lay.host_if:
        for direction in ("egress", "ingress"):
            key = f"{direction}_{render.chain_suffix(name)}"
            chains[key] = present.get(key, ("drop",))
    return chains


def _stopped_ifs(desired: Desired, lay: render.Layout) -> set[str]:
    running = {h.name for h in desired.plane.hosts}
    return {rif for name, (_, rif) in lay.host_if.items() if name not in running}


# --- applying ------------------------------------------------------------------


def apply(changes: Changes, lay: render.Layout) -> None:
    """Run ``changes`` in the plane (root). PlaneError naming the step that failed."""
    if changes.router_ip:
        procs.run_step(["ip", "-n", lay.router, "-batch", "-"], "live: router routes",
                       input="\n".join(changes.router_ip) + "\n", timeout=APPLY_TIMEOUT)  # fmt: skip
    if changes.router_nft:
        procs.run_step(["ip", "netns", "exec", lay.router, "nft", "-f", "-"], "live: router nftables",
                       input="\n".join(changes.router_nft) + "\n", timeout=APPLY_TIMEOUT)  # fmt: skip
    if changes.igw_nft:
        procs.run_step(["ip", "netns", "exec", lay.igw, "nft", "-f", "-"], "live: internet gateway NAT",
                       input="\n".join(changes.igw_nft) + "\n", timeout=APPLY_TIMEOUT)  # fmt: skip
    for selector, address in changes.igw_forget:
        # exit 1 ("0 flow entries have been deleted") when there was none: fine
        procs.run_step(["ip", "netns", "exec", lay.igw, "conntrack", "-D", selector, address],
                       f"live: internet gateway: forget the flows of {address}", timeout=APPLY_TIMEOUT, ok=(0, 1))  # fmt: skip
    for names, sig in ((changes.freeze, signal.SIGSTOP), (changes.thaw, signal.SIGCONT), (changes.kill, signal.SIGKILL)):
        for name in names:
            signal_host(lay.host_ns[name], sig)


def signal_host(ns: str, sig: int) -> list[int]:
    """Send ``sig`` to every process in namespace ``ns``; the pids signalled."""
    pids = sorted(netns.pids_in([ns]))
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if sig == signal.SIGKILL:
        procs.reap()
    return pids


# --- reading moto ---------------------------------------------------------------


# The daemon's keys for moto (those the plane was built with: moto's administrator when IAM is
# enforced), passed in its environment, never on its command line.
KEY_ENV, SECRET_ENV = "KAFKANET_LIVE_ACCESS_KEY_ID", "KAFKANET_LIVE_SECRET_ACCESS_KEY"


def ec2_client(endpoint_url: str, region: str, credentials: tuple[str, str] = FAKE_CREDENTIALS):
    """boto3 EC2 on the environment's moto server: loopback only, moto's keys, short timeouts."""
    if not is_loopback_url(endpoint_url):
        raise PlaneUserError(f"live plane: {endpoint_url} is not a local moto server; it only reads 127.0.0.1")
    import boto3
    from botocore.config import Config

    key, secret = credentials
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret).client(
        "ec2", region_name=region, endpoint_url=endpoint_url,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )  # fmt: skip


def poll(ec2, base: Mapping[str, Any]) -> dict:
    """``base`` (the build's snapshot) with what can change read again from moto: four calls."""
    vpc_id = base["vpcs"][0]["VpcId"]
    vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
    reservations = snapshot._pages(ec2, "describe_instances", "Reservations", Filters=vpc)
    instances = [i for r in reservations for i in r.get("Instances") or []]
    ids = [i["InstanceId"] for i in instances]
    addresses = ec2.describe_addresses().get("Addresses", [])
    old_attrs = base.get("instance_attributes") or {}
    fresh = {
        **base,
        "route_tables": snapshot._pages(ec2, "describe_route_tables", "RouteTables", Filters=vpc),
        "security_groups": snapshot._pages(ec2, "describe_security_groups", "SecurityGroups", Filters=vpc),
        "reservations": reservations,
        "addresses": [a for a in addresses if snapshot._address_belongs(a, ids, base.get("env", ""))],
        # the instance's own SourceDestCheck is right in moto (the ENI's is not); user data is the build's
        "instance_attributes": {
            i["InstanceId"]: {
                "userData": (old_attrs.get(i["InstanceId"]) or {}).get("userData"),
                "sourceDestCheck": i.get("SourceDestCheck", True),
            }
            for i in instances
        },
    }
    return snapshot._jsonable(fresh)


class Follower:
    """The daemon's state: what it applied, what it saw, and the delayed changes waiting."""

    def __init__(self, env: str, base: Mapping[str, Any], run: Path, delay: float = 0.0) -> None:
        self.env, self.base, self.run, self.default_delay = env, base, run, delay
        self.built = translation.translate(base)
        self.lay = render.layout(env, self.built)
        self.applied = Desired(self.built, {h.name: RUNNING for h in self.built.hosts})
        self.seen = self.applied
        self.pending: deque[tuple[float, Desired]] = deque()
        self.public_map = {p.moto_ip: p.emulated_ip for p in self.built.public_addresses}
        self.table_numbers = {t.id: t.table for t in self.built.route_tables}
        self.unknown: set[str] = set()
        self.last_snap: Mapping[str, Any] | None = None
        self.fresh = True  # moto may have changed since the last read
        self.read_ms = 0.0  # how long the last read of moto took
        self.applies = 0
        self.polls = 0
        self.error = ""

    def delay(self) -> float:
        try:
            return max(0.0, float((live_dir(self.run) / "delay").read_text().strip()))
        except (OSError, ValueError):
            return self.default_delay

    def desired(self, snap: Mapping[str, Any]) -> Desired:
        """The plane ``snap`` asks for. Instances the build did not make are left out (routes to
        them drop), as their user data and addresses were never checked."""
        known = {h.instance_id for h in self.built.hosts}
        reservations = []
        for r in snap.get("reservations") or []:
            instances = []
            for i in r.get("Instances") or []:
                if i["InstanceId"] in known:
                    instances.append(i)
                elif i["InstanceId"] not in self.unknown and (i.get("State") or {}).get("Name") != "terminated":
                    self.unknown.add(i["InstanceId"])
                    log.warning("%s was launched after the build: not emulated until the plane is rebuilt",
                                i["InstanceId"])  # fmt: skip
            reservations.append({**r, "Instances": instances})
        snap = {**snap, "reservations": reservations}
        new = translation.translate(snap, public_map=self.public_map, table_numbers=self.table_numbers,
                                    internet=self.built.internet)  # fmt: skip
        self.public_map.update({p.moto_ip: p.emulated_ip for p in new.public_addresses})
        self.table_numbers.update({t.id: t.table for t in new.route_tables})
        return Desired(align(new, self.built), states_of(snap, self.built))

    def step(self, snap: Mapping[str, Any] | None, now: float) -> Changes | None:
        """Take one poll's snapshot (None: no new read); apply what is due. The changes applied, if any."""
        if snap is not None:
            self.polls += 1
        started = time.monotonic()
        if snap is not None and snap != self.last_snap:
            desired = self.desired(snap)  # a PlaneUserError leaves last_snap: the next read tries again
            self.last_snap = snap
        else:
            desired = self.seen
        if desired != self.seen:
            self.seen = desired
            self.pending.append((now + self.delay(), desired))
        target = None
        while self.pending and self.pending[0][0] <= now:
            target = self.pending.popleft()[1]
        if target is None:
            return None
        translated = time.monotonic()
        changes = plan(self.applied, target, self.lay)
        if changes:
            try:
                apply(changes, self.lay)
            except PlaneError:
                self.pending.appendleft((now, target))  # tried again on the next step
                raise
            self.applies += 1
            log.info("applied: %s (read %.0f ms, translate %.0f ms, apply %.0f ms)", changes.summary(),
                     self.read_ms, 1000 * (translated - started), 1000 * (time.monotonic() - translated))  # fmt: skip
        self.applied = target
        return changes

    def write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "polls": self.polls,
            "applies": self.applies,
            "at": time.time(),
            "hosts": dict(self.applied.states),
            "pending": len(self.pending),
            "error": self.error,
        }
        folder = live_dir(self.run)
        tmp = folder / ".status.json.tmp"
        tmp.write_text(json.dumps(status, sort_keys=True) + "\n")
        os.replace(tmp, folder / "status.json")


def generation(endpoint_url: str, after: int | None = None, wait: float = 0.0) -> int | None:
    """moto's count of EC2 calls that may have changed state (None: this moto has no counter).

    With ``after``, the answer waits (at most ``wait`` seconds) until the count is not ``after``.
    """
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(endpoint_url)
    query = f"?after={after}&wait={wait:.3f}" if after is not None else ""
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=wait + 2.0)
    try:
        conn.request("GET", GENERATION_PATH + query)
        answer = conn.getresponse()
        if answer.status != 200:
            return None
        return int(answer.read().decode().strip())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def run_daemon(env: str, run: Path, endpoint_url: str, interval: float, delay: float) -> int:
    base = json.loads((live_dir(run) / "baseline.json").read_text())
    follower = Follower(env, base, run, delay)
    keys = (os.environ.get(KEY_ENV), os.environ.get(SECRET_ENV))
    ec2 = ec2_client(endpoint_url, base.get("region") or "ap-northeast-2", keys if all(keys) else FAKE_CREDENTIALS)
    router = netns.NETNS_DIR / follower.lay.router
    signal.signal(signal.SIGTERM, _exit)  # also ends a long poll at once
    follower.write_status()
    from botocore.exceptions import BotoCoreError, ClientError

    counter = generation(endpoint_url)  # None: no counter (or moto is gone): plain polling
    last_read = float("-inf")
    while True:
        started = time.monotonic()
        if not router.exists():
            log.info("the plane's router namespace is gone: exiting")
            return 0
        error, changes, snap = "", None, None
        try:
            if follower.fresh or started - last_read >= (interval if counter is None else FULL_POLL):
                follower.fresh, last_read = False, started
                snap = poll(ec2, base)
                follower.read_ms = 1000 * (time.monotonic() - started)
            if snap is not None or follower.pending:
                changes = follower.step(snap, time.monotonic())
        except (BotoCoreError, ClientError) as exc:
            error, follower.fresh = f"cannot read moto at {endpoint_url}: {exc}", True
        except PlaneError as exc:
            error = "; ".join(exc.problems)
        if error != follower.error:
            if error:
                log.warning("%s (keeps the last applied state, retries)", error)
            follower.error = error
            follower.write_status()
        elif changes or (snap is not None and follower.polls == 1):
            follower.write_status()
        # Then wait for what comes next: a change (long poll), a delayed change falling due, the next read.
        if counter is None or error:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
            if counter is None:
                counter = generation(endpoint_url)
            continue
        wait = FULL_POLL - (time.monotonic() - last_read)
        if follower.pending:
            wait = min(wait, follower.pending[0][0] - time.monotonic())
        now = generation(endpoint_url, after=counter, wait=max(0.0, min(CHANGE_WAIT, wait)))
        if now != counter:
            counter, follower.fresh = now, True


def _exit(*_: object) -> None:
    raise SystemExit(0)


# --- starting and stopping (used by localvpc.plane) ------------------------------


def start(
    env: str, run: Path, snap: Mapping[str, Any], endpoint_url: str, log_path: Path,
    credentials: tuple[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``env``'s daemon in the root namespace (it reads moto on 127.0.0.1 with ``credentials``,
    default moto's fake keys); does not wait for it."""
    if not is_loopback_url(endpoint_url):
        raise PlaneUserError(f"live plane: {endpoint_url} is not a local moto server; it only reads 127.0.0.1")
    folder = live_dir(run)
    folder.mkdir(mode=0o700, exist_ok=True)
    (folder / "baseline.json").write_text(json.dumps(snap, sort_keys=True))
    argv = [sys.executable, "-s", "-c", LAUNCH, MODULE, "--env", env, "--run-dir", str(run), "--endpoint", endpoint_url,
            "--label", f"{render.netns_prefix(env)}live"]  # fmt: skip
    environment = {**procs.safe_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                   "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                   "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    if os.environ.get(DELAY_ENV):
        environment[DELAY_ENV] = os.environ[DELAY_ENV]
    environment[KEY_ENV], environment[SECRET_ENV] = credentials or FAKE_CREDENTIALS
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=environment,
                                cwd=run, start_new_session=True, close_fds=True)  # fmt: skip
    with procs._children_lock:
        procs._children[proc.pid] = proc
    return proc


def find(env: str) -> list[int]:
    """Pids of ``env``'s daemon, found by its command line (works after a crash, needs no state)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MODULE.encode() in argv and _follows(argv, b"--env", env.encode()):
            found.append(int(entry))
    return found


def _follows(argv: list[bytes], flag: bytes, value: bytes) -> bool:
    return any(a == flag and b == value for a, b in zip(argv, argv[1:]))


def stop(env: str) -> int:
    """Stop ``env``'s daemon (SIGTERM, then SIGKILL after STOP_BUDGET); how many were running."""
    pids = find(env)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_BUDGET
    while time.monotonic() < deadline:
        procs.reap()
        if not find(env):
            return len(pids)
        time.sleep(0.01)
    for pid in find(env):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.05)
    procs.reap()
    return len(pids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--endpoint", required=True, help="the environment's moto server (loopback)")
    parser.add_argument("--label", help="kn_<env>_live: whose daemon this is, for process listings and leftover checks")
    parser.add_argument("--interval", type=float, default=INTERVAL, help="seconds between reads (default %(default)s)")
    parser.add_argument("--delay", type=float, default=None,
                        help=f"propagation delay in seconds (default ${DELAY_ENV} or 0)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s live %(levelname)s %(message)s", stream=sys.stdout)
    delay = args.delay
    if delay is None:
        try:
            delay = max(0.0, float(os.environ.get(DELAY_ENV) or 0))
        except ValueError:
            print(f"live plane: {DELAY_ENV}={os.environ[DELAY_ENV]!r} is not a number of seconds", file=sys.stderr)
            return 2
    render.check_env_name(args.env)
    return run_daemon(args.env, args.run_dir, args.endpoint, max(0.02, args.interval), delay)


if __name__ == "__main__":
    sys.exit(main())
