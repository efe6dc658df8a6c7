"""Bench of a local-target cycle of the seed topology: apply, plan again, destroy.

    .venv/bin/python bench/apply_bench.py [--runs N] [--via steps|lifecycle] [variants...] [--json FILE]

Each run copies the spec (default environments/ttareungyi.yaml) to a temporary
file named ``bench-<hex>``, builds under ``$KAFKANET_BUILD_ROOT`` (default
/tmp/bench-build), starts its own moto server on 127.0.0.1 and times, per step,
wall time, CPU time (terraform, the AWS provider, the moto server), the host's
busy cores and the load average.

``--via steps`` (default) runs through the adapter (generator.terraform.adapter, built by
``session.terraform_for``) what the three kafkanet commands of a cycle run on
the local target, minus the data plane (bench/plane_bench.py times that):

    apply     generate, moto start, provider start, terraform init, terraform apply
              (one ``apply -auto-approve``, no saved plan), inventory (terraform
              output), provider stop
    plan      the whole command as one step "plan (no changes)", with its sub-steps
              provider start, terraform init, terraform plan (must show no changes),
              provider stop
    destroy   provider start, destroy init, terraform destroy (-refresh=false),
              provider stop, leftover check, moto stop

Every terraform run of one command reattaches (TF_REATTACH_PROVIDERS) to one AWS
provider process in debug mode, started and stopped by generator/terraform/provider.py
through ``session.terraform_session``, exactly as lifecycle does; "provider
start" and "provider stop" are steps of their own. terraform reaches moto through
its environment alone (``MotoServer.env()``: AWS_ENDPOINT_URL and the EC2, STS and
IAM spellings): the module has no endpoint setting. ``--via lifecycle`` calls
``apply.apply``, ``apply.plan`` and ``destroy.destroy`` (generator.environment) themselves (data plane included;
only --moto-env and --tf-env apply), so it follows whatever lifecycle does; it
needs root. Its steps are lifecycle's own (terraform destroy includes its init).

CPU: terraform and the plugins it starts are counted when we reap them
(RUSAGE_CHILDREN). The shared provider is our own child and lives across
steps: its pid comes from its record (``.kafkanet/provider/provider.pid``,
checked against the Pid in the reattach JSON), it is read from /proc/PID/stat at
each step's start and end, and in the step that reaps it (provider stop) its
lifetime total, which arrives with the reap, is replaced by that step's share.
Provider processes are sampled from /proc every 0.1 s; "starts" counts those
terraform launched itself (none while the shared one serves) + shared ones (one
per kafkanet command). One standalone start, as terraform pays it when it starts
the provider itself, is probed with ``terraform providers schema -json``
(terraform's schema decoding included).

From terraform's own lines ("Creating...", "Creation complete after Ns",
"Still creating...", "Destroying...") it builds a per-resource table with our
own timestamps (terraform rounds to seconds), and the observed critical path
through the dependency graph (dependencies from the state): for the resource
that finished last, the dependency that finished last before it started, and
so on, with the gap (terraform/provider scheduling) between each pair.

Findings (2026-11-25, seed, 2 cores; table in bench/README.md): before 00d06dd
terraform started 12 provider processes per cycle, each paying start-up and
the schema, plus the provider's configuration with an endpoints block on every
walk; now a cycle starts 3 (one per command) and terraform none. Median
cycle (--via lifecycle) 118.6 -> 85.9 s wall and 65.6 -> 25.4 s CPU. init and
output dropped from ~0.7 to ~0.1 s CPU. What remains of apply is nearly all its
critical path through the resources, ~42 s in whole multiples of 10 s (vpc,
then instance, then volume attachment; moto answers at once, so most likely the
provider's state waiters polling), with 3-5 s before the first resource;
destroy is ~20.5 s of such waits plus 4-7 s.

Variants of --via steps (each alone, to compare with a plain run; --json keeps raw numbers):

  --parallelism N        terraform apply/plan/destroy -parallelism=N
  --destroy-refresh      destroy with refresh (lifecycle uses -refresh=false)
  --skip-destroy-init    no terraform init before destroy (lifecycle runs one: destroy is
                         its own command)
  --moto-warmup          one EC2 call to moto in the background right after it starts
  --tf-log DIR           TF_LOG=DEBUG (--tf-log-level), one terraform log per step in DIR, and
                         the shared provider's own log per command (slows it down)

and of both modes:

  --moto-env K=V         environment of the moto server (repeatable)
  --tf-env K=V           environment of terraform and of the shared provider (repeatable)

Gone since the local target changed (00d06dd): --apply-direct (local apply is one
``apply -auto-approve``), --reattach (the shared provider is how lifecycle works),
--endpoint-env and --no-endpoint-var (the module has no endpoints block and no
aws_endpoint variable left to drop).

Everything a run starts (moto, the shared providers and their /tmp/plugin*
sockets, terraform, the data plane's namespaces) is stopped and removed at the
end, also on failure or Ctrl-C; then the run checks that none of it is left
(a leftover is reported, removed and fails the run). Only 127.0.0.1 is used.
``--via steps`` builds no namespaces and needs no root; ``--via lifecycle`` needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))  # applybench/, also under python -P (no script dir on the path)
os.environ.setdefault("KAFKANET_BUILD_ROOT", "/tmp/bench-build")

from applybench.meter import probe_provider_start
from applybench.report import print_report
from applybench.runner import Runner

from generator.base.errors import KafkanetError
from generator.terraform import tfcli

SEED = ROOT / "environments" / "ttareungyi.yaml"
STEPS_ONLY = ("parallelism", "destroy_refresh", "skip_destroy_init", "moto_warmup", "tf_log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--spec", default=str(SEED), help="spec to copy (default: the seed)")
    parser.add_argument("--via", choices=("steps", "lifecycle"), default="steps")
    parser.add_argument("--parallelism", type=int, default=0)
    parser.add_argument("--destroy-refresh", action="store_true")
    parser.add_argument("--skip-destroy-init", action="store_true")
    parser.add_argument("--moto-warmup", action="store_true")
    parser.add_argument("--moto-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--tf-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--tf-log", metavar="DIR")
    parser.add_argument("--tf-log-level", default="DEBUG", help="TF_LOG level with --tf-log (TRACE shows every provider RPC)")
    parser.add_argument("--probe", type=int, default=1, help="standalone provider starts to time (0: none)")
    parser.add_argument("--json", metavar="FILE", help="write raw results as JSON")
    parser.add_argument("--label", default="", help="label kept in the JSON")
    parser.add_argument("--keep-build", action="store_true", help="keep the build dir (state is removed anyway)")
    parser.add_argument("-v", "--verbose", action="store_true", help="echo terraform's lines")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    if args.via == "lifecycle":
        given = [f"--{name.replace('_', '-')}" for name in STEPS_ONLY if getattr(args, name)]
        if given:
            print(f"{', '.join(given)}: only with --via steps (lifecycle runs what it runs)", file=sys.stderr)
            return 2
        if os.geteuid() != 0:
            print("--via lifecycle builds the local data plane and needs root", file=sys.stderr)
            return 2
    tfcli.require_terraform()
    runner = Runner(args)
    results = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    for i in range(args.runs):
        results.append(runner.run(i))
    probe = []
    if args.probe:
        try:
            probe = probe_provider_start(args.probe)
        except KafkanetError as exc:
            print(f"provider start probe failed: {exc}", file=sys.stderr)
    print(f"\nkafkanet apply bench: {args.runs} run(s) via {args.via}, "
          f"variant: {args.label or describe(args)}; load avg before {'/'.join(f'{x:.2f}' for x in load_before)}, "
          f"after {'/'.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores, "
          f"{time.perf_counter() - started:.0f} s in all")
    print_report(results, probe, args)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "label": args.label or describe(args), "args": vars(args), "probe": probe,
            "runs": [asdict(r) for r in results],
        }, indent=1))
    bad = any(r.error or r.second_plan_changes or r.leftovers or r.left_behind for r in results)
    return 1 if bad else 0


def describe(args: argparse.Namespace) -> str:
    parts = []
    if args.parallelism:
        parts.append(f"-parallelism={args.parallelism}")
    if args.destroy_refresh:
        parts.append("destroy-refresh")
    if args.skip_destroy_init:
        parts.append("skip-destroy-init")
    if args.moto_warmup:
        parts.append("moto-warmup")
    parts += [f"moto:{kv}" for kv in args.moto_env] + [f"tf:{kv}" for kv in args.tf_env]
    return " ".join(parts) or "baseline (as lifecycle)"


if __name__ == "__main__":
    sys.exit(main())
