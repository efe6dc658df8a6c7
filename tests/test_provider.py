"""The shared AWS provider of a local-target command: started once, always stopped, found after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from generator.base.errors import InfraError
from generator.base.procs import cmdline
from generator.terraform import provider

pytestmark = pytest.mark.terraform


def _alive(pid: int) -> bool:
    return cmdline(pid) is not None


def _socket(reattach: str) -> Path:
    (config,) = json.loads(reattach).values()
    assert config["Addr"]["Network"] == "unix"
    return Path(config["Addr"]["String"])


def test_shared_provider_serves_the_block_and_is_gone_after_it(tmp_path):
    state = tmp_path / "provider"
    with provider.shared(state, dict(os.environ)) as reattach:
        assert reattach is not None
        (config,) = json.loads(reattach).values()
        pid = config["Pid"]
        assert _alive(pid) and Path(cmdline(pid)[0]).name.startswith("terraform-provider-aws_v")
        assert (state / provider.PID_FILE).read_text().strip() == str(pid)
        assert _socket(reattach).is_socket()
    assert not _alive(pid)
    assert not _socket(reattach).parent.exists()  # its scratch TMPDIR, socket and all
    assert not any((state / name).exists() for name in (provider.PID_FILE, provider.REATTACH_FILE, provider.SCRATCH_FILE))


def test_shared_provider_is_stopped_when_the_block_raises(tmp_path):
    state = tmp_path / "provider"
    with pytest.raises(RuntimeError), provider.shared(state, dict(os.environ)) as reattach:
        pid = json.loads(reattach)[next(iter(json.loads(reattach)))]["Pid"]
        raise RuntimeError("terraform failed")
    assert not _alive(pid)


def test_a_crashed_runs_provider_is_stopped_from_its_record(tmp_path):
    state = tmp_path / "provider"
    executable = provider.binary()
    assert executable is not None, "the offline mirror is unpacked on these machines"
    proc, reattach = provider.start(state, dict(os.environ), executable)
    try:
        # kafkanet dies here; the next destroy (or apply) only has the record
        assert provider.stop_recorded(state) is True
        assert proc.wait(timeout=5) is not None
        assert not _socket(reattach).parent.exists()
        assert provider.stop_recorded(state) is False  # records are gone
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_reused_pid_is_never_signalled(tmp_path):
    state = tmp_path / "provider"
    state.mkdir()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (state / provider.PID_FILE).write_text(f"{bystander.pid}\n")
        assert provider.stop_recorded(state) is False
        assert bystander.poll() is None
        assert not (state / provider.PID_FILE).exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_packed_mirror_means_terraform_starts_its_own(tmp_path, monkeypatch):
    monkeypatch.setattr(provider, "binary", lambda: None)
    with provider.shared(tmp_path / "provider", dict(os.environ)) as reattach:
        assert reattach is None
    assert not (tmp_path / "provider").exists()


def test_a_provider_killed_outright_leaves_no_socket_behind(tmp_path):
    state = tmp_path / "provider"
    proc, reattach = provider.start(state, dict(os.environ), provider.binary())
    os.killpg(proc.pid, signal.SIGKILL)  # no clean shutdown: the socket stays
    proc.wait(timeout=5)
    assert _socket(reattach).exists()
    assert provider.stop_recorded(state) is False  # nothing running any more, but its leftovers go
    assert not _socket(reattach).parent.exists()


def _scratch_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(f"{provider.SCRATCH_PREFIX}*"))


def test_a_provider_that_never_announces_itself_is_an_infra_error(tmp_path, monkeypatch):
    fake = tmp_path / "terraform-provider-aws_v5.100.0_x5"
    fake.write_text("#!/bin/sh\necho 'plugin exploded' >&2\nexit 3\n")
    fake.chmod(0o755)
    state = tmp_path / "provider"
    before = _scratch_dirs()
    with pytest.raises(InfraError, match=r"exited with code 3 instead of printing TF_REATTACH_PROVIDERS; see .*provider.log"):
        provider.start(state, dict(os.environ), fake)
    assert "plugin exploded" in (state / provider.LOG_FILE).read_text()
    assert not (state / provider.PID_FILE).exists()
    assert _scratch_dirs() <= before
