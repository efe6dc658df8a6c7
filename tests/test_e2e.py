"""`kafkanet e2e` interrupted like Ctrl-C mid-apply still tears everything down.

(The passing e2e run is in test_lifecycle.py, beside the session's seed.)
"""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from tests.conftest import ROOT, hears_ctrl_c
from tests.envs import (
    e2e_argv,
    e2e_env,
    e2e_spec,
    machine_leftovers,
    moto_alive,
    needs_root,
)

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]


def test_e2e_interrupted_during_apply_still_tears_down(tmp_path):
    needs_root()
    name, spec = e2e_spec(tmp_path, "ei")
    proc = subprocess.Popen(e2e_argv(spec), env=e2e_env(tmp_path), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=hears_ctrl_c)
    seen = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:  # wait until resources are being created (the live count), then press Ctrl-C
            seen.append(line)
            if re.search(r"terraform apply \.\.\. [1-9]\d*/\d+ resources", line) or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + rest
    assert proc.returncode == 130, out[-3000:]
    assert "kafkanet: interrupted" in out and "moto server stop" in out, out[-3000:]
    # resources terraform lost track of when interrupted are reported, and gone with moto
    assert "e2e interrupted" in out, out[-3000:]
    assert machine_leftovers(name) == []
    assert not moto_alive(tmp_path / "build" / name)
