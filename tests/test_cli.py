"""Behaviour of the command line itself, whatever the command."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.envs import KAFKANET


def test_a_reader_that_stops_early_gets_no_traceback():
    # the reader closes its end at once: every write of kafkanet's hits EPIPE
    run = subprocess.run(
        f"{KAFKANET} cost ttareungyi --json | (exec 0<&-; sleep 1); echo rc=${{PIPESTATUS[0]}} >&2",
        shell=True, executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert run.stderr.strip() == "rc=141", run.stderr


def test_verbose_is_a_global_flag_and_each_command_sets_it(monkeypatch):
    from generator.cli import main
    from generator.environment import progress

    monkeypatch.setattr(progress, "settings", progress.Settings())
    assert main(["-v", "validate", "ttareungyi"]) == 0
    assert progress.settings.verbose
    assert main(["validate", "ttareungyi"]) == 0
    assert not progress.settings.verbose


def test_the_suite_runs_quiet_unless_verbose(monkeypatch, tmp_path):
    from generator.environment import progress, suite
    from generator.environment.session import open_env

    runs = []
    monkeypatch.setattr(suite, "_run", lambda argv: runs.append(argv) or 0)
    monkeypatch.setattr(progress, "settings", progress.Settings(stream=io.StringIO()))
    env = open_env("ttareungyi", "local", build_dir=tmp_path)
    assert suite.run_suite(env, ["-k", "nat"]) == 0
    progress.configure(verbose=True)
    assert suite.run_suite(env) == 0
    assert runs[0][-3:] == ["-q", "-k", "nat"]  # the caller's arguments come last: they win
    assert runs[1][-1] == "-v"


def test_the_suite_output_passes_through_with_heartbeats(monkeypatch, tmp_path, capsys):
    """Without a terminal a silent suite still gets a heartbeat line (CI idle timeouts), and
    pytest's own lines reach stdout whole, in order, with plugin autoloading off."""
    from generator.environment import progress, suite
    from generator.environment.session import open_env

    stream = io.StringIO()
    monkeypatch.setattr(progress, "settings", progress.Settings(stream=stream, tty=False, heartbeat=0.3))
    script = ("import os, sys, time; print('first', flush=True); time.sleep(1.2); "
              "print('plugins off' if os.environ.get('PYTEST_DISABLE_PLUGIN_AUTOLOAD') == '1' else 'plugins on'); "
              "sys.exit(1)")  # fmt: skip
    env = open_env("ttareungyi", "local", build_dir=tmp_path)
    real_run = suite._run
    monkeypatch.setattr(suite, "_run", lambda argv: real_run([sys.executable, "-c", script]))  # a stand-in for pytest
    assert suite.run_suite(env) == 1
    assert capsys.readouterr().out.splitlines() == ["first", "plugins off"]
    beats = [line for line in stream.getvalue().splitlines() if line.startswith("kafkanet: integration suite ... ")]
    assert beats, stream.getvalue()


def test_an_interrupted_kafkanet_stops_the_suite_before_going_on(tmp_path):
    """A SIGINT to kafkanet alone (not its process group) still ends the suite: it must not probe a
    plane that the teardown is removing, nor outlive kafkanet."""
    import signal as _signal
    import threading

    from generator.environment import suite

    pid_file = tmp_path / "suite.pid"
    script = (f"import os, sys, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
              "print('collected', flush=True); time.sleep(60)")  # fmt: skip
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), _signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            suite._run([sys.executable, "-c", script])
    finally:
        timer.cancel()
    assert time.monotonic() - started < suite.STOP_BUDGET, "the suite was not stopped on its SIGINT"
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
