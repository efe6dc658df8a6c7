"""Bench of the live plane: EC2 API call -> packets changed, and what following the API costs.

    sudo .venv/bin/python bench/live_bench.py [--repeats 10] [--delay 0]

Starts a moto server on 127.0.0.1, creates the reference topology in it and
builds the plane with ``endpoint_url`` (so the live daemon runs). Then, for
each repeat, times from just before the API call until a probe sees the
packets change (probes every 20 ms, each with a 100 ms connect timeout, from
inside the namespaces):

* ``route delete``: DeleteRoute of the brokers' 0.0.0.0/0 -> broker-1's HTTP to the web host fails;
* ``route create``: CreateRoute back -> it succeeds again;
* ``eip move``: AssociateAddress of the NAT's EIP to broker-1 -> the NAT's HTTP is seen from another address;
* ``eip back``: AssociateAddress back -> seen from the EIP again.

Also prints one poll's duration (the daemon's four describe calls), the CPU
the daemon and moto use while nothing changes, and what the daemon adds to the
build (build with and without ``endpoint_url``). Everything is torn down at the
end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.localaws import moto_server  # noqa: E402
from generator.module.keys import ensure_key  # noqa: E402
from localvpc import faults, live, netns, plane, reference  # noqa: E402

PROBE_EVERY = 0.02
PROBE_TIMEOUT = 0.1
BUDGET = 10.0


def seen(ns: str, web: str) -> str | None:
    try:
        status, body = netns.http_get(ns, web, timeout=PROBE_TIMEOUT)
    except OSError:
        return None
    return body.strip() if status == 200 else None


def until(check, budget: float = BUDGET) -> float:
    """Seconds until ``check()`` is true (from the caller's start); raises after ``budget``."""
    started = time.monotonic()
    while time.monotonic() - started < budget:
        if check():
            return time.monotonic() - started
        time.sleep(PROBE_EVERY)
    raise TimeoutError(f"the packets did not change within {budget:.0f} s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def figures(name: str, values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return (f"{name:14s} median {statistics.median(values) * 1000:6.0f} ms   p90 {p90 * 1000:6.0f} ms   "
            f"max {values[-1] * 1000:6.0f} ms   (n={len(values)})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.0, help="propagation delay to set (faults.set_delay)")
    parser.add_argument("--builds", type=int, default=3, help="builds with and without the daemon, for its cost")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("live_bench: needs root (network namespaces); run it with sudo", file=sys.stderr)
        return 2
    env = f"lb{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="kn-live-bench-") as tmp:
        state = Path(tmp)
        server = moto_server.start(state / "moto")
        try:
            ec2 = server.ec2_client("ap-northeast-2")
            key, public = ensure_key(state, env)
            reference.create(ec2, env, public_key=public)
            builds: dict[bool, list[float]] = {False: [], True: []}
            for i in range(args.builds * 2):
                follow = i % 2 == 1
                info = plane.build(env, ec2, key, state, endpoint_url=server.url if follow else None)
                builds[follow].append(info.build_seconds)
            return _measure(env, ec2, server, info, args, builds)
        finally:
            plane.teardown(env)
            server.stop()


def _measure(env, ec2, server, info, args, builds) -> int:
    if args.delay:
        faults.set_delay(env, args.delay)
    broker, nat = info.hosts["broker-1"], info.hosts["nat"]
    web, eip = info.web_ip, nat.public_ip
    until(lambda: (faults.live_status(env) or {}).get("polls"))
    startup_cpu = cpu_seconds(live.find(env)[0])  # interpreter, boto3 and the first read, beside the build's tail
    until(lambda: seen(broker.netns, web) == eip)
    table = next(t for t in ec2.describe_route_tables()["RouteTables"]
                 if any(r.get("NetworkInterfaceId") for r in t["Routes"]))  # fmt: skip
    eni = next(r["NetworkInterfaceId"] for r in table["Routes"] if r.get("NetworkInterfaceId"))
    allocation = next(a["AllocationId"] for a in ec2.describe_addresses()["Addresses"] if a.get("InstanceId") == nat.instance_id)
    results: dict[str, list[float]] = {"route delete": [], "route create": [], "eip move": [], "eip back": []}
    for _ in range(args.repeats):
        started = time.monotonic()
        ec2.delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0")
        results["route delete"].append(_elapsed(started, lambda: seen(broker.netns, web) is None))
        started = time.monotonic()
        ec2.create_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", NetworkInterfaceId=eni)
        results["route create"].append(_elapsed(started, lambda: seen(broker.netns, web) == eip))
        started = time.monotonic()
        ec2.associate_address(AllocationId=allocation, InstanceId=broker.instance_id, AllowReassociation=True)
        results["eip move"].append(_elapsed(started, lambda: seen(nat.netns, web) not in (None, eip)))
        started = time.monotonic()
        ec2.associate_address(AllocationId=allocation, InstanceId=nat.instance_id, AllowReassociation=True)
        results["eip back"].append(_elapsed(started, lambda: seen(nat.netns, web) == eip))
    # what following costs while nothing changes
    base = json.loads((live.live_dir(plane.runtime_dir(env)) / "baseline.json").read_text())
    client = live.ec2_client(server.url, "ap-northeast-2")
    polls = []
    for _ in range(20):
        t = time.monotonic()
        live.poll(client, base)
        polls.append(time.monotonic() - t)
    daemon = live.find(env)[0]
    window = 5.0
    before = cpu_seconds(daemon), cpu_seconds(server.pid)
    time.sleep(window)
    after = cpu_seconds(daemon), cpu_seconds(server.pid)
    print(f"live plane bench: env {env}, {args.repeats} repeats, propagation delay {args.delay:g} s,"
          f" poll every {live.INTERVAL * 1000:.0f} ms, probes every {PROBE_EVERY * 1000:.0f} ms")  # fmt: skip
    print("API call -> packets changed:")
    for name, values in results.items():
        print("  " + figures(name, values))
    print(f"one poll (4 describe calls): median {statistics.median(polls) * 1000:.0f} ms, max {max(polls) * 1000:.0f} ms")
    print(f"idle CPU over {window:.0f} s: daemon {100 * (after[0] - before[0]) / window:.1f} %,"
          f" moto {100 * (after[1] - before[1]) / window:.1f} % of one core")  # fmt: skip
    print(f"daemon start (python, boto3, first read and translation): {startup_cpu:.2f} s of CPU")
    print(f"build: median {statistics.median(builds[False]):.2f} s without the daemon, "
          f"{statistics.median(builds[True]):.2f} s with it ({len(builds[True])} builds each)")
    return 0


def _elapsed(started: float, check) -> float:
    """Seconds from ``started`` (before the API call) until ``check()`` is true."""
    until(check)
    return time.monotonic() - started


if __name__ == "__main__":
    sys.exit(main())
