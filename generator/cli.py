"""The `kafkanet` command line.

User errors (the UserError family) are caught here, in one place: one line per
problem on stderr, exit 2. Infrastructure failures exit 1. Anything else is a
bug and crashes with its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from generator import __version__
from generator.errors import KafkanetError

Handler = Callable[[argparse.Namespace], int]


def _print_problems(exc: KafkanetError) -> None:
    for line in exc.problems:
        print(f"kafkanet: error: {line}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from generator.module import load

    loaded = load(args.spec)
    topo = loaded.topology
    print(
        f"{loaded.path}: ok: {topo.name} in {loaded.spec.region}, VPC {loaded.spec.vpc_cidr}, "
        f"NAT in {topo.public_subnet.az}, {len(topo.brokers)} broker(s) in "
        f"{', '.join(s.az for s in topo.private_subnets)}"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from generator.module import generate

    gen = generate(args.spec, Path(args.out) if args.out else None)
    w = gen.write
    print(
        f"{gen.out_dir}: {len(w.written)} written, {len(w.unchanged)} unchanged, "
        f"{len(w.removed)} removed ({gen.seconds * 1000:.0f} ms)"
    )
    for rel in w.written:
        print(f"  wrote   {rel}")
    for rel in w.removed:
        print(f"  removed {rel}")
    if gen.private_key is not None:
        print(f"  ssh key {gen.private_key}")
    if args.json:
        print(json.dumps({"out_dir": str(gen.out_dir), "files": sorted(gen.files)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkanet",
        description="Kafka on EC2 behind a NAT instance: spec → Terraform → apply → checked network.",
    )
    parser.add_argument("--version", action="version", version=f"kafkanet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("spec", metavar="SPEC", help="spec YAML path, or an environment name under environments/")
        p.set_defaults(handler=handler)
        return p

    add("validate", cmd_validate, "load and validate a spec")
    p = add("generate", cmd_generate, "write the Terraform root module (default build/<name>/)")
    p.add_argument("--out", metavar="DIR", help="output directory (default build/<name>/)")
    p.add_argument("--json", action="store_true", help="also print a JSON summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KafkanetError as exc:
        _print_problems(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kafkanet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
