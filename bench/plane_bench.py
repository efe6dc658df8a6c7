"""Bench of the local data plane: build time, teardown time, memory of its processes.

    sudo .venv/bin/python bench/plane_bench.py [--runs 5] [--source moto|snapshot] [--no-services]

``moto`` (default) starts a moto server on 127.0.0.1, creates the reference
topology in it and builds from there, so "build" includes the describe_* calls;
``snapshot`` replays the recorded fixture (no moto). With moto, the plane
is built as the lifecycle builds it, with the moto endpoint: its services
(IMDSv2, resolver, EC2 relay) and the live daemon; ``--no-services`` builds
without the endpoint (neither), for the before/after figure. Memory is the sum
over the plane's processes of RSS (shared pages counted in each) and PSS
(shared pages split). Everything is torn down at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from generator.base.errors import KafkanetError  # noqa: E402
from generator.module.keys import ensure_key  # noqa: E402
from localvpc import netns, plane, render, snapshot  # noqa: E402

FIXTURE = ROOT / "tests" / "localvpc" / "fixtures" / "ttareungyi.json"


def _kib(pid: int, path: str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(env: str) -> tuple[int, int, dict[str, int]]:
    """(RSS KiB, PSS KiB, RSS KiB by process name) of every process in the plane's namespaces."""
    rss = pss = 0
    by_name: dict[str, int] = {}
    for pid in netns.pids_in(netns.list_netns(render.netns_prefix(env))):
        name = netns.process_name(pid)
        if name is None:
            continue
        r = _kib(pid, "status", "VmRSS")
        rss += r
        pss += _kib(pid, "smaps_rollup", "Pss")
        by_name[name] = by_name.get(name, 0) + r
    return rss, pss, by_name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--source", choices=["moto", "snapshot"], default="moto")
    parser.add_argument("--no-services", action="store_true", help="build without the moto endpoint: no services, no live daemon")
    args = parser.parse_args()
    plane.check_prerequisites()
    env = f"bench{secrets.token_hex(2)}"
    work = Path(tempfile.mkdtemp(prefix=f"kn_{env}_"))
    key, public = ensure_key(work, env)
    server = None
    builds, teardowns, collects = [], [], []
    try:
        if args.source == "moto":

            from generator.localaws import moto_server
            from localvpc import reference

            started = time.monotonic()
            server = moto_server.start(work / "moto")
            ec2 = server.ec2_client("ap-northeast-2")
            reference.create(ec2, env, public_key=public)
            print(f"moto start + reference topology: {time.monotonic() - started:.2f} s")
        else:
            ec2 = snapshot.ReplayEC2(snapshot.load(FIXTURE))
        for run in range(args.runs):
            started = time.monotonic()
            snapshot.collect(ec2, env)
            collects.append(time.monotonic() - started)
            started = time.monotonic()
            endpoint = server.url if server is not None and not args.no_services else None
            info = plane.build(env, ec2, key, work, endpoint_url=endpoint)
            builds.append(time.monotonic() - started)
            rss, pss, by_name = memory(env)
            report = plane.teardown(env)
            teardowns.append(report.seconds)
            print(
                f"run {run + 1}: build {builds[-1]:.3f} s, teardown {report.seconds:.3f} s, "
                f"{len(report.namespaces)} namespaces, {report.processes} processes, "
                f"RSS {rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB"
            )
        print(f"processes (RSS MiB): {', '.join(f'{k} {v / 1024:.1f}' for k, v in sorted(by_name.items()))}")
        print(f"bastion {info.bastion_public_ip}, probe {info.probe_url}")
        print(
            f"median of {args.runs}: describe_* {statistics.median(collects):.3f} s, "
            f"build (incl. describe_*) {statistics.median(builds):.3f} s, teardown {statistics.median(teardowns):.3f} s"
        )
    except KafkanetError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return exc.exit_code
    finally:
        plane.teardown(env)
        if server is not None:
            server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
