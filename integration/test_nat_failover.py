"""A NAT pair fails over in seconds: a fault matrix on the active, the outage every broker sees, the same egress address.

Runs only when the inventory names a standby (``bastion.standby``); for a
single NAT the plugin leaves it out with a note. It runs after every other
check (it stops and breaks NATs), on one applied pair, back to back, one
check per fault in this order (each check depends on the ones before it
leaving one healthy owner, and fails naming what it found otherwise):

* ``internet``: the internet unreachable for both NATs for FAULT_HOLD s: no
  takeover (the routes and the Elastic IP never move while it lasts);
* ``partition``: the two NATs cannot reach each other for FAULT_HOLD s, both
  still reach the internet: exactly one owner all along, the brokers keep
  their egress;
* ``stop``: the active stopped through the EC2 API; started again afterwards,
  it must come back as the standby (the routes stay put);
* ``hang``: the active stops answering (nothing in, out or through it, its
  processes frozen), through the plane's helper on the local target; resumed
  after the takeover, it must come back as the standby;
* ``masquerade``: the active's masquerade table deleted over SSH (on the
  active, the bastion, with sudo where the user is not root); it puts the
  table back by itself REPAIR_AFTER s later (the suite cannot reach it once
  the address has moved: the NATs admit SSH from the admins only);
* ``forwarding``: the active's ``net.ipv4.ip_forward`` turned off over SSH,
  on again by itself REPAIR_AFTER s later;
* after each takeover the old active returns (started, resumed or repaired)
  and must be the standby: the routes and the address stay put;
* then ``steady``: after the last recovery, STEADY s without a route or
  address change (no flapping), with the last old active back as the standby.

How each fault is injected is the inventory's ``faults`` declaration (the EC2
API, a command over SSH, or a command the suite runs here: the local plane's
helpers); a fault the target cannot inject carries the reason, and its check
skips with it (hang and partition on AWS: they are marked local_only, the
only skips the session gate admits there).

Every takeover or no-takeover fault is started only once the standby's
30 s hold-down (the monitor's hysteresis, counted from its last role change)
has run out, so that a takeover, or its absence, is the monitor's decision
and not the hold-down's.

While each fault runs, every broker probes the internet (the inventory's
probe URL, which answers with the caller's address) every 100 ms from a
process started on the broker over SSH, writing one line per probe to a file
on the broker: the probes survive the SSH transport, which dies with the
active. A kafka-python producer sends one acks=all record every 100 ms
through the bastion (its own SSH session and SOCKS5 port, which reconnect to
the same address after a failover). After the takeover (seen in the EC2 API:
every private route table's 0.0.0.0/0 and the Elastic IP on the standby) the
suite reconnects through the same address, now answered by the standby with
its own pinned host key, and reads the files. A broker's outage is the
longest gap between two answered probes from the fault on; the address the
probes saw afterwards must be the Elastic IP. The outage is split into
detection (the fault until the monitor's "taking over" log line), API (that
until the routes and the address show in the EC2 API, polled every 0.1 s)
and packets (that until the broker's first answered probe). Prints one
``nat failover: <cause> <seconds> s`` line per takeover fault (the worst
broker), and ``nat failover: internet no takeover ...``,
``nat failover: partition <seconds> s (one owner ...)`` and
``nat failover: steady ...`` lines.
"""

from __future__ import annotations

import calendar
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from generator.access.ssh import Bastion
from generator.base.errors import KafkanetError
from generator.environment.inventory import ec2_client
from integration import support
from integration.gate import GATE_KEY
from integration.support import fail

pytestmark = [pytest.mark.nat_pair, pytest.mark.host("nat-pair")]

PROBE_EVERY = 0.1  # seconds between a broker's probes
PROBE_TIMEOUT = 1.0  # one probe's HTTP timeout
OUTAGE_BUDGET = 60.0  # no takeover within this: the fault is not handled
HOLD_DOWN = 30.0  # the monitor's hold-down after a role change (or its start): nat-monitor.py.j2's HOLD_DOWN
MARGIN = 2.0  # on top of a hold-down: the monitor's tick and its demotion lag behind the API
BASELINE = 2.0  # answered probes and acknowledged records before a fault
SETTLE = 3.0  # after the takeover: probes keep running this long before they are read
FAULT_HOLD = 10.0  # a no-takeover fault lasts this long: far past any takeover at propagation delay 0 (~2-7 s)
STEADY = 60.0  # after the last recovery: no route or address change this long
REPAIR_AFTER = 20  # seconds: a fault made over SSH undoes itself, on the old active, after this
NAT_TABLE = "kafkanet_nat"  # kafkanet-nat-setup's nftables table
TAKEOVER_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z kafkanet-nat-monitor: taking over from", re.M)
IMPORTED = time.time()  # at collection: the monitors (started at apply) are at least this old
TAKEOVERS = ("stop", "hang", "masquerade", "forwarding")
# The no-takeover faults first: the monitors have run for longer than their hold-down when the matrix starts, so
# they need no wait; every takeover then costs one hold-down before the next fault.
ORDER = ("internet", "partition", *TAKEOVERS)
LOCAL_ONLY = {"hang", "partition"}  # the plane's helpers; skipped on AWS with the inventory's reason

# One broker's probe loop: a thread per probe, so that a probe hanging on a dead path does not stop the clock.
PROBER = r"""
import sys, threading, time, urllib.request
url, out, until, every, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lock = threading.Lock()
log = open(out, "a", buffering=1)
def probe(started):
    try:
        body = urllib.request.urlopen(url, timeout=timeout).read().decode().strip()
        line = f"{started:.3f} ok {body}"
    except Exception as exc:
        line = f"{started:.3f} fail {type(exc).__name__}"
    with lock:
        log.write(line + "\n")
while time.time() < until:
    threading.Thread(target=probe, args=(time.time(),), daemon=True).start()
    time.sleep(every)
time.sleep(timeout + 0.5)
"""


def _sudo(inventory: dict[str, Any], command: str) -> str:
    return command if inventory["ssh"]["user"] == "root" else f"sudo -n /bin/sh -c {shlex.quote(command)}"


class Pair:
    """The applied pair as the EC2 API shows it, and a fresh SSH session per question (the old one dies)."""

    def __init__(self, inventory: dict[str, Any]) -> None:
        self.inventory = inventory
        self.ec2 = ec2_client(inventory)
        bastion = inventory["bastion"]
        self.nats = {bastion["instance_id"]: bastion["private_ip"],
                     bastion["standby"]["instance_id"]: bastion["standby"]["private_ip"]}  # fmt: skip
        self.tables = list(inventory["network"].get("private_route_table_ids") or [])
        if not self.tables:
            self.tables = [inventory["network"]["private_route_table_id"]]
        self.session: Bastion | None = None

    # -- the API's view

    def view(self) -> tuple[set[str], str | None]:
        """(the NATs the private routes point at, the NAT holding the Elastic IP)."""
        eni_owner = {}
        for r in self.ec2.describe_instances(InstanceIds=list(self.nats))["Reservations"]:
            for i in r["Instances"]:
                for eni in i.get("NetworkInterfaces", []):
                    eni_owner[eni["NetworkInterfaceId"]] = i["InstanceId"]
        owners = set()
        for t in self.ec2.describe_route_tables(RouteTableIds=self.tables)["RouteTables"]:
            for route in t["Routes"]:
                if route.get("DestinationCidrBlock") == "0.0.0.0/0":
                    owners.add(eni_owner.get(route.get("NetworkInterfaceId", ""), route.get("InstanceId")))
        eip = self.inventory["bastion"]["aws_public_ip"]
        holder = None
        for a in self.ec2.describe_addresses(PublicIps=[eip])["Addresses"]:
            holder = a.get("InstanceId") or eni_owner.get(a.get("NetworkInterfaceId", ""))
        return owners, holder

    def active(self) -> str:
        owners, holder = self.view()
        if len(owners) != 1 or holder not in owners:
            fail("nat-pair", "one active NAT (private routes and Elastic IP on one instance)",
                 f"routes to {sorted(map(str, owners))}, Elastic IP on {holder}")  # fmt: skip
        return holder

    def wait_owner(self, wanted: str, budget: float) -> float:
        """Seconds until the routes and the Elastic IP are all on ``wanted``; fails after ``budget``."""
        started = time.monotonic()
        seen = None
        while time.monotonic() - started < budget:
            seen = self.view()
            if seen == ({wanted}, wanted):
                return time.monotonic() - started
            time.sleep(0.1)
        fail("nat-pair", f"takeover by {wanted} within {budget:.0f} s",
             f"routes to {sorted(map(str, seen[0]))}, Elastic IP on {seen[1]}")  # fmt: skip
        raise AssertionError("unreachable")

    def hold_owner(self, owner: str, seconds: float, why: str) -> int:
        """The routes and the Elastic IP stay on ``owner`` for ``seconds`` (polled); fails at the first change.
        Returns the number of polls."""
        until = time.monotonic() + seconds
        polls = 0
        while time.monotonic() < until:
            owners, holder = self.view()
            polls += 1
            if (owners, holder) != ({owner}, owner):
                fail("nat-pair", f"one owner ({owner}) {why}",
                     f"routes to {sorted(map(str, owners))}, Elastic IP on {holder} after {polls} polls")  # fmt: skip
            time.sleep(0.2)
        return polls

    def wait_state(self, instance_id: str, state: str, budget: float = 120.0) -> None:
        started = time.monotonic()
        now = None
        while time.monotonic() - started < budget:
            now = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]
            if now["Name"] == state:
                return
            time.sleep(0.5)
        fail(instance_id, f"instance state {state} within {budget:.0f} s", now)

    # -- SSH

    def run(self, host: str | None, command: str, timeout: float = 20.0, attempts: int = 10) -> str:
        """stdout of ``command`` on ``host`` (a private IP, or None: the bastion), reconnecting as needed."""
        last = ""
        for _ in range(attempts):
            try:
                if self.session is None:
                    self.session = Bastion.from_inventory(self.inventory)
                    self.session.connect()
                target = self.session.address if host is None else host
                result = self.session.run(target, command, timeout=timeout)
                if result.ok:
                    return result.stdout
                last = f"exit {result.rc}: {(result.stderr or result.stdout).strip()[-300:]}"
                if not result.timed_out:
                    break
            except (KafkanetError, OSError, EOFError) as exc:
                last = "; ".join(getattr(exc, "problems", None) or [str(exc)])
                self.close()
                time.sleep(1.0)
        fail(host or "bastion", f"`{command[:80]}` over SSH", last)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


# --- the producer ------------------------------------------------------------------------------


# The producer's own process (niced). kafka-python 3.0.12 does not recover a connection whose SOCKS channel died
# with a failover: its network thread spins a core in a write wait and no request times out (seen on every
# failover here). So the suite restarts the process after RESTART_AFTER s without an acknowledgement, as an
# application's watchdog would; the gap it reports includes that wait, and each line says how many restarts.
# A restarted process that has not had its first acknowledgement yet gets twice the previous allowance (up to
# RESTART_CAP): on a loaded machine starting Python, importing kafka and logging in over SSH again can take
# longer than RESTART_AFTER, and a fixed allowance then restarts it forever (seen on CI: 39 restarts, no ack).
PRODUCER = r"""
import os, sys, time
from kafka import KafkaProducer
out, bootstrap, proxy, topic, every = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
parent = os.getppid()
log = open(out, "a", buffering=1)
producer = KafkaProducer(bootstrap_servers=bootstrap, proxy_url=proxy, acks="all", linger_ms=5, request_timeout_ms=5000,
                         max_block_ms=5000, delivery_timeout_ms=10000, reconnect_backoff_max_ms=500,
                         client_id="kafkanet-failover")
def acked(_meta):
    log.write(f"{time.time():.3f} ack\n")
def failed(exc):
    log.write(f"{time.time():.3f} error {type(exc).__name__}\n")
while os.getppid() == parent:
    started = time.monotonic()
    try:
        future = producer.send(topic, key=b"failover", value=f"{time.time():.3f}".encode())
        future.add_callback(acked)
        future.add_errback(failed)
    except Exception as exc:
        failed(exc)
    time.sleep(max(0.0, every - (time.monotonic() - started)))
"""
RESTART_AFTER = 3.0  # seconds without an acknowledgement: the producer process is started again
RESTART_CAP = 24.0  # the longest allowance a restarted process gets for its first acknowledgement


class Producer:
    """One acks=all record every 100 ms through the bastion, in a process of its own; when each was
    acknowledged or failed, read from the file it writes, and when it was restarted.

    Its SOCKS5 port rides an SSH session of its own (which reconnects to the
    same address after a failover), so the probes' and the suite's sessions do
    not carry it."""

    EVERY = 0.1

    def __init__(self, inventory: dict[str, Any], out: str) -> None:
        from integration import kafkacheck

        self.out = out
        self.restarts: list[float] = []
        self.bastion = Bastion.from_inventory(inventory)
        self.bastion.connect()
        port = int(inventory["kafka"]["port"])
        allowed = {(name, port) for b in inventory["brokers"] for name in support.broker_names(inventory, b)}
        self.socks = self.bastion.socks5(allowed=lambda host, p: (host, p) in allowed)
        topic = inventory["kafka"]["topics"][0]["name"]
        self.argv = ["nice", "-n", "10", sys.executable, "-c", PRODUCER, out, kafkacheck.bootstrap_of(inventory),
                     self.socks.url_remote_dns, topic, str(self.EVERY)]  # fmt: skip
        self.err = open(out + ".err", "w")  # noqa: SIM115 - closed with the producer
        self._stop = threading.Event()
        self.process = self._start()
        deadline = time.monotonic() + 30
        while not self._rows("ack") and time.monotonic() < deadline and self.process.poll() is None:
            time.sleep(0.2)
        if not self._rows("ack"):
            self.close()
            said = Path(out + ".err").read_text()[-300:] if Path(out + ".err").exists() else ""
            fail("kafka producer", "a first acks=all record acknowledged through the bastion within 30 s",
                 f"none; exit {self.process.returncode}; {said.strip()}")  # fmt: skip
        self.watchdog = threading.Thread(target=self._watch, name="failover-producer-watchdog", daemon=True)
        self.watchdog.start()

    def _start(self) -> subprocess.Popen:
        self.started = time.time()
        return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)

    def _end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def _watch(self) -> None:
        misses = 0  # restarts in a row without an acknowledgement since
        while not self._stop.wait(0.5):
            acks = self._rows("ack")
            if acks and acks[-1] >= self.started:
                misses = 0
            last = max(acks[-1] if acks else 0.0, self.started)
            if time.time() - last > min(RESTART_AFTER * 2**misses, RESTART_CAP):
                misses += 1
                self._end()
                if self._stop.is_set():
                    return
                self._drop_session()
                self.restarts.append(time.time())
                self.process = self._start()

    def _drop_session(self) -> None:
        """Give up the SSH session, as ssh's ServerAliveCountMax would: the SOCKS port's next channel opens
        on a fresh one. A session to a stopped or hung old active goes silent rather than reset here (the
        plane's internet gateway keeps the old flow's connection tracking entry on the old NAT; on AWS the
        new NAT would reset it), and paramiko's keepalives never declare it dead."""
        try:
            transport = self.bastion.client.get_transport()
        except KafkanetError:
            return
        if transport is not None:
            transport.close()

    def _rows(self, kind: str) -> list[float]:
        try:
            text = Path(self.out).read_text()
        except OSError:
            return []
        return [float(p[0]) for p in (line.split() for line in text.splitlines()) if len(p) >= 2 and p[1] == kind]

    def around(self, fault_at: float, until: float) -> tuple[float | None, int, int]:
        """(the longest gap between two acknowledgements from the last one before ``fault_at`` until ``until``,
        the errors and the restarts between ``fault_at`` and ``until``), wall clock. The longest gap, not the
        one right at the fault: the producer's path (SSH to the bastion) breaks when the address moves, which
        is after a masquerade or forwarding fault."""
        acks, errors = self._rows("ack"), self._rows("error")
        before = [t for t in acks if t < fault_at]
        after = [t for t in acks if fault_at <= t <= until]
        count = sum(1 for t in errors if fault_at <= t <= until)
        restarts = sum(1 for t in self.restarts if fault_at <= t <= until)
        if not before or not after:
            return None, count, restarts
        times = [before[-1], *after]
        return max(b - a for a, b in zip(times, times[1:])), count, restarts

    def stderr_tail(self, chars: int = 400) -> str:
        """The end of what the producer processes wrote to stderr (one file for all of them), on one line."""
        try:
            text = Path(self.out + ".err").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-chars:].splitlines() if line.strip())

    def wait_ack_after(self, moment: float, budget: float) -> bool:
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            acks = self._rows("ack")
            if acks and acks[-1] >= moment:
                return True
            time.sleep(0.3)
        return False

    def close(self) -> None:
        self._stop.set()
        if getattr(self, "watchdog", None) is not None:
            self.watchdog.join(timeout=5)
        self._end()
        self.err.close()
        self.socks.close()
        self.bastion.close()
        for path in (self.out, self.out + ".err"):
            Path(path).unlink(missing_ok=True)


# --- the matrix's shared state ------------------------------------------------------------------


@dataclass
class Matrix:
    pair: Pair
    producer: Producer | None
    ready_at: float = field(default_factory=lambda: IMPORTED + HOLD_DOWN + MARGIN)  # wall clock: the next fault may start
    recovered_at: float | None = None  # wall clock: the last fault undone
    last_old_active: str | None = None
    lines: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def matrix(inventory):
    pair = Pair(inventory)
    producer = None
    folder = Path(tempfile.mkdtemp(prefix="kafkanet-failover-"))
    try:
        producer = Producer(inventory, str(folder / "producer.log"))
        yield Matrix(pair, producer)
    finally:
        if producer is not None:
            producer.close()
        shutil.rmtree(folder, ignore_errors=True)
        pair.close()


def _start_probers(pair: Pair, inventory: dict[str, Any], tag: str, seconds: float) -> dict[str, tuple[str, str]]:
    """Start every broker's probe loop; returns broker name -> (its log file on the broker, its pid)."""
    logs = {}
    env = inventory["environment"]
    until = time.time() + seconds
    for b in inventory["brokers"]:
        out = f"/tmp/kafkanet-failover-{env}-{b['name']}-{tag}.log"
        argv = ["python3", "-c", PROBER, inventory["probe_url"], out, f"{until:.0f}", str(PROBE_EVERY),
                str(PROBE_TIMEOUT)]  # fmt: skip
        command = f"rm -f {out}; setsid nohup {shlex.join(argv)} >/dev/null 2>&1 </dev/null & echo $!"
        pid = pair.run(b["private_ip"], command).strip()
        logs[b["name"]] = (out, pid)
    return logs


def _collect(pair: Pair, broker: dict[str, Any], log: tuple[str, str]) -> str:
    """The broker's probe lines; its prober is stopped and its file removed."""
    out, pid = log
    text = pair.run(broker["private_ip"], f"cat {out}")
    pair.run(broker["private_ip"], f"kill {shlex.quote(pid)} 2>/dev/null; rm -f {out}")
    return text


def _samples(text: str) -> list[tuple[float, bool, str]]:
    rows = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) >= 2:
            rows.append((float(parts[0]), parts[1] == "ok", parts[2] if len(parts) > 2 else ""))
    return sorted(rows)


def _outage(rows: list[tuple[float, bool, str]], fault_at: float) -> tuple[float, float, str]:
    """(the longest gap between answered probes from the fault on, when it ended, the address the last answer saw)."""
    answered = [(t, body) for t, ok, body in rows if ok]
    before = [t for t, _ in answered if t < fault_at]
    after = [(t, body) for t, body in answered if t >= fault_at]
    if not before or not after:
        return float("inf"), 0.0, ""
    times = [before[-1]] + [t for t, _ in after]
    gap, ended = max((b - a, b) for a, b in zip(times, times[1:]))
    return round(max(0.0, gap - PROBE_EVERY), 2), ended, after[-1][1]


def _broker_figures(matrix: Matrix, inventory: dict[str, Any], logs, fault: str, fault_at: float):
    """Per broker: (outage, when it ended); fails when a broker's egress address afterwards is not the Elastic IP."""
    eip = inventory["bastion"]["public_ip"]
    figures = {}
    for b in inventory["brokers"]:
        rows = _samples(_collect(matrix.pair, b, logs[b["name"]]))
        outage, ended, seen = _outage(rows, fault_at)
        if outage == float("inf"):
            fail(b["name"], f"internet probes around the {fault} fault", f"{len(rows)} probes, "
                 f"{sum(ok for _, ok, _ in rows)} answered; none answered before and after the fault")  # fmt: skip
        if seen != eip:
            fail(b["name"], f"egress address after the {fault} fault", f"expected {eip} (the Elastic IP), saw {seen!r}")
        figures[b["name"]] = (outage, ended)
    return figures


def _producer_text(matrix: Matrix, fault: str, fault_at: float, recovered: float) -> tuple[str, str | None]:
    """(the producer's figures around a fault, why it failed or None); it fails when no record is acknowledged
    within OUTAGE_BUDGET after the pair ``recovered`` (the takeover seen in the API, or the fault undone): a
    second after it, so that the acknowledgement came through the path as it is now."""
    producer = matrix.producer
    if not producer.wait_ack_after(recovered + 1.0, OUTAGE_BUDGET):
        _, errors, restarts = producer.around(fault_at, time.time())
        said = producer.stderr_tail()
        return (f"producer: no acknowledgement after the fault, {errors} errors, {restarts} restarts",
                f"none within {OUTAGE_BUDGET:.0f} s ({errors} errors, {restarts} restarts since the fault)"
                + (f"; its stderr ends: {said}" if said else "; nothing on its stderr"))  # fmt: skip
    gap, errors, restarts = producer.around(fault_at, time.time())
    gap_text = "no acknowledgement before the fault" if gap is None else f"longest gap {gap:.1f} s"
    return f"producer: {gap_text}, {errors} errors, {restarts} restarts", None


def _monitor_log(matrix: Matrix, inventory: dict[str, Any], host_ip: str) -> str:
    """What the NAT at ``host_ip`` has logged, as the inventory says to read it ('' when it cannot be read)."""
    how = inventory.get("nat_monitor_log") or {}
    try:
        if how.get("by") == "command":
            argv = [a.replace("{host}", host_ip) for a in how["command"]]
            env = {**os.environ, "PYTHONPATH": how.get("pythonpath", "")}
            return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env, check=True).stdout
        if how.get("by") == "ssh":  # on the NAT that took over: the bastion now
            return matrix.pair.run(None, _sudo(inventory, how["command"]))
    except (subprocess.SubprocessError, OSError, AssertionError, pytest.fail.Exception):
        return ""
    return ""


def _decided_at(log: str, after: float) -> float | None:
    """When the monitor logged its first "taking over" after ``after`` (wall clock), or None."""
    for stamp, fraction in TAKEOVER_LINE.findall(log):
        at = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + float(fraction or 0)
        if at >= after - 0.5:
            return at
    return None


def _plane_command(inventory: dict[str, Any], spec: dict[str, Any], which: str, active: str, standby: str) -> None:
    """Run a fault's declared command (``inject`` or ``undo``) here, with the NATs' private addresses."""
    nats = {"{active}": inventory_ip(inventory, active), "{standby}": inventory_ip(inventory, standby)}
    argv = [nats.get(a, a) for a in spec[which]]
    env = {**os.environ, "PYTHONPATH": spec.get("pythonpath", "")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env, check=False)
    if done.returncode != 0:
        fail("nat-pair", f"the {which} command of a fault ({shlex.join(argv[-4:])})",
             f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}")  # fmt: skip


def inventory_ip(inventory: dict[str, Any], instance_id: str) -> str:
    bastion = inventory["bastion"]
    return bastion["private_ip"] if bastion["instance_id"] == instance_id else bastion["standby"]["private_ip"]


def _internet_routes(pair: Pair, inventory: dict[str, Any]) -> list[str]:
    """The route tables whose 0.0.0.0/0 goes to the internet gateway (AWS's internet fault deletes those routes)."""
    igw = inventory["network"]["internet_gateway_id"]
    answer = pair.ec2.describe_route_tables(Filters=[{"Name": "route.gateway-id", "Values": [igw]}])
    return sorted(t["RouteTableId"] for t in answer["RouteTables"])


def _inject(matrix: Matrix, inventory: dict[str, Any], fault: str, active: str, standby: str) -> Any:
    """Break the pair as the inventory declares; returns what undoing needs. A fault made over SSH is transient:
    the old active undoes it REPAIR_AFTER s later (only the active is the bastion, and the NATs' security group
    admits SSH from the admins only, so the suite cannot reach the old active once the address has moved)."""
    spec = inventory["faults"][fault]
    pair = matrix.pair
    if spec.get("by") == "command":
        _plane_command(inventory, spec, "inject", active, standby)
        return None
    if fault == "stop":
        pair.ec2.stop_instances(InstanceIds=[active])
        return None
    if fault == "internet":  # by the API, on AWS: the internet gateway's default routes deleted
        tables = _internet_routes(pair, inventory)
        for table in tables:
            pair.ec2.delete_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0")
        return tables
    saved = f"/tmp/kafkanet-failover-{inventory['environment']}-{active}.nft"
    if fault == "masquerade":
        breaking = f"nft list table ip {NAT_TABLE} > {saved} && nft delete table ip {NAT_TABLE}"
        repairing = f"sleep {REPAIR_AFTER}; nft -f {saved} && rm -f {saved}"
    else:
        breaking = "sysctl -q -w net.ipv4.ip_forward=0"
        repairing = f"sleep {REPAIR_AFTER}; sysctl -q -w net.ipv4.ip_forward=1"
    later = f"setsid /bin/sh -c {shlex.quote(repairing)} >/dev/null 2>&1 </dev/null &"
    pair.run(None, _sudo(inventory, f"{breaking} && {{ {later} }}"))
    return None


def _undo(matrix: Matrix, inventory: dict[str, Any], fault: str, active: str, standby: str, undo: Any) -> float:
    """The broken NAT is whole again; returns when (wall clock) its monitor can have seen it (for the hold-down)."""
    spec = inventory["faults"][fault]
    pair = matrix.pair
    if spec.get("by") == "command":
        _plane_command(inventory, spec, "undo", active, standby)
        return time.time()
    if fault == "stop":
        pair.ec2.start_instances(InstanceIds=[active])
        pair.wait_state(active, "running")
        return time.time() + 3.0  # its monitor starts with the instance's services, a moment after "running"
    if fault == "internet":
        igw = inventory["network"]["internet_gateway_id"]
        for table in undo:
            pair.ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
        return time.time()
    return time.time()  # masquerade, forwarding: undone by the old active itself at fault_at + REPAIR_AFTER


def _wait_ready(matrix: Matrix) -> None:
    time.sleep(max(0.0, matrix.ready_at - time.time()))


def _record(matrix: Matrix, pytestconfig, line: str) -> None:
    print(line)
    matrix.lines.append(line)
    record = pytestconfig.stash.get(GATE_KEY, None)
    if record is not None:
        record["notes"].append(line)


def _declared(inventory: dict[str, Any], fault: str) -> dict[str, Any]:
    spec = (inventory.get("faults") or {}).get(fault)
    if spec is None:
        fail("nat-pair", f"the inventory's faults declare {fault}",
             f"declared: {sorted(inventory.get('faults') or {})}; apply writes every fault of the matrix")  # fmt: skip
    if isinstance(spec, dict) and spec.get("skip"):
        pytest.skip(spec["skip"])
    return spec if isinstance(spec, dict) else {"about": spec}


def _params():
    for fault in ORDER:
        marks = [pytest.mark.local_only] if fault in LOCAL_ONLY else []
        yield pytest.param(fault, id=fault, marks=marks)


@pytest.mark.parametrize("fault", list(_params()))
def test_nat_pair_fault(fault, matrix, inventory, pytestconfig):
    _declared(inventory, fault)
    pair = matrix.pair
    active = pair.active()
    standby = next(i for i in pair.nats if i != active)
    _wait_ready(matrix)  # the standby's hold-down has run out, and the last fault is undone
    takeover = fault in TAKEOVERS
    logs = _start_probers(pair, inventory, fault, OUTAGE_BUDGET + HOLD_DOWN + 30)
    time.sleep(BASELINE)
    fault_at = time.time()
    undo = _inject(matrix, inventory, fault, active, standby)
    injected_at = time.time()  # the fault's effect lands at the end of its command (an API call, SSH, a helper)
    returned, measured, api_at = None, False, None
    try:
        if takeover:
            pair.wait_owner(standby, OUTAGE_BUDGET)
            api_at = time.time()  # wall clock, as the monitor's log and the probes (injecting took a moment too)
            pair.close()  # its transport rode the old active
            if fault in ("stop", "hang"):  # started or resumed at once: its hold-down, the next fault's wait, starts
                returned = _undo(matrix, inventory, fault, active, standby, undo)
        else:
            why = ("while the internet is unreachable for both (nobody may move)" if fault == "internet"
                   else "while the two NATs cannot reach each other (no takeover)")  # fmt: skip
            polls = pair.hold_owner(active, FAULT_HOLD, why)
            returned = _undo(matrix, inventory, fault, active, standby, undo)
            pair.hold_owner(active, 2.0, f"just after the {fault} fault was undone")
        time.sleep(SETTLE)
        figures = _broker_figures(matrix, inventory, logs, fault, fault_at)
        producer, producer_failed = _producer_text(matrix, fault, fault_at, api_at if takeover else returned)
        measured = True
    finally:
        if returned is None:  # a takeover fault, or a failure above: the broken NAT is made whole either way
            returned = _undo(matrix, inventory, fault, active, standby, undo)
        if fault in ("masquerade", "forwarding"):  # undone by the old active itself; demoted when the routes moved
            returned = (api_at + 1.0) if api_at is not None else time.time()
            matrix.ready_at = max(matrix.ready_at, fault_at + REPAIR_AFTER + MARGIN)
        if takeover or not measured:  # a role changed (or may have): the next fault waits out the hold-down
            matrix.ready_at = max(matrix.ready_at, returned + HOLD_DOWN + MARGIN)
        matrix.recovered_at = max(returned, time.time()) if takeover else returned
    worst = max(outage for outage, _ in figures.values())
    per_broker = ", ".join(f"{n} {s:.1f} s" for n, (s, _) in sorted(figures.items()))
    if takeover:
        decided = _decided_at(_monitor_log(matrix, inventory, inventory_ip(inventory, standby)), fault_at)
        packets = max(ended for _, ended in figures.values()) - api_at
        inject = f"injecting {injected_at - fault_at:.1f} s, "
        split = (f"{inject}detection {decided - injected_at:.1f} s, API {api_at - decided:.1f} s" if decided is not None
                 else f"{inject}detection + API {api_at - injected_at:.1f} s (no monitor log)")  # fmt: skip
        line = (f"nat failover: {fault} {worst:.1f} s (per broker: {per_broker}; {split}, packets {packets:+.1f} s;"
                f" {producer}; egress {inventory['bastion']['public_ip']} (the Elastic IP))")  # fmt: skip
    elif fault == "internet":
        line = (f"nat failover: internet no takeover ({FAULT_HOLD:.0f} s unreachable for both, {polls} API polls:"
                f" routes and Elastic IP stayed on {active}; brokers' longest gap {worst:.1f} s; {producer})")  # fmt: skip
    else:
        line = (f"nat failover: partition {worst:.1f} s (one owner {active} for {FAULT_HOLD:.0f} s, {polls} API"
                f" polls; per broker: {per_broker}; {producer})")  # fmt: skip
    _record(matrix, pytestconfig, line)
    if takeover and worst > OUTAGE_BUDGET:
        fail("nat-pair", f"outage after the {fault} fault", f"{worst:.1f} s, over the {OUTAGE_BUDGET:.0f} s budget")
    if not takeover:
        matrix.ready_at = max(matrix.ready_at, time.time())  # no role changed: the standby's hold-down stays run out
        _producer_verdict(fault, producer_failed)
        return
    if fault in ("masquerade", "forwarding"):  # undone by itself; wait for it before the old active is judged
        time.sleep(max(0.0, fault_at + REPAIR_AFTER + 1 - time.time()))
    # the old active returns as the standby: the routes and the address stay on the new active while it does
    pair.hold_owner(standby, 5.0, f"while the old active {active} returns after the {fault} fault")
    matrix.last_old_active = active
    matrix.recovered_at = time.time()
    _producer_verdict(fault, producer_failed)  # last: the roles above are what the next checks start from


def _producer_verdict(fault: str, failed: str | None) -> None:
    if failed:
        fail("kafka producer", f"an acks=all record acknowledged after the {fault} fault", failed)


def test_nat_pair_steady_after_the_last_recovery(matrix, inventory, pytestconfig):
    """No route or address change for STEADY s after the last fault was undone: no flapping, the old active
    stays the standby."""
    if matrix.recovered_at is None:
        pytest.fail("no fault of the matrix ran to its recovery: nothing to watch", pytrace=False)
    active = matrix.pair.active()
    started = time.time()
    polls = matrix.pair.hold_owner(active, STEADY, f"for {STEADY:.0f} s after the last recovery (no flapping)")
    standby = next(i for i in matrix.pair.nats if i != active)
    if matrix.last_old_active is not None and standby != matrix.last_old_active:
        fail(matrix.last_old_active, "the standby after the last takeover (the old active returned as the standby)",
             f"{standby} is the standby")  # fmt: skip
    _record(matrix, pytestconfig, f"nat failover: steady {time.time() - started:.0f} s without a route or address"
            f" change ({polls} API polls from {started - matrix.recovered_at:.1f} s after the last recovery;"
            f" {active} active, {standby} standby)")  # fmt: skip
