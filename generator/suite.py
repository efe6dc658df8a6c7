"""Run the integration suite (integration/) against an applied environment."""

from __future__ import annotations

import subprocess
import sys

from generator.lifecycle import Env, say
from generator.spec import PROJECT_ROOT

# pytest exit codes -> kafkanet's: 0 passed; 1 tests failed; 2 interrupted; 3 internal
# error; 4 usage error; 5 no tests collected (a suite that checks nothing is a failure).
_EXIT = {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 1}


def run_suite(env: Env, pytest_args: list[str] | None = None) -> int:
    reports = env.build_dir / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pytest",
        str(PROJECT_ROOT / "integration"),
        "--rootdir", str(PROJECT_ROOT),
        "-p", "no:cacheprovider",
        "--inventory", str(env.inventory_path.resolve()),
        "--junitxml", str((reports / "integration.xml").resolve()),
        *(pytest_args or []),
    ]
    say(f"integration suite: {' '.join(argv[3:])}")
    rc = subprocess.run(argv, cwd=PROJECT_ROOT).returncode
    if rc == 5:
        say("integration suite collected no tests: that is a failure, not a pass")
    return _EXIT.get(rc, 1)
