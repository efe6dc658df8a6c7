"""Run the integration suite (the ``integration`` package) against an applied environment.

The suite is found as an installed package, so ``kafkanet test`` works from a
checkout and from a wheel alike; it runs with its own ``pytest.ini`` and
plugin, never the caller's configuration, and without the pytest plugins that
other installed packages register (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``: the suite
needs none, and hypothesis's alone costs ~1-2 s of imports; a caller who wants
one names it, e.g. ``-- -p xdist``).

Its output reaches stdout line by line as pytest prints it, inside a progress
step (:mod:`generator.environment.progress`): the terminal's live line, or
without a terminal a heartbeat after ``HEARTBEAT`` seconds of silence.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from generator.base.errors import PrerequisiteError
from generator.environment import progress
from generator.environment.session import Env, say

# pytest exit codes -> kafkanet's: 0 passed; 1 tests failed; 2 interrupted; 3 internal
# error; 4 usage error; 5 no tests collected (a suite that checks nothing is a failure).
_EXIT = {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 1}


def suite_dir() -> Path:
    """Where the ``integration`` package lives (the checkout's folder or site-packages)."""
    spec = importlib.util.find_spec("integration")
    if spec is None or not spec.submodule_search_locations:
        raise PrerequisiteError("the integration suite is not installed; reinstall kafkanet (pip install kafkanet)")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def run_suite(env: Env, pytest_args: list[str] | None = None) -> int:
    suite = suite_dir()
    reports = env.build_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pytest",
        "-c", str(suite / "pytest.ini"),
        "-p", "integration.plugin",
        str(suite),
        "--inventory", str(env.inventory_path.resolve()),
        "--junitxml", str((reports / "integration.xml").resolve()),
        # through a pipe pytest would drop its colours: keep them where they would have been
        f"--color={'yes' if _colour() else 'no'}",
        # The suite's output is the verdict, so it is kept: -q drops only pytest's header,
        # leaving a dot per test, the failures and the summary; --verbose names every test.
        "-v" if progress.settings.verbose else "-q",
        *(pytest_args or []),
    ]
    say(f"integration suite: {' '.join(argv[3:])}")
    with progress.activity("integration suite", terraform=False):
        rc = _run(argv)
    if rc == 5:
        say("integration suite collected no tests: that is a failure, not a pass")
    return _EXIT.get(rc, 1)


def _colour() -> bool:
    try:
        return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError):
        return False


#: An interrupted kafkanet gives the suite this long to stop on its SIGINT (its fixtures close
#: their tunnels) before it is killed.
STOP_BUDGET = 10.0


def _run(argv: list[str]) -> int:
    """pytest with its stdout passed through to ours line by line (stderr is left as it is)."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None
        out = sys.stdout
        try:
            for raw in proc.stdout:
                progress.passthrough(raw.decode("utf-8", errors="replace"), out)
            return proc.wait()
        except BaseException:
            _stop(proc)
            raise


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The suite ends before kafkanet goes on to the teardown.

    A Ctrl-C at a terminal reaches the suite as well (one process group), but a
    SIGINT or SIGTERM sent to kafkanet alone (CI, a supervisor) does not: the
    suite would go on probing through the bastion while the environment is
    destroyed under it, and outlive kafkanet."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=STOP_BUDGET)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()
