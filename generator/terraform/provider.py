"""One AWS provider process shared by every terraform command of a local-target run.

terraform starts the provider plugin afresh for each phase of each command
(schema, validate, plan walk, apply walk): a cycle of the seed environment
started 12 of them, each paying ~1-2 s of CPU for start-up and its schema. On
the local target kafkanet instead starts the provider once per kafkanet command
in its debug mode and hands terraform ``TF_REATTACH_PROVIDERS``, so every
terraform run of that command reattaches to the same process (measured when it
was an experiment: apply -2.5 s, destroy -4 s, a plan -1.5 s; bench/README.md has
the before/after of the whole local cycle).

The process runs in its own session with the moto environment (fake
credentials, endpoints on 127.0.0.1). Its pid is recorded under the build
directory (``.kafkanet/provider/``) before anything else happens, so a crashed
kafkanet's provider is found and stopped by the next apply or by destroy.
The real AWS target does not use this: terraform manages its provider itself.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from generator.base.errors import InfraError
from generator.base.files import write_atomic
from generator.base.procs import cmdline, poll, read_int, terminate
from generator.terraform import tfcli

PID_FILE = "provider.pid"
REATTACH_FILE = "reattach.json"
SCRATCH_FILE = "scratch"  # the provider's TMPDIR, where its socket lives
LOG_FILE = "provider.log"
STARTUP_BUDGET = 60.0  # ~0.4 s when idle; the schema load is CPU-bound on a busy 2-core machine
STOP_BUDGET = 10.0
SCRATCH_PREFIX = "kn-provider-"
_REATTACH = re.compile(r"TF_REATTACH_PROVIDERS='(\{.*?\})'")
_BINARY_PREFIX = f"terraform-provider-{tfcli.PROVIDER_TYPE}_v"


def binary() -> Path | None:
    """The provider executable in the offline mirror; None without a mirror or when it is packed (zip)."""
    mirror = tfcli.find_mirror()
    return tfcli.unpacked_provider(mirror) if mirror is not None else None


def _is_our_provider(pid: int) -> bool:
    argv = cmdline(pid)
    return bool(argv) and Path(argv[0]).name.startswith(_BINARY_PREFIX) and "-debug" in argv


def start(state_dir: Path, env: Mapping[str, str], executable: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the provider in debug mode; return it and its ``TF_REATTACH_PROVIDERS`` value."""
    state_dir.mkdir(parents=True, exist_ok=True)
    stop_recorded(state_dir)  # a crashed run's provider
    log_path = state_dir / LOG_FILE
    # A custom CA bundle makes the provider's second ConfigureProvider in one
    # process fail ("unable to add custom RootCAs HTTPClient"); moto is plain
    # HTTP on 127.0.0.1 and needs none.
    provider_env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
    # its socket goes in a scratch directory of its own, removed on stop even after a SIGKILL
    scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
    write_atomic(state_dir / SCRATCH_FILE, f"{scratch}\n")
    provider_env["TMPDIR"] = scratch
    try:
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(executable), "-debug"], cwd=state_dir, env=provider_env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
    except OSError as exc:
        _stop(state_dir, None, None)
        raise InfraError(f"cannot start the AWS provider {executable}: {exc.strerror}") from None
    write_atomic(state_dir / PID_FILE, f"{proc.pid}\n")  # first: a crash from here on is cleaned up
    found: list[str] = []

    def announced() -> bool:
        if proc.poll() is not None:
            return True
        match = _REATTACH.search(log_path.read_text(encoding="utf-8", errors="replace"))
        if match:
            found.append(match.group(1))
        return bool(found)

    poll(STARTUP_BUDGET, announced, interval=0.05)
    if not found:
        what = f"exited with code {proc.returncode}" if proc.poll() is not None else f"said nothing in {STARTUP_BUDGET:g}s"
        _stop(state_dir, proc.pid, proc)
        raise InfraError(f"the AWS provider (debug mode) {what} instead of printing TF_REATTACH_PROVIDERS; see {log_path}")
    write_atomic(state_dir / REATTACH_FILE, found[0] + "\n")
    return proc, found[0]


def _stop(state_dir: Path, pid: int | None, proc: subprocess.Popen[bytes] | None) -> None:
    if pid is not None and (proc is not None or _is_our_provider(pid)):
        terminate(pid, STOP_BUDGET, proc, sig=signal.SIGINT)  # SIGINT is its clean shutdown
    scratch = Path((state_dir / SCRATCH_FILE).read_text(encoding="utf-8").strip()) \
        if (state_dir / SCRATCH_FILE).exists() else None
    if scratch is not None and scratch.name.startswith(SCRATCH_PREFIX):
        shutil.rmtree(scratch, ignore_errors=True)  # with the socket a SIGKILL leaves behind
    for name in (PID_FILE, REATTACH_FILE, SCRATCH_FILE):
        (state_dir / name).unlink(missing_ok=True)


def stop_recorded(state_dir: Path) -> bool:
    """Stop the provider ``state_dir`` records, if it still runs; True if one did.

    A pid that now belongs to another program is never signalled.
    """
    pid = read_int(state_dir / PID_FILE)
    running = pid is not None and _is_our_provider(pid)
    _stop(state_dir, pid, None)
    return running


@contextlib.contextmanager
def shared(state_dir: Path, env: Mapping[str, str]) -> Iterator[str | None]:
    """A provider for the duration of the block; yields its ``TF_REATTACH_PROVIDERS`` value,
    or None without an unpacked mirror (terraform then starts its own, as usual)."""
    executable = binary()
    if executable is None:
        yield None
        return
    proc, reattach = start(state_dir, env, executable)
    try:
        yield reattach
    finally:
        _stop(state_dir, proc.pid, proc)
