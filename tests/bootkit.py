"""Helpers for the tests that run the boot scripts and units of the user data for real.

Everything here works in a temporary directory or in a throw-away network
namespace named ``kntest_<random>`` that is always deleted; nothing touches
the machine's own network namespace (the project's network safety rule).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from generator.module.generate import render_for
from generator.module.loaded import load
from tests.conftest import SEED

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P test"


def cloud_configs(spec_path: Path | str = SEED) -> dict[str, dict]:
    """{user-data file stem: parsed cloud-config} of the module rendered from spec_path."""
    files = render_for(load(spec_path), KEY)
    return {
        Path(name).stem: yaml.safe_load(text)
        for name, text in files.items()
        if name.startswith("user-data/")
    }


def written(cloud: dict, path: str) -> dict:
    """The write_files entry for path; fails the test, naming what is there, when it is missing."""
    entries = cloud.get("write_files") or []
    for entry in entries:
        if entry["path"] == path:
            return entry
    raise AssertionError(f"{path} is not in the user data's write_files: {[e['path'] for e in entries]}")


def install(entry: dict, where: Path) -> Path:
    """Write a write_files entry to a file under where (named after its path), with its mode."""
    target = where / entry["path"].strip("/").replace("/", "_")
    target.write_text(entry["content"])
    target.chmod(int(str(entry.get("permissions", "0644")), 8))
    return target


def stub(folder: Path, name: str, body: str) -> Path:
    """An executable bash script folder/name (a stand-in put first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/bash\n" + body.strip() + "\n")
    path.chmod(0o755)
    return path


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (it creates a throw-away network namespace)")
    if shutil.which("ip") is None:
        pytest.fail("ip (iproute2) is not installed; run `make install`")


@contextlib.contextmanager
def scratch_netns() -> Iterator[str]:
    """A new network namespace kntest_<random> with loopback up; always deleted afterwards."""
    require_root()
    name = f"kntest_{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=10)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
