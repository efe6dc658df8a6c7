"""The `kafkanet` command line.

Errors of the KafkanetError family are caught here, in one place: one line per
problem on stderr, and the family's exit code (generator/base/errors.py: 2 user
error, 3 infrastructure, 4 leftovers; 1 is failed checks). Anything else is a
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
from generator.base.errors import EXIT_CODES, INTERRUPTED, KafkanetError, UserError

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
    """A duration (``60m``, ``2h``, ``1h30m``; see :func:`_duration`) in whole minutes, rounded up."""
    return -(-int(_duration(text)) // 60)


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


def _env(args: argparse.Namespace, stamp=None):
    from generator.environment.session import for_run, open_env

    env = open_env(args.spec, args.target)
    env.loaded = _admin_cidrs(env.loaded, args, env.target)
    run_id = getattr(args, "run_id", None)
    return for_run(env, run_id, stamp) if run_id is not None else env


def _duration(text: str) -> float:
    """``45m``, ``12h``, ``90s``, ``1h30m`` or plain seconds → seconds."""
    import re

    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; use e.g. 45m, 12h, 1h30m or 90s")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be longer than 0 s")
    return float(total)


def _finish_command(args: argparse.Namespace, env) -> str:
    """The command that finishes a teardown kafkanet could not."""
    run = f" --run-id {args.run_id}" if getattr(args, "run_id", None) else ""
    yes = " --yes" if env.target == "aws" else ""
    return f"kafkanet destroy {shlex.quote(args.spec)} --target {env.target}{run}{yes}"


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


def _save_diagnostics(env, why: str) -> None:
    """Before anything is destroyed: each host's evidence under the build directory, path printed.

    Best effort: a failure to collect is reported and never changes the exit code."""
    from generator.environment.diagnostics import collect
    from generator.environment.session import say

    say(f"{why}: saving each host's evidence before anything is destroyed ...")
    bastion = None
    try:
        runner, hosts = None, None
        if env.target == "aws":  # through the bastion; the local target reads its namespaces directly
            from generator.access import commands as access
            from generator.environment.apply import read_inventory

            inventory = read_inventory(env)
            hosts = [h.name for h in access.hosts(inventory)]
            bastion = access.connect(inventory)

            def runner(host: str, command: str, timeout: float) -> tuple[int, str]:
                result = bastion.run(host, command, timeout)
                return result.rc, result.stdout + result.stderr

        diag = collect(env, runner, hosts)
    except (KafkanetError, OSError) as exc:
        say(f"diagnostics not saved: {exc}")
        return
    finally:
        if bastion is not None:
            bastion.close()
    missing = f"; {len(diag.problems)} item(s) could not be read (see summary.txt)" if diag.problems else ""
    say(f"diagnostics: {diag.path} ({len(diag.files)} files{missing})")


def cmd_diagnose(args: argparse.Namespace) -> int:
    from generator.environment.apply import read_inventory

    env = _env(args)
    read_inventory(env)  # refuses the other target, says when nothing is applied
    if env.target == "local":
        from generator.environment.session import require_root_for_local

        require_root_for_local(env)
    _save_diagnostics(env, "diagnose")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from generator.environment.apply import read_inventory
    from generator.environment.suite import run_suite

    env = _env(args)
    read_inventory(env)  # refuses the other target, says when nothing is applied
    rc = run_suite(env, args.pytest_args)
    if rc == 1:
        _save_diagnostics(env, "checks failed")
    return rc


#: e2e's resources expire this long after --max-duration (or the default run time) for `kafkanet sweep`.
RUN_GRACE_SECONDS = 3600.0
DEFAULT_RUN_SECONDS = 3 * 3600.0


def cmd_e2e(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from generator.base.errors import INFRA_ERROR
    from generator.environment.apply import apply
    from generator.environment.session import DeadlineReached, Timings, deadline, say
    from generator.environment.suite import run_suite
    from generator.module.runstamp import RunStamp, format_time, new_run_id

    if args.run_id is None:
        args.run_id = new_run_id()
    lifetime = timedelta(seconds=(args.max_duration or DEFAULT_RUN_SECONDS) + RUN_GRACE_SECONDS)
    stamp = RunStamp.starting_now(args.run_id, lifetime)
    env = _env(args, stamp)
    say(f"run {args.run_id}: environment {env.name} in {env.build_dir} "
        f"(tagged kafkanet:run-id, expires {format_time(stamp.expires_at)})")  # fmt: skip
    timings = Timings()
    rc = 1
    stopped: str | None = None  # "interrupted" or the --max-duration line
    failure: KafkanetError | None = None
    finish = _finish_command(args, env)
    try:  # teardown is registered before anything is applied
        try:
            with deadline(args.max_duration):
                apply(env, generate_module=not args.no_generate, yes=args.yes, check=not args.no_check,
                      timings=timings)  # fmt: skip
                start = time.perf_counter()
                rc = run_suite(env, args.pytest_args)
                timings.steps.append(("integration suite", time.perf_counter() - start))
        except KeyboardInterrupt:
            stopped = "interrupted"
            say("interrupted: tearing down before exiting (interrupting the teardown says what that would do)")
        except DeadlineReached:
            stopped = f"--max-duration {args.max_duration:.0f} s reached"
            say(f"{stopped}: stopped the run, tearing down")
        except KafkanetError as exc:
            failure = exc
            _print_problems(exc)  # now, before teardown's lines; teardown's own failure outranks it
        # before destroy: the evidence of a failed check (or of a run that ran out of time)
        if failure is None and stopped != "interrupted" and (rc == 1 or stopped) and env.inventory_path.exists():
            _save_diagnostics(env, "checks failed" if stopped is None else stopped)
    except KeyboardInterrupt:  # while saving diagnostics: skip them, tear down
        stopped = "interrupted"
        say("interrupted: tearing down before exiting (interrupting the teardown says what that would do)")
    finally:
        _e2e_teardown(args, env, timings, finish, stopped, failure, rc)
    if failure is not None:
        return failure.exit_code
    if stopped == "interrupted":
        raise KeyboardInterrupt
    if stopped is not None:
        print(f"kafkanet: error: e2e stopped: {stopped} before the suite finished; raise --max-duration "
              "or find what is slow in the step timings", file=sys.stderr)  # fmt: skip
        return INFRA_ERROR
    return rc


def _e2e_teardown(args, env, timings, finish: str, stopped: str | None, failure, rc: int) -> None:
    from generator.environment.destroy import teardown
    from generator.environment.session import say

    try:
        if args.keep:
            say(f"--keep: {env.name} (run {args.run_id}) left running; remove it with `{finish}`")
        else:
            teardown(env, finish=finish, timings=timings)
    finally:
        verdict = ("interrupted" if stopped == "interrupted" else "stopped" if stopped else
                   "passed" if failure is None and rc == 0 else "FAILED")  # fmt: skip
        say(f"e2e {verdict} (run {args.run_id}): {timings.summary()}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from generator.base.errors import InfraError
    from generator.environment import sweep

    older = timedelta(seconds=args.older_than) if args.older_than else None
    results = sweep.run(args.target, args.region, older, args.yes)
    if (empty := sweep.nothing_found(results)) is not None:
        print(empty)
    total = sum(len(r.found) for r in results)
    errors = [e for r in results for e in r.errors]
    if not args.yes:
        print(f"kafkanet: sweep dry run: {total} resource(s) would be deleted; nothing was. "
              "Pass --yes to delete them", file=sys.stderr)  # fmt: skip
        return 0
    deleted = sum(sum(r.deleted.values()) for r in results)
    per_kind = ", ".join(f"{k} {sum(r.deleted[k] for r in results)}" for k in sweep.KINDS
                         if any(r.deleted[k] for r in results))  # fmt: skip
    print(f"kafkanet: sweep deleted {deleted} of {total} resource(s){': ' + per_kind if per_kind else ''}",
          file=sys.stderr)  # fmt: skip
    if errors:
        raise InfraError(*(f"sweep: {e}" for e in errors), "run `kafkanet sweep` again: it picks up what is left")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kafkanet",
        description="Kafka on EC2 behind a NAT instance: spec → Terraform → apply → checked network.",
        epilog="exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    def run_id(p: argparse.ArgumentParser, help_: str) -> argparse.ArgumentParser:
        p.add_argument("--run-id", metavar="ID", help=help_)
        return p

    of_run = "the e2e run (`kafkanet e2e --run-id`/--keep printed it): its environment <name>-<ID>"
    pytest_args(run_id(targeted("test", cmd_test, "run the integration suite against the applied environment"),
                       of_run))  # fmt: skip
    p = run_id(targeted("destroy", cmd_destroy, "destroy; the local target also removes every namespace and process"),
               of_run)  # fmt: skip
    p.add_argument("--yes", action="store_true", help="do not ask before destroying on AWS")
    run_id(targeted("diagnose", cmd_diagnose, "save each host's evidence (logs, rulesets, routes, configs) under "
                    "build/<name>/diagnostics/, as e2e does when a check fails"), of_run)  # fmt: skip
    p = run_id(targeted("ssh", cmd_ssh, "a shell, or a command, on the bastion or a broker (through the bastion)"),
               of_run)  # fmt: skip
    p.add_argument("host", metavar="HOST", help="bastion, broker-N, or a broker's private IP")
    p.add_argument("remote_command", nargs="*", metavar="COMMAND",
                   help="after --: run this instead of a shell (words joined with spaces, as ssh does); "
                        "exits with its status")  # fmt: skip
    p.set_defaults(after_double_dash="remote_command")
    p = targeted("tunnel", cmd_tunnel, "a SOCKS5 port on 127.0.0.1 through the bastion, for Kafka clients here")
    p.add_argument("--port", type=_port, default=0, metavar="N", help="local port (default 0: a free one)")
    p = admin_cidr(targeted("e2e", cmd_e2e, "apply, test, destroy; teardown always runs unless --keep"))
    no_generate(p)
    p.add_argument("--keep", action="store_true", help="leave the environment running afterwards (prints its run id)")
    p.add_argument("--yes", action="store_true", help="do not ask before changing AWS")
    run_id(p, "this run's id, 1-8 lowercase letters or digits (default: 6 random hex digits): the environment "
              "is <name>-<ID> with its own build directory and state key, every resource tagged "
              "kafkanet:run-id/created-at/expires-at (for `kafkanet sweep`)")  # fmt: skip
    p.add_argument(
        "--max-duration", type=_duration, metavar="DURATION",
        help="e.g. 45m: when apply + suite have run this long, stop and tear down (exit 3); "
             "teardown itself is not cut short. Resources expire DURATION (default 3h) + 1h after the start",
    )  # fmt: skip
    pytest_args(p)
    p = sub.add_parser(
        "sweep", help="delete what killed e2e runs left: resources tagged kafkanet:run-id past kafkanet:expires-at",
        description="delete, in dependency order, what killed e2e runs left behind: only resources tagged "
        "kafkanet:run-id (e2e sets it; `apply` never does) whose kafkanet:expires-at has passed. A dry run "
        "(the list and a count per type) unless --yes",
    )  # fmt: skip
    p.add_argument("--target", choices=("local", "aws"), default="local",
                   help="aws: the default credential chain; local: the moto server of every environment "
                        "under the build root (never anything else)")  # fmt: skip
    p.add_argument("--region", metavar="R", help="the AWS region (default: AWS_REGION / your config; "
                   "local: every region)")  # fmt: skip
    p.add_argument("--older-than", type=_duration, metavar="DURATION",
                   help="e.g. 12h: only those also created longer ago than this (narrows, never widens)")
    p.add_argument("--yes", action="store_true", help="delete them (default: only list them)")
    p.set_defaults(handler=cmd_sweep)
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
        return INTERRUPTED
    except BrokenPipeError:  # `kafkanet ssh ... | head`: the reader has all it wanted
        _silence_stdout()
        return 128 + signal.SIGPIPE  # what a shell pipeline reports
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
