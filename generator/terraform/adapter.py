"""The one adapter around terraform (python-terraform 0.10.1 + our own runner).

python-terraform builds the argument lists (``Terraform.generate_cmd_string`` and
its option vocabulary: ``IsFlagged``, ``IsNotFlagged``, ``no_color`` ->
``-no-color``, lists -> repeated flags). It predates Terraform 1.x, and its
``Popen`` can neither start terraform in its own process group nor tee the output
while keeping it, so processes are run by our own runner
(:mod:`generator.terraform.process`). Its quirks with terraform 1.x, all
handled in this module and nowhere else:

* ``apply()`` only approves with ``skip_plan=True`` (= ``-auto-approve=true``);
  here ``auto_approve=True`` is passed directly.
* ``destroy()`` adds ``-force`` by default, which terraform 1.x rejects; use
  ``force=IsNotFlagged`` and ``auto_approve=True``.
* No directory argument (terraform 1.x removed it): run in ``cwd=working_dir``.
* A ``var`` *dict* becomes a temporary ``-var-file`` (even when empty); variables
  are passed as a list, giving one ``-var=name=value`` each.
* ``output`` returns ``{name: {"value": ..., "type": ..., "sensitive": ...}}``:
  index ``["value"]``. ``output`` and ``validate`` reject ``-input``.

Every command runs with ``-no-color`` (and ``-input=false`` where accepted),
``TF_CLI_CONFIG_FILE`` set to the project's CLI config, ``TF_IN_AUTOMATION=1``
and the checkpoint (update check) disabled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, IsNotFlagged
from python_terraform import Terraform as _PyTerraform

from generator.base.errors import InfraError, PrerequisiteError
from generator.terraform.process import DEFAULT_KILL_GRACE, LineSink, run_process

#: Overall budget per command, seconds (retries included).
DEFAULT_TIMEOUTS: Mapping[str, float] = {
    "init": 180.0,
    "validate": 120.0,
    "fmt": 60.0,
    "plan": 900.0,
    "apply": 2700.0,
    "destroy": 2700.0,
    "output": 120.0,
}


@dataclass(frozen=True)
class TransientError:
    """An error known to go away on its own; the command is retried when seen."""

    name: str
    pattern: re.Pattern[str]


#: The only errors that are retried. State locks are not here on purpose:
#: terraform waits for a held lock itself (``-lock-timeout``).
TRANSIENT_ERRORS: tuple[TransientError, ...] = (
    # The endpoint (moto while it starts or restarts) is not listening yet. The
    # provider has already retried 9 times (~25 s) before giving up.
    TransientError("endpoint refused the connection", re.compile(r"connect: connection refused")),
    # go-plugin's handshake with the 675 MB provider binary on a loaded machine.
    TransientError("provider plugin slow to start", re.compile(r"timeout while waiting for plugin to start")),
)


@dataclass(frozen=True)
class TfResult:
    """What one terraform command did. ``changes`` is set by :meth:`Terraform.plan`."""

    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration: float
    attempts: int = 1
    changes: bool | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 or (self.changes is not None and self.rc == 2)


def stderr_sink(line: str) -> None:
    """Default progress sink: terraform's lines, as they come, on stderr."""
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- errors


_ERROR_RE = re.compile(r"^[│|\s]*Error: (.*\S)")
_WHERE_RE = re.compile(r"^[│|\s]*on (\S+ line \d+)")


def terraform_errors(text: str) -> list[str]:
    """terraform's own ``Error:`` lines, each with its ``on FILE line N`` if given."""
    errors: list[str] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = _ERROR_RE.match(line)
        if match is None:
            continue
        message = f"Error: {match.group(1)}"
        for follow in lines[index + 1 : index + 6]:
            where = _WHERE_RE.match(follow)
            if where is not None:
                message += f" ({where.group(1)})"
                break
            if _ERROR_RE.match(follow):
                break
        if message not in errors:
            errors.append(message)
    return errors


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- adapter


def _var_args(variables: Mapping[str, Any]) -> list[str]:
    """``-var`` values: strings as they are, other types as HCL (JSON) literals."""
    args = []
    for name, value in variables.items():
        if value is None:  # leave the variable at its default (e.g. aws_endpoint = null)
            continue
        if isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        args.append(f"{name}={text}")
    return args


class _ArgvBuilder(_PyTerraform):
    """python-terraform used only to build argument lists: it never runs terraform
    and never reads the state (its constructor would json-load terraform.tfstate
    and crash on an empty or half-written one)."""

    def read_state_file(self, file_path: str | None = None) -> None:
        self.tfstate = None


class Terraform:
    """terraform in one root module directory.

    ``cli_config`` is the project's CLI config (see :func:`generator.terraform.tfcli.write_cli_config`);
    ``None`` leaves terraform's own (the user's ``TF_CLI_CONFIG_FILE`` or ``~/.terraformrc``).
    ``variables`` are passed as ``-var`` to plan/apply/destroy (``None`` values are
    left at their default). ``env`` is merged over the inherited environment;
    a ``None`` value removes the variable (e.g. ``AWS_PROFILE``).
    Progress lines go to ``on_line`` (default: stderr); each result keeps them all.
    Failures raise :class:`InfraError`; a missing binary :class:`PrerequisiteError`.
    """

    def __init__(
        self,
        working_dir: Path | str,
        *,
        cli_config: Path | str | None,
        variables: Mapping[str, Any] | None = None,
        env: Mapping[str, str | None] | None = None,
        binary: str = "terraform",
        on_line: LineSink | None = stderr_sink,
        timeouts: Mapping[str, float] | None = None,
        lock_timeout: str = "60s",
        attempts: int = 2,
        retry_delay: float = 5.0,
        transient: Iterable[TransientError] = TRANSIENT_ERRORS,
        kill_grace: float = DEFAULT_KILL_GRACE,
    ) -> None:
        self.working_dir = Path(working_dir)
        self.cli_config = Path(cli_config) if cli_config is not None else None
        self.variables = dict(variables or {})
        self.extra_env = dict(env or {})
        self.binary = binary
        self.on_line = on_line
        self.timeouts = {**DEFAULT_TIMEOUTS, **(timeouts or {})}
        self.lock_timeout = lock_timeout
        self.attempts = max(1, attempts)
        self.retry_delay = retry_delay
        self.transient = tuple(transient)
        self.kill_grace = kill_grace
        self._argv_builder = _ArgvBuilder(terraform_bin_path=binary)

    # ----------------------------------------------------------------- commands

    def init(self, *, timeout: float | None = None) -> TfResult:
        """``terraform init``. No ``-reconfigure`` (python-terraform's default):
        a changed backend must fail loudly, not silently start from empty state."""
        return self.run(
            "init", timeout=timeout, input=False, no_color=IsFlagged, backend=True,
            reconfigure=IsNotFlagged,
        )

    def validate(self, *, timeout: float | None = None) -> TfResult:
        """``terraform validate`` (needs an init)."""
        return self.run("validate", timeout=timeout, no_color=IsFlagged)

    def fmt_check(self, *, timeout: float | None = None) -> TfResult:
        """``terraform fmt -check``: InfraError naming each badly formatted file."""
        result = self.run(
            "fmt", timeout=timeout, quiet=True, raise_on_error=False,
            check=IsFlagged, no_color=IsFlagged,
        )
        if result.rc != 0:
            files = [line.strip() for line in result.stdout.splitlines() if line.strip()]
            details = terraform_errors(result.stderr) or [f"exit code {result.rc}"]
            where = _display(self.working_dir)
            if files:
                raise InfraError(*(f"terraform fmt -check in {where}: {name} is not formatted" for name in files))
            raise InfraError(f"terraform fmt failed in {where}: {details[0]}", *details[1:])
        return result

    def plan(
        self, *, out: str | None = None, destroy: bool = False, timeout: float | None = None
    ) -> TfResult:
        """``terraform plan -detailed-exitcode``; ``result.changes`` is True on exit 2.

        ``out`` saves the plan (relative to the working dir) for :meth:`apply`.
        """
        result = self.run(
            "plan", ok_codes=(0, 2), timeout=timeout,
            input=False, no_color=IsFlagged, detailed_exitcode=IsFlagged,
            lock_timeout=self.lock_timeout, destroy=IsFlagged if destroy else None,
            out=out, var=_var_args(self.variables),
        )
        return _with_changes(result)

    def apply(self, plan_file: str | None = None, *, timeout: float | None = None) -> TfResult:
        """``terraform apply -auto-approve``, or apply exactly a saved ``plan_file``
        (no ``-var`` then: a saved plan carries its variables)."""
        args = [plan_file] if plan_file else []
        return self.run(
            "apply", *args, timeout=timeout,
            input=False, no_color=IsFlagged, auto_approve=True,
            lock_timeout=self.lock_timeout,
            var=[] if plan_file else _var_args(self.variables),
        )

    def apply_targets(self, targets: Sequence[str], *, timeout: float | None = None) -> TfResult:
        """``terraform apply -auto-approve -target=A -target=B``: only those resources and what they need."""
        return self.run(
            "apply", timeout=timeout,
            input=False, no_color=IsFlagged, auto_approve=True,
            lock_timeout=self.lock_timeout, target=list(targets), var=_var_args(self.variables),
        )

    def destroy(self, *, refresh: bool = True, timeout: float | None = None) -> TfResult:
        """``terraform destroy -auto-approve`` (never ``-force``).

        ``refresh=False`` skips the refresh walk (a describe call per resource,
        and a provider start-up unless the provider is shared); only safe when
        the state is known to match the API (e.g. the local target's own moto
        server, which nothing but terraform changes).
        """
        return self.run(
            "destroy", timeout=timeout,
            input=False, no_color=IsFlagged, force=IsNotFlagged, auto_approve=True,
            refresh=None if refresh else False,
            lock_timeout=self.lock_timeout, var=_var_args(self.variables),
        )

    def outputs(self, *, timeout: float | None = None) -> dict[str, Any]:
        """All outputs as ``{name: value}`` (``{}`` before the first apply)."""
        result = self.run("output", timeout=timeout, quiet=True, json=IsFlagged, no_color=IsFlagged)
        text = result.stdout.lstrip()
        try:
            raw = json.loads(text) if text else {}
        except ValueError as exc:
            raise InfraError(
                f"terraform output in {_display(self.working_dir)} did not print JSON: {exc}"
            ) from None
        return {name: entry["value"] for name, entry in raw.items()}

    def output(self, name: str, *, timeout: float | None = None) -> Any:
        """One output's value; InfraError naming it when the state has no such output."""
        values = self.outputs(timeout=timeout)
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise InfraError(
                f"terraform output {name!r} not found in {_display(self.working_dir)} (outputs: {known})"
            )
        return values[name]

    # ------------------------------------------------------------------ running

    def argv(self, command: str, *args: str, **options: Any) -> list[str]:
        """The argument list for ``terraform COMMAND`` in python-terraform's vocabulary."""
        return self._argv_builder.generate_cmd_string(command, *args, **options)

    def environment(self) -> dict[str, str]:
        """The environment terraform runs with."""
        env = dict(os.environ)
        for name, value in self.extra_env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        if self.cli_config is not None:
            env["TF_CLI_CONFIG_FILE"] = str(self.cli_config.resolve())
        env["TF_IN_AUTOMATION"] = "1"
        env["TF_INPUT"] = "0"
        env["CHECKPOINT_DISABLE"] = "1"  # no update check over the internet
        return env

    def run(
        self,
        command: str,
        *args: str,
        ok_codes: Sequence[int] = (0,),
        raise_on_error: bool = True,
        quiet: bool = False,
        timeout: float | None = None,
        **options: Any,
    ) -> TfResult:
        """Run one terraform command with retries of known transient errors.

        ``raise_on_error`` raises InfraError on an exit code outside
        ``ok_codes`` (else the result is returned); a timeout always raises. ``quiet`` keeps the lines out of ``on_line``.
        """
        if self.cli_config is not None and not self.cli_config.is_file():
            raise FileNotFoundError(f"terraform CLI config {self.cli_config} does not exist")
        argv = self.argv(command, *args, **options)
        env = self.environment()
        resolved = shutil.which(self.binary, path=env.get("PATH"))
        if resolved is None:
            raise PrerequisiteError(
                "terraform not found on PATH: install Terraform >= 1.5 "
                "(https://developer.hashicorp.com/terraform/install)"
            )
        argv[0] = resolved
        budget = self.timeouts.get(command, max(DEFAULT_TIMEOUTS.values())) if timeout is None else timeout
        deadline = time.monotonic() + budget
        where = _display(self.working_dir)
        sink = None if quiet else self.on_line
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            remaining = max(0.0, deadline - time.monotonic())
            # Plugins put their unix sockets in TMPDIR; a killed one cannot remove its
            # own, so each run gets a scratch directory that goes with it, whatever happens.
            with tempfile.TemporaryDirectory(prefix="kn-tf-") as scratch:
                outcome = run_process(
                    argv, cwd=self.working_dir, env={**env, "TMPDIR": scratch}, timeout=remaining, sink=sink,
                    kill_grace=self.kill_grace,
                )
            if outcome.timed_out:
                last = _last_line(outcome.stdout + outcome.stderr)
                problems = [
                    f"terraform {command} timed out after {budget:g}s in {where}: "
                    "killed its process group (terraform and its provider plugins)"
                ]
                if last:
                    problems.append(f"last output: {last}")
                raise InfraError(*problems)
            result = TfResult(
                argv=tuple(argv), rc=outcome.rc, stdout=outcome.stdout, stderr=outcome.stderr,
                duration=time.monotonic() - started, attempts=attempt,
            )
            if outcome.rc in ok_codes:
                return result
            reason = self._transient(outcome.stdout + outcome.stderr)
            wait = self.retry_delay * attempt
            if reason is None or attempt >= self.attempts or time.monotonic() + wait >= deadline:
                break
            if sink is not None:
                sink(f"kafkanet: terraform {command} hit a transient error ({reason}); retrying in {wait:g}s")
            time.sleep(wait)  # bounded: at most `attempts` tries within the budget
        if not raise_on_error:
            return result
        errors = terraform_errors(outcome.stderr) or terraform_errors(outcome.stdout)
        if not errors:
            errors = [_last_line(outcome.stderr) or _last_line(outcome.stdout) or f"exit code {outcome.rc}"]
        suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
        failed = InfraError(f"terraform {command} failed in {where}{suffix}: {errors[0]}", *errors[1:])
        failed.diagnostics = outcome.stderr  # type: ignore[attr-defined]  # terraform's own, whole (for the user)
        raise failed

    def _transient(self, text: str) -> str | None:
        for known in self.transient:
            if known.pattern.search(text):
                return known.name
        return None


def _with_changes(result: TfResult) -> TfResult:
    return TfResult(
        argv=result.argv, rc=result.rc, stdout=result.stdout, stderr=result.stderr,
        duration=result.duration, attempts=result.attempts, changes=result.rc == 2,
    )


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""
