"""The `kafkanet` command line.

User errors (the UserError family) are caught here, in one place: one line per
problem on stderr, exit 2. Infrastructure failures exit 1. Anything else is a
bug and crashes with its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from generator import __version__
from generator.base.errors import KafkanetError, UserError

if TYPE_CHECKING:
    from generator.module.loaded import Loaded

Handler = Callable[[argparse.Namespace], int]


def _print_problems(exc: KafkanetError) -> None:
    for line in exc.problems:
        print(f"kafkanet: error: {line}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from generator.module.loaded import load

    loaded = load(args.spec)
    topo = loaded.topology
    print(
        f"{loaded.path}: ok: {topo.name} in {loaded.spec.region}, VPC {loaded.spec.vpc_cidr}, "
        f"NAT in {topo.public_subnet.az}, {len(topo.brokers)} broker(s) in "
        f"{', '.join(s.az for s in topo.private_subnets)}"
    )
    return 0


def _admin_cidrs(loaded: Loaded, args: argparse.Namespace, target: str | None) -> Loaded:
    """``loaded`` with ``--admin-cidr`` applied (unchanged without it); target None: generate."""
    values = getattr(args, "admin_cidrs", None)
    if not values:
        return loaded
    if getattr(args, "no_generate", False):
        raise UserError("--admin-cidr changes the generated module: drop --no-generate, or set admin_cidrs in the "
                        "build directory's variables.tf yourself")  # fmt: skip
    from generator.module.admincidr import override, resolve

    cidrs = resolve(values, target)
    given = ", ".join(map(str, cidrs))
    spec = ", ".join(map(str, loaded.spec.admin_cidrs))
    print(f"kafkanet: admin CIDR(s) for this run: {given} (--admin-cidr; the spec has {spec})", file=sys.stderr)
    return override(loaded, cidrs)


def cmd_generate(args: argparse.Namespace) -> int:
    from generator.module.generate import generate
    from generator.module.loaded import load

    loaded = _admin_cidrs(load(args.spec), args, None)
    gen = generate(loaded, Path(args.out) if args.out else None)
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


def cmd_check(args: argparse.Namespace) -> int:
    import tempfile

    from generator.module.check import check_module, require_module, require_tools
    from generator.terraform.tfcli import setup, write_cli_config

    module = require_module(args.directory)  # before the tools: a typo in DIR is the likelier mistake
    require_tools()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kafkanet-tfrc-") as tmp:
        cli_config = write_cli_config(Path(tmp) / "terraform.rc", setup().mirror)
        findings = check_module(module, cli_config=cli_config)
    for finding in findings:
        print(finding)
    seconds = time.perf_counter() - start
    verdict = f"{len(findings)} finding(s)" if findings else "clean"
    print(f"kafkanet: check {module}: {verdict} ({seconds:.1f} s)", file=sys.stderr)
    return 1 if findings else 0


def cmd_diagram(args: argparse.Namespace) -> int:
    from generator.module.diagram import (
        default_output,
        output_format,
        render_diagram,
        write_diagram,
    )
    from generator.module.loaded import load

    loaded = load(args.spec)
    out = Path(args.output) if args.output is not None else default_output(loaded)
    fmt = output_format(out)
    start = time.perf_counter()
    data = render_diagram(loaded, fmt)
    write_diagram(data, out)
    print(f"{out}: {len(data)} bytes ({fmt.upper()}, {(time.perf_counter() - start) * 1000:.0f} ms)")
    return 0


def cmd_cost(args: argparse.Namespace) -> int:
    from generator.module.cost import DEFAULT_EGRESS_GB, estimate, parse_egress
    from generator.module.loaded import load
    from generator.module.prices import load_prices

    egress = parse_egress(args.egress_gb) if args.egress_gb is not None else DEFAULT_EGRESS_GB
    prices = load_prices(Path(args.prices)) if args.prices else None
    report = estimate(load(args.spec), egress, prices)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(report.table(), end="")
    return 0


def _env(args: argparse.Namespace):
    from generator.environment.session import open_env

    env = open_env(args.spec, args.target)
    env.loaded = _admin_cidrs(env.loaded, args, env.target)
    return env


def cmd_plan(args: argparse.Namespace) -> int:
    from generator.environment.apply import plan

    plan(_env(args), generate_module=not args.no_generate, check=not args.no_check)
    return 0


def _rejoined(env):
    """On AWS, a roll asks a surviving broker through the bastion whether the new one is back."""
    if env.target != "aws" or not env.inventory_path.exists():
        return None  # local: the rebuilt plane is the check; a first apply replaces nothing
    from generator.access.rejoin import rejoined_through_bastion
    from generator.environment.apply import read_inventory

    return rejoined_through_bastion(read_inventory(env))


def cmd_apply(args: argparse.Namespace) -> int:
    from generator.environment.apply import apply
    from generator.environment.session import say
    from generator.environment.sshconfig import SSH_CONFIG, alias

    env = _env(args)
    result = apply(env, generate_module=not args.no_generate, yes=args.yes, allow_replace=args.allow_replace,
                   check=not args.no_check, rejoined=_rejoined(env))
    inv = result.inventory
    say(
        f"applied {inv['environment']} ({inv['target']}): bastion {inv['bastion']['public_ip']}, "
        f"{len(inv['brokers'])} broker(s); {result.timings.summary()}"
    )
    say(f"inventory: {result.env.inventory_path}; next: kafkanet test {args.spec} --target {args.target}")
    first = inv["brokers"][0]["name"] if inv["brokers"] else "bastion"
    say(f"ssh: kafkanet ssh {args.spec} {first} --target {args.target}, or "
        f"ssh -F {result.env.path(SSH_CONFIG)} {alias(inv, first)}; "
        f"Kafka from this machine: kafkanet tunnel {args.spec} --target {args.target}")  # fmt: skip
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    from generator.environment.apply import read_inventory

    print(json.dumps(read_inventory(_env(args)), indent=2, ensure_ascii=False))
    return 0


def cmd_ssh(args: argparse.Namespace) -> int:
    from generator.access import commands as access
    from generator.environment.apply import read_inventory
    from generator.environment.session import require_root_for_local

    env = _env(args)
    inventory = read_inventory(env)  # refuses the other target, says when nothing is applied
    host = access.find_host(inventory, args.host)
    command = " ".join(args.remote_command)  # as ssh does: the remote shell parses it
    if not command:
        access.require_terminal()
    require_root_for_local(env)
    bastion = access.connect(inventory)
    try:
        return access.run_command(bastion, host, command) if command else access.shell(bastion, host)
    finally:
        bastion.close()


def cmd_tunnel(args: argparse.Namespace) -> int:
    from generator.access import commands as access
    from generator.environment.apply import read_inventory
    from generator.environment.session import require_root_for_local, say

    if args.vpn:
        if args.port is not None:
            raise UserError("--port is the SOCKS5 tunnel's; --vpn listens on no port of yours (drop one of them)")
        return _tunnel_vpn(args)
    env = _env(args)
    inventory = read_inventory(env)
    require_root_for_local(env)
    return access.tunnel(inventory, args.port or 0, say)


def _tunnel_vpn(args: argparse.Namespace) -> int:
    from generator.access import vpn
    from generator.environment.apply import read_inventory
    from generator.environment.session import PLANE_DIR, say
    from generator.environment.sshconfig import SSH_CONFIG

    env = _env(args)
    inventory = read_inventory(env)  # refuses the other target, says when nothing is applied
    local = env.target == "local"
    sshuttle = vpn.find_sshuttle()
    vpn.require_tools(local)
    vpn.require_root(env.target, args.spec)
    netns = vpn.operator_netns(env.path(PLANE_DIR) / "plane.json", env.name) if local else None
    if not local:
        vpn.refuse_overlap(inventory["network"]["vpc_cidr"], vpn.local_ipv4_addresses())
    ssh_config = vpn.require_ssh_config(env.path(SSH_CONFIG), env.name)
    plan = vpn.plan(inventory, ssh_config, sshuttle, netns, args.verbose)
    return vpn.run(plan, env.target, say, lambda line: say(f"sshuttle: {line}"),
                   inventory["kafka"]["bootstrap_servers"])  # fmt: skip


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range; use 1-65535, or 0 for a free port")
    return port


def cmd_destroy(args: argparse.Namespace) -> int:
    from generator.environment.destroy import destroy
    from generator.environment.session import say

    result = destroy(_env(args), yes=args.yes)
    say(
        f"destroyed {result.env.name} ({result.env.target}): {result.namespaces} namespace(s), "
        f"{result.processes} process(es) removed; {result.timings.summary()}"
    )
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from generator.environment.apply import read_inventory
    from generator.environment.suite import run_suite

    env = _env(args)
    read_inventory(env)  # refuses the other target, says when nothing is applied
    return run_suite(env, args.pytest_args)


def cmd_e2e(args: argparse.Namespace) -> int:
    from generator.environment.apply import apply
    from generator.environment.destroy import destroy
    from generator.environment.session import Timings, say
    from generator.environment.suite import run_suite

    env = _env(args)
    timings = Timings()
    rc = 1
    interrupted = False
    try:  # teardown is registered before anything is applied
        try:
            apply(env, generate_module=not args.no_generate, yes=args.yes, check=not args.no_check, timings=timings)
            start = time.perf_counter()
            rc = run_suite(env, args.pytest_args)
            timings.steps.append(("integration suite", time.perf_counter() - start))
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: tearing down before exiting")
    finally:
        if args.keep:
            say(f"--keep: {env.name} left running; remove it with `kafkanet destroy {args.spec} --target {env.target}`")
        else:
            try:
                destroy(env, yes=True, timings=timings)
            except KafkanetError as exc:
                if not interrupted:
                    raise
                _print_problems(exc)  # reported; the interrupt decides the exit code
        say(f"e2e {'interrupted' if interrupted else 'passed' if rc == 0 else 'FAILED'}: {timings.summary()}")
    if interrupted:
        raise KeyboardInterrupt
    return rc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkanet",
        description="Kafka on EC2 behind a NAT instance: spec → Terraform → apply → checked network.",
    )
    parser.add_argument("--version", action="version", version=f"kafkanet {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        help="stream terraform's and the integration suite's full output (default: one line per step, "
             "a live count, terraform's output in build/<name>/.kafkanet/logs/terraform.log)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("spec", metavar="SPEC", help="spec YAML path, or an environment name under environments/")
        p.set_defaults(handler=handler)
        return p

    def targeted(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = add(name, handler, help_)
        p.add_argument(
            "--target", choices=("local", "aws"), default="local",
            help="local: a moto server and a network-namespace data plane (default); aws: real AWS",
        )
        return p

    def no_generate(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-generate", action="store_true", help="use the module in the build directory as it is")
        p.add_argument(
            "--no-check", action="store_true",
            help="apply even when `kafkanet check` finds problems in the module (they are not run at all)",
        )

    def pytest_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARGS", help="after --: passed to pytest")
        p.set_defaults(after_double_dash="pytest_args")

    def admin_cidr(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--admin-cidr", action="append", dest="admin_cidrs", metavar="CIDR|auto",
            help="who may SSH to the bastion, for this run, instead of the spec's admin_cidrs (repeatable); "
                 "auto: your public address as a /32, from $KAFKANET_CHECKIP_URL "
                 "(default https://checkip.amazonaws.com; on the local target only a loopback URL)",
        )  # fmt: skip
        return p

    add("validate", cmd_validate, "load and validate a spec")
    p = admin_cidr(add("generate", cmd_generate, "write the Terraform root module (default build/<name>/)"))
    p.add_argument("--out", metavar="DIR", help="output directory (default build/<name>/)")
    p.add_argument("--json", action="store_true", help="also print a JSON summary")
    p = sub.add_parser(
        "check", help="every static check on a module directory: terraform fmt and validate, shellcheck, "
        "systemd-analyze, cloud-init schema, checkov", description="every static check on a module directory, "
        "generated or hand-edited; one line per finding (FILE:LINE: tool: message), exit 1 when there are any",
    )  # fmt: skip
    p.add_argument("directory", metavar="DIR", help="the module directory, e.g. build/<name>/")
    p.set_defaults(handler=cmd_check)
    p = add("diagram", cmd_diagram, "draw the architecture: VPC, subnets, NAT/bastion, brokers, egress and SSH paths")
    p.add_argument(
        "-o", "--output", metavar="FILE",
        help="the image to write; .svg or .png picks the format (default build/<name>/diagram.svg)",
    )
    p = add("cost", cmd_cost, "monthly cost of the environment: the NAT instance vs a managed NAT Gateway")
    p.add_argument(
        "--egress-gb", metavar="N",
        help="GB a month the brokers send to the internet (default 100); 0 or more, decimals allowed",
    )
    p.add_argument(
        "--prices", metavar="FILE", help="price book YAML (default: generator/module/prices.yaml, shipped with kafkanet)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    no_generate(admin_cidr(targeted("plan", cmd_plan, "generate, init and plan")))
    p = admin_cidr(targeted("apply", cmd_apply, "generate, init and apply; the local target also builds the data plane"))
    no_generate(p)
    p.add_argument("--yes", action="store_true", help="do not ask before changing AWS (nightly jobs)")
    p.add_argument("--allow-replace", action="store_true", help="allow a plan that replaces a broker")
    targeted("inventory", cmd_inventory, "print the inventory JSON the integration suite uses")
    pytest_args(targeted("test", cmd_test, "run the integration suite against the applied environment"))
    p = targeted("destroy", cmd_destroy, "destroy; the local target also removes every namespace and process")
    p.add_argument("--yes", action="store_true", help="do not ask before destroying on AWS")
    p = targeted("ssh", cmd_ssh, "a shell, or a command, on the bastion or a broker (through the bastion)")
    p.add_argument("host", metavar="HOST", help="bastion, broker-N, or a broker's private IP")
    p.add_argument("remote_command", nargs="*", metavar="COMMAND",
                   help="after --: run this instead of a shell (words joined with spaces, as ssh does); "
                        "exits with its status")  # fmt: skip
    p.set_defaults(after_double_dash="remote_command")
    p = targeted("tunnel", cmd_tunnel, "a SOCKS5 port on 127.0.0.1 through the bastion, for Kafka clients here; "
                 "--vpn: a transparent tunnel (sshuttle) to the VPC CIDR, for every client")  # fmt: skip
    p.add_argument("--port", type=_port, default=None, metavar="N",
                   help="SOCKS5: local port (default 0: a free one)")  # fmt: skip
    p.add_argument(
        "--vpn", action="store_true",
        help="route TCP to the VPC CIDR through the bastion with sshuttle (kcat, confluent-kafka, Java: every "
             "client); needs root and sshuttle; on the local target inside the operator network namespace",
    )  # fmt: skip
    p = admin_cidr(targeted("e2e", cmd_e2e, "apply, test, destroy; teardown always runs unless --keep"))
    no_generate(p)
    p.add_argument("--keep", action="store_true", help="leave the environment running afterwards")
    p.add_argument("--yes", action="store_true", help="do not ask before changing AWS")
    pytest_args(p)
    return parser


def _silence_stdout() -> None:
    """After EPIPE on stdout: point it at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def _sigterm_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """argparse, except that everything after the first ``--`` goes to the command's pass-through list.

    argparse alone refuses ``kafkanet test SPEC --target aws -- -k foo``: a
    ``nargs="*"`` positional is consumed (empty) before the option, so the
    words after ``--`` are left over.
    """
    if "--" not in argv:
        return parser.parse_args(argv)
    cut = argv.index("--")
    args = parser.parse_args(argv[:cut])
    dest = getattr(args, "after_double_dash", None)
    if dest is None:
        parser.error(f"kafkanet {args.command} takes nothing after --: {shlex.join(argv[cut + 1:])}")
    setattr(args, dest, [*getattr(args, dest), *argv[cut + 1:]])
    return args


def main(argv: list[str] | None = None) -> int:
    # paramiko logs a "Socket exception: Bad file descriptor" from its reader thread when a
    # connection is closed under it (a race in Transport.close); failures that matter reach
    # us as exceptions, so its records must not fall through to logging's stderr fallback.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else list(argv))
    from generator.environment import progress

    progress.configure(verbose=args.verbose)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so teardown in finally blocks runs.
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return args.handler(args)
    except KafkanetError as exc:
        _print_problems(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("kafkanet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kafkanet ssh ... | head`: the reader has all it wanted
        _silence_stdout()
        return 128 + signal.SIGPIPE  # what a shell pipeline reports
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
