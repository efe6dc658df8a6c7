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


def _minutes(text: str) -> int:
    """``90m``, ``2h`` or ``1h30m`` (or plain minutes) as whole minutes."""
    import re

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m?)?", text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 60m, 2h or 1h30m")
    minutes = int(match[1] or 0) * 60 + int(match[2] or 0)
    if minutes < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a run needs at least a minute")
    return minutes


def cmd_iam_policy(args: argparse.Namespace) -> int:
    from generator.base.files import write_atomic
    from generator.module import iampolicy
    from generator.module.loaded import load

    loaded = load(args.spec)
    github = args.github_repo or args.github_ref or args.github_environment
    trust = None
    if github:
        if not args.github_repo:
            raise UserError("--github-ref and --github-environment pin the role to a repository: add "
                            "--github-repo OWNER/REPO")  # fmt: skip
        if not args.account_id:
            raise UserError("the trust policy names your account's GitHub OIDC provider: add --account-id "
                            "(aws sts get-caller-identity --query Account --output text)")  # fmt: skip
        trust = iampolicy.GitHubTrust(args.github_repo, args.account_id, args.github_ref, args.github_environment)
    elif args.document == "trust":
        raise UserError("--document trust needs --github-repo OWNER/REPO and --github-ref REF or "
                        "--github-environment NAME, and --account-id")  # fmt: skip
    seconds = iampolicy.session_seconds(args.max_duration)
    policy = iampolicy.permissions_policy(loaded)
    without = tuple(args.without or ())
    if without and args.document != "moto":
        raise UserError("--without leaves actions out of the moto rendering only: add --document moto")
    documents = {
        "permissions": policy,
        "moto": iampolicy.moto_rendering(policy, without),
        "trust": iampolicy.trust_policy(trust, loaded.spec.region) if trust else None,
    }
    if args.out_dir is None:
        print(json.dumps(documents[args.document], indent=2))
        return 0
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {out}: exists and is not a directory; give a directory")
    files = {"permissions-policy.json": policy}
    if trust is not None:
        files["trust-policy.json"] = documents["trust"]
    for name, document in files.items():
        if (out / name).exists() and not args.force:
            raise UserError(f"{out / name} exists; pass --force to overwrite it")
    for name, document in files.items():
        write_atomic(out / name, json.dumps(document, indent=2) + "\n")
        print(f"wrote {out / name}")
    print(f"role session: {seconds} s (--max-duration {args.max_duration}m, destroy "
          f"{iampolicy.DESTROY_BUDGET_MIN}m, setup {iampolicy.SETUP_BUDGET_MIN}m, whole hours)")
    if trust is not None:
        print(f"the role accepts tokens whose sub is {trust.subject}; an administrator creates it once with:")
        for line in iampolicy.create_role_commands(loaded, trust, str(out), seconds):
            print(f"  {line}")
    return 0


def cmd_ci_github(args: argparse.Namespace) -> int:
    from generator.module import workflow
    from generator.module.loaded import load, spec_label

    loaded = load(args.spec)
    options = workflow.Options(
        spec_arg=args.spec_path or spec_label(loaded.path),
        max_duration_min=args.max_duration,
        schedule=args.schedule,
        sweep_schedule=args.sweep_schedule,
        role_secret=args.role_secret,
        environment=args.github_environment,
        install=args.install,
    )
    text = workflow.render_github(loaded, options)
    out = Path(args.output) if args.output else workflow.default_path(loaded)
    workflow.write(out, text, force=args.force)
    print(f"wrote {out}: nightly `kafkanet e2e {options.spec_arg} --target aws` at '{options.schedule}', "
          f"sweeper at '{options.sweep_schedule}'; the role comes from secrets.{options.role_secret}")
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

    env = _env(args)
    inventory = read_inventory(env)
    require_root_for_local(env)
    return access.tunnel(inventory, args.port, say)


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
    p = add("iam-policy", cmd_iam_policy, "the least-privilege IAM policy the nightly (e2e and sweep) needs on AWS, "
            "and the trust policy of its GitHub OIDC role")  # fmt: skip
    p.add_argument("--document", choices=("permissions", "trust", "moto"), default="permissions",
                   help="what to print: the role's permissions (default), its GitHub trust policy, or the "
                        "Resource \"*\" rendering the local target's moto enforces (KAFKANET_IAM_ENFORCE)")  # fmt: skip
    p.add_argument("--without", action="append", metavar="ACTION",
                   help="with --document moto: leave this action out (repeatable), to see the e2e fail naming it")
    p.add_argument("--github-repo", metavar="OWNER/REPO", help="the repository whose workflow assumes the role")
    p.add_argument("--github-ref", metavar="REF", help="pin the role to this ref, e.g. refs/heads/main")
    p.add_argument("--github-environment", metavar="NAME", help="or pin it to this GitHub environment")
    p.add_argument("--account-id", metavar="ID", help="the AWS account holding the role (12 digits)")
    p.add_argument("--max-duration", type=_minutes, default=60, metavar="DURATION",
                   help="the nightly's `e2e --max-duration` (default 60m); the role's session outlives it plus destroy")
    p.add_argument("-o", "--out-dir", metavar="DIR",
                   help="write permissions-policy.json (and trust-policy.json) here and print the commands "
                        "that create the role")  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite files in --out-dir")
    ci = sub.add_parser("ci", help="CI workflows for the nightly e2e on AWS", description="CI workflows for the "
                        "nightly e2e on AWS")  # fmt: skip
    ci_sub = ci.add_subparsers(dest="ci_command", required=True, metavar="SYSTEM")
    p = ci_sub.add_parser("github", help="write a GitHub Actions workflow: the nightly e2e and a sweeper",
                          description="write a GitHub Actions workflow: the nightly e2e on AWS through an OIDC role, "
                          "and a sweeper on its own schedule")  # fmt: skip
    p.add_argument("spec", metavar="SPEC", help="spec YAML path, or an environment name under environments/")
    p.set_defaults(handler=cmd_ci_github)
    p.add_argument("-o", "--output", metavar="PATH",
                   help="the workflow file (default .github/workflows/kafkanet-nightly-<name>.yml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing workflow file")
    p.add_argument("--spec-path", metavar="PATH",
                   help="how the workflow names the spec, relative to the repository root (default: SPEC as given)")
    p.add_argument("--max-duration", type=_minutes, default=60, metavar="DURATION",
                   help="`e2e --max-duration` (default 60m); job time limit and role session are derived from it")
    p.add_argument("--schedule", default="17 18 * * *", metavar="CRON",
                   help="when the nightly runs, UTC cron (default '17 18 * * *': 03:17 in Seoul)")
    p.add_argument("--sweep-schedule", default="41 */12 * * *", metavar="CRON",
                   help="when the sweeper runs (default '41 */12 * * *')")
    p.add_argument("--role-secret", default="KAFKANET_AWS_ROLE_ARN", metavar="NAME",
                   help="the repository secret holding the role's ARN (default KAFKANET_AWS_ROLE_ARN)")
    p.add_argument("--github-environment", metavar="NAME",
                   help="run the jobs in this GitHub environment (match `iam-policy --github-environment`)")
    p.add_argument("--install", default=".", metavar="REQUIREMENT",
                   help="what the jobs `pip install` to get kafkanet (default '.': the repository itself; "
                        "e.g. 'kafkanet==0.1.0' or a wheel's URL)")  # fmt: skip
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
    p = targeted("tunnel", cmd_tunnel, "a SOCKS5 port on 127.0.0.1 through the bastion, for Kafka clients here")
    p.add_argument("--port", type=_port, default=0, metavar="N", help="local port (default 0: a free one)")
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
