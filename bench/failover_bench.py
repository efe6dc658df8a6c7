"""Bench of a NAT pair's failover: the fault matrix at the plane's propagation delays, split into detection / API / packets.

    sudo PYTHONPATH=$PWD .venv/bin/python bench/failover_bench.py [--delays 0 2]

For each delay (seconds between an EC2 API change and the packets following
it, the live plane's ``KAFKANET_PLANE_DELAY``), applies a copy of the seed
whose NAT is a pair (``nat: {azs: [a, c]}``) under a unique name, runs the
integration suite on it with ``kafkanet test`` (its failover matrix:
integration/test_nat_failover.py) and destroys it, also on failure or Ctrl-C.
Prints each ``nat failover:`` line of the suite, then a table per delay:
per fault the worst broker's outage, its split into detection (the fault
until the standby's monitor logged "taking over"), API (that until the routes
and the Elastic IP showed in the EC2 API) and packets (that until the worst
broker's first answered probe: the propagation delay shows here), and the
producer's gap and errors.

AWS's own propagation time (ReplaceRoute and AssociateAddress until packets
follow) is not measured here: the plane's delay stands in for it.
About 7 minutes per delay on an idle 2-core machine (mostly the monitors'
30 s hold-down between faults).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "environments" / "ttareungyi.yaml"
LINE = re.compile(r"^(?:note: )?(nat failover: .*)$", re.M)
TAKEOVER = re.compile(
    r"nat failover: (\S+) ([0-9.]+) s \(per broker: [^;]*; injecting [0-9.]+ s, (?:detection ([0-9.-]+) s, API ([0-9.-]+) s"
    r"|detection \+ API ([0-9.]+) s[^,]*), packets ([+0-9.-]+) s; producer: ([^;]*);"
)
PARTITION = re.compile(r"nat failover: partition ([0-9.]+) s .*producer: ([^)]*)\)")


def cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def run_at(delay: float, work: Path) -> tuple[list[str], float, int]:
    """(the suite's failover lines, its seconds, its exit code) for a pair applied at ``delay``."""
    name = f"fb{secrets.token_hex(3)}"
    spec = work / f"{name}.yaml"
    text = SEED.read_text().replace("name: ttareungyi", f"name: {name}")
    if "nat:\n  az: a\n" not in text:
        raise SystemExit("failover_bench: the seed's `nat:\\n  az: a` text changed; update this bench")
    spec.write_text(text.replace("nat:\n  az: a\n", "nat:\n  azs: [a, c]\n"))
    env = {**os.environ, "KAFKANET_BUILD_ROOT": str(work / "build"), "KAFKANET_PLANE_DELAY": f"{delay:g}",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    try:
        applied = cli("apply", str(spec), "--target", "local", env=env, timeout=900)
        if applied.returncode != 0:
            raise SystemExit(f"failover_bench: apply at delay {delay:g} s failed:\n{(applied.stdout + applied.stderr)[-3000:]}")
        started = time.monotonic()
        tested = cli("test", str(spec), "--target", "local", env=env, timeout=1200)
        seconds = time.monotonic() - started
        if tested.returncode != 0:
            print((tested.stdout + tested.stderr)[-4000:], file=sys.stderr)
        return LINE.findall(tested.stdout), seconds, tested.returncode
    finally:
        cli("destroy", str(spec), env=env, timeout=600)


def table(delay: float, lines: list[str]) -> list[str]:
    out = [f"delay {delay:g} s        outage  detection     API  packets  producer",
           "-" * 78]  # fmt: skip
    for line in lines:
        found = TAKEOVER.search(line)
        if found:
            cause, outage, detection, api, both, packets, producer = found.groups()
            split = f"{float(detection):>9.1f}  {float(api):>6.1f}" if detection else f"{'(d+API ' + both + ')':>17}"
            out.append(f"  {cause:<14} {float(outage):>6.1f}  {split}  {float(packets):>+7.1f}  {producer}")
            continue
        found = PARTITION.search(line)
        if found:
            out.append(f"  {'partition':<14} {float(found[1]):>6.1f}  {'(no takeover)':>17}  {'':>7}  {found[2]}")
        elif "internet no takeover" in line:
            out.append("  internet       no takeover (routes and Elastic IP stayed)")
        elif "steady" in line:
            out.append("  " + line.removeprefix("nat failover: "))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 2.0], help="propagation delays, seconds")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("failover_bench: needs root (the local plane builds network namespaces)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="kafkanet-failover-bench-") as tmp:
        for delay in args.delays:
            lines, seconds, rc = run_at(delay, Path(tmp))
            print(f"# delay {delay:g} s: kafkanet test took {seconds:.0f} s, exit {rc}")
            for line in lines:
                print(line)
            results.append((delay, lines))
    print()
    for delay, lines in results:
        print("\n".join(table(delay, lines)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
