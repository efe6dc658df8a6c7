"""A NAT pair fails over in seconds: faults on the active, the outage every broker sees, the same egress address.

Runs only when the inventory names a standby (``bastion.standby``); for a
single NAT the plugin leaves it out with a note. It runs after every other
check (it stops and breaks NATs), on one applied pair, back to back:

* ``stop``: the active stopped through the EC2 API; it is started again
  afterwards and must come back as the standby (the routes stay put);
* ``masquerade``: the active's masquerade table deleted over SSH (on the
  active, the bastion, with sudo where the user is not root); it puts the
  table back by itself 30 s later (the suite cannot reach it once the
  address has moved: the NATs admit SSH from the admins only);
* ``forwarding``: the active's ``net.ipv4.ip_forward`` turned off over SSH,
  on again by itself 30 s later.

Faults are taken from the inventory's ``faults`` list (what the target can
inject); the hang and partition faults are not in this round's matrix.

While each fault runs, every broker probes the internet (the inventory's
probe URL, which answers with the caller's address) every 100 ms from a
process started on the broker over SSH, writing one line per probe to a file
on the broker: the probes survive the SSH transport, which dies with the
active. After the takeover (seen in the EC2 API: every private route table's
0.0.0.0/0 and the Elastic IP on the standby) the suite reconnects through
the same address, now answered by the standby with its own pinned host key,
and reads the files. A broker's outage is the longest gap between two
answered probes from the fault on; the address the probes saw afterwards
must be the Elastic IP. Prints one ``nat failover: <cause> <seconds> s``
line per fault (the worst broker), with the per-broker figures and when the
takeover showed in the API.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

import pytest

from generator.access.ssh import Bastion
from generator.base.errors import KafkanetError
from generator.environment.inventory import ec2_client
from integration.gate import GATE_KEY
from integration.support import fail

pytestmark = [pytest.mark.nat_pair, pytest.mark.host("nat-pair")]

PROBE_EVERY = 0.1  # seconds between a broker's probes
PROBE_TIMEOUT = 1.0  # one probe's HTTP timeout
OUTAGE_BUDGET = 60.0  # no takeover within this: the fault is not handled
HOLD_DOWN = 32.0  # the monitor's 30 s hold-down after a role change, and a margin
SETTLE = 3.0  # after the takeover: probes keep running this long before they are read
NAT_TABLE = "kafkanet_nat"  # kafkanet-nat-setup's nftables table
IMPORTED = time.monotonic()  # at collection: the monitors (started at apply) are at least this old

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

    def run(self, host: str, command: str, timeout: float = 20.0, attempts: int = 10) -> str:
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


@pytest.fixture(scope="module")
def pair(inventory):
    made = Pair(inventory)
    try:
        yield made
    finally:
        made.close()


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


REPAIR_AFTER = 30  # seconds: a fault made over SSH undoes itself, on the old active, after this


def _inject(pair: Pair, inventory: dict[str, Any], fault: str, active: str) -> None:
    """Break the active. A fault made over SSH is transient: the old active undoes it REPAIR_AFTER s later
    (only the active is the bastion, and the NATs' security group admits SSH from the admins only, so
    the suite cannot reach the old active once the address has moved)."""
    saved = f"/tmp/kafkanet-failover-{inventory['environment']}-{active}.nft"
    if fault == "stop":
        pair.ec2.stop_instances(InstanceIds=[active])
        return
    if fault == "masquerade":
        breaking = f"nft list table ip {NAT_TABLE} > {saved} && nft delete table ip {NAT_TABLE}"
        repairing = f"sleep {REPAIR_AFTER}; nft -f {saved} && rm -f {saved}"
    else:
        breaking = "sysctl -q -w net.ipv4.ip_forward=0"
        repairing = f"sleep {REPAIR_AFTER}; sysctl -q -w net.ipv4.ip_forward=1"
    later = f"setsid /bin/sh -c {shlex.quote(repairing)} >/dev/null 2>&1 </dev/null &"
    pair.run(None, _sudo(inventory, f"{breaking} && {{ {later} }}"))


def _repair(pair: Pair, fault: str, old: str, fault_at: float) -> None:
    """The old active is whole again: started through the API, or its transient fault has undone itself."""
    if fault == "stop":
        pair.ec2.start_instances(InstanceIds=[old])
        pair.wait_state(old, "running")
    else:
        time.sleep(max(0.0, fault_at + REPAIR_AFTER + 2 - time.time()))


def test_nat_pair_fails_over_for_each_fault(pair, inventory, pytestconfig):
    faults = [f for f in ("stop", "masquerade", "forwarding") if f in (inventory.get("faults") or {})]
    if not faults:
        pytest.skip("the inventory declares no faults this target can inject (inventory.faults)")
    eip = inventory["bastion"]["public_ip"]
    record = pytestconfig.stash.get(GATE_KEY, None)
    lines = []
    for fault in faults:
        active = pair.active()
        standby = next(i for i in pair.nats if i != active)
        # the monitors hold a takeover off for 30 s after a role change (or their start)
        time.sleep(HOLD_DOWN if lines else max(0.0, HOLD_DOWN - (time.monotonic() - IMPORTED)))
        logs = _start_probers(pair, inventory, fault, OUTAGE_BUDGET + HOLD_DOWN + 30)
        time.sleep(2.0)  # a baseline of answered probes
        fault_at = time.time()
        _inject(pair, inventory, fault, active)
        api_seconds = pair.wait_owner(standby, OUTAGE_BUDGET)
        pair.close()  # its transport rode the old active
        time.sleep(SETTLE)
        outages, packets = {}, {}
        for b in inventory["brokers"]:
            rows = _samples(_collect(pair, b, logs[b["name"]]))
            outage, ended, seen = _outage(rows, fault_at)
            if outage == float("inf"):
                fail(b["name"], f"internet probes around the {fault} fault", f"{len(rows)} probes, "
                     f"{sum(ok for _, ok, _ in rows)} answered; none answered before and after the fault")  # fmt: skip
            if seen != eip:
                fail(b["name"], f"egress address after the {fault} failover",
                     f"expected {eip} (the Elastic IP), saw {seen!r}")  # fmt: skip
            outages[b["name"]] = outage
            packets[b["name"]] = ended - (fault_at + api_seconds)
        worst = max(outages.values())
        line = (f"nat failover: {fault} {worst:.1f} s (per broker: "
                + ", ".join(f"{n} {s:.1f} s" for n, s in sorted(outages.items()))
                + f"; detection + API: routes and Elastic IP on the standby {api_seconds:.1f} s after the fault"
                + f", seen by the 0.1 s API poll; packets: first answer {max(packets.values()):+.1f} s"
                + " after that)")  # fmt: skip
        print(line)
        lines.append(line)
        if record is not None:
            record["notes"].append(line)
        if worst > OUTAGE_BUDGET:
            fail("nat-pair", f"outage after the {fault} fault", f"{worst:.1f} s, over the {OUTAGE_BUDGET:.0f} s budget")
        _repair(pair, fault, active, fault_at)
        # the old active returns as the standby: the routes and the address stay on the new active
        time.sleep(5.0)
        owners, holder = pair.view()
        if (owners, holder) != ({standby}, standby):
            fail(active, f"returns as the standby after the {fault} fault",
                 f"routes to {sorted(map(str, owners))}, Elastic IP on {holder}")  # fmt: skip
