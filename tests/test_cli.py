"""Behaviour of the command line itself, whatever the command."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT
from tests.envs import KAFKANET


def test_a_reader_that_stops_early_gets_no_traceback():
    # the reader closes its end at once: every write of kafkanet's hits EPIPE
    run = subprocess.run(
        f"{KAFKANET} cost ttareungyi --json | (exec 0<&-; sleep 1); echo rc=${{PIPESTATUS[0]}} >&2",
        shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert run.stderr.strip() == "rc=141", run.stderr
