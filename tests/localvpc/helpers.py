"""Helpers shared by the local data plane's tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from localvpc import plane, procs, snapshot
from localvpc.results import PlaneInfo

FIXTURES = Path(__file__).with_name("fixtures")
KAFKA_SCRIPT = Path(__file__).with_name("kafka_roundtrip.py")
STARTED_ENVS: set[str] = set()  # torn down again at session finish, whatever happened


def load_snapshot(name: str = "ttareungyi") -> dict:
    return snapshot.load(FIXTURES / f"{name}.json")


def require_root_plane() -> None:
    """Skip without root (nothing to install fixes that); fail when a tool is missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    missing = [tool for tool in plane.TOOLS if shutil.which(tool, path=procs.SAFE_PATH) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}; run `make install` (it installs every test prerequisite)")


def unique_env(tag: str = "") -> str:
    """A fresh environment name for this run (``lt`` + tag + random hex), remembered for cleanup."""
    env = f"lt{tag}{secrets.token_hex(3)}"
    STARTED_ENVS.add(env)
    return env


@dataclass
class Live:
    env: str
    info: PlaneInfo
    key: Path
    state: Path
    ec2: object
    moto_eip: str


def route_table(p, name: str):
    """The route table of plane ``p`` whose Name tag is ``ttareungyi-<name>``."""
    return next(t for t in p.route_tables if t.name == f"ttareungyi-{name}")
