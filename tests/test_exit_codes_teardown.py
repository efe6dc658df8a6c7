"""A teardown that a second interrupt cannot silently abandon (a real `kafkanet e2e` on the local target).

Ctrl-C during the suite starts the teardown; an interrupt during the teardown
only says what is going on and what another would do; the next abandons it:
terraform is stopped, what remains is listed with the command that finishes
the job, and the exit code is 4 (leftovers). That command then removes it all.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import ROOT
from tests.envs import (
    KAFKANET,
    e2e_env,
    e2e_spec,
    machine_leftovers,
    moto_alive,
    needs_root,
)

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]


class _Reader:
    """The subprocess's merged output, read on a thread so waits are bounded."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, pattern: str, budget: float) -> str:
        deadline = time.monotonic() + budget
        with self._cond:
            while True:
                for line in self.lines:
                    if re.search(pattern, line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} within {budget} s:\n{self.text()[-3000:]}")
                self._cond.wait(left)

    def text(self) -> str:
        return "".join(self.lines)


@pytest.mark.slow(seconds=110)
def test_a_second_interrupt_during_teardown_is_answered_and_a_third_lists_the_leftovers(tmp_path):
    needs_root()
    name, spec = e2e_spec(tmp_path, "ab")
    env = e2e_env(tmp_path)
    run_id = "t" + name[-5:]
    proc = subprocess.Popen([str(KAFKANET), "e2e", str(spec), "--run-id", run_id], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = _Reader(proc)
    finished = False
    try:
        out.wait_for(r"integration suite: ", 400)
        time.sleep(3)  # the line comes just before the suite's process starts: press Ctrl-C once it runs
        proc.send_signal(signal.SIGINT)  # Ctrl-C during the suite: teardown starts
        out.wait_for(r"kafkanet: terraform destroy \.\.\.", 120)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # during teardown: answered, not obeyed
        out.wait_for(r"teardown of .* in progress: .*Interrupt again to abandon it", 30)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)  # abandons it
        rc = proc.wait(timeout=180)
        time.sleep(0.5)
        text = out.text()
        assert rc == 4, text[-3000:]
        assert "teardown abandoned: listing what remains" in text, text[-3000:]
        listed = re.search(r"teardown abandoned; (\d+) resource\(s\) tagged kafkanet:env=(\S+) remain", text)
        assert listed and int(listed.group(1)) > 0 and listed.group(2) == f"{name}-{run_id}", text[-3000:]
        ids = re.findall(r"^kafkanet: error:\s+((?:i|vpc|subnet|rtb|igw|sg|eni|vol|eipalloc|key)-\w+)$", text, re.M)
        assert len(ids) == int(listed.group(1)), text[-3000:]
        finish = re.search(r"finish the teardown with: (kafkanet destroy .*)$", text, re.M)
        assert finish and f"--run-id {run_id}" in finish.group(1), text[-3000:]
        assert "kafkanet: interrupted\n" not in text  # not the old silent end
        print(text)  # shown with -s: what a user sees
        # the printed command finishes the job
        argv = finish.group(1).split()
        done = subprocess.run([str(KAFKANET), *argv[1:]], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        finished = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not finished:  # whatever failed above, the environment goes
            subprocess.run([str(KAFKANET), "destroy", str(spec), "--run-id", run_id], env=env, cwd=ROOT,
                           capture_output=True, timeout=300)
    assert machine_leftovers(name) == []
    assert not moto_alive(tmp_path / "build" / name)
