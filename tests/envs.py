"""Live environments for the slow tests: copies of the seed under unique names, on the local target."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from generator.cli import main
from generator.environment import session
from generator.localaws import moto_server
from tests.conftest import SEED, require


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the local target builds network namespaces")
    require("terraform")


def _spec_copy(directory: Path, name: str, **replace: str) -> Path:
    text = SEED.read_text().replace("name: ttareungyi", f"name: {name}")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def _cli(build_root: Path, *args: str) -> int:
    old = os.environ.get("KAFKANET_BUILD_ROOT")
    os.environ["KAFKANET_BUILD_ROOT"] = str(build_root)
    try:
        return main(list(args))
    finally:
        if old is None:
            os.environ.pop("KAFKANET_BUILD_ROOT", None)
        else:
            os.environ["KAFKANET_BUILD_ROOT"] = old


class Applied:
    def __init__(self, spec: Path, build_root: Path, name: str) -> None:
        self.spec, self.build_root, self.name = spec, build_root, name
        self.env = session.open_env(str(spec), "local", build_root / name)

    @property
    def inventory(self) -> dict:
        return json.loads(self.env.inventory_path.read_text())

    def ec2(self):
        return moto_server.ec2_client(self.inventory["aws_endpoint"], "ap-northeast-2")

    def cli(self, *args: str) -> int:
        return _cli(self.build_root, *args)


def apply_env(request, tmp_path_factory, prefix: str, **replace: str) -> Applied:
    """Apply a copy of the seed under a unique name; its destroy is registered before the apply."""
    needs_root()
    name = f"{prefix}{secrets.token_hex(3)}"
    work = tmp_path_factory.mktemp(name)
    applied = Applied(_spec_copy(work, name, **replace), work / "build", name)
    # teardown first: whatever happens below, the environment goes
    request.addfinalizer(lambda: applied.cli("destroy", str(applied.spec)))
    assert applied.cli("apply", str(applied.spec)) == 0
    return applied




KAFKANET = Path(sys.executable).with_name("kafkanet")


def e2e_spec(tmp_path: Path, prefix: str) -> tuple[str, Path]:
    """A copy of the seed under a unique name (same VPC CIDR), for a `kafkanet e2e` subprocess."""
    name = f"{prefix}{secrets.token_hex(3)}"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(SEED.read_text().replace("name: ttareungyi", f"name: {name}"))
    return name, spec


def e2e_argv(spec: Path) -> list[str]:
    return [str(KAFKANET), "e2e", str(spec)]


def e2e_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "KAFKANET_BUILD_ROOT": str(tmp_path / "build")}


def machine_leftovers(name: str) -> list[str]:
    """Namespaces, processes and runtime files of environment `name`, or of any e2e run of it
    (`<name>-<run id>`), still on this machine."""
    ns_prefixes = (f"kn_{name}_", f"kn_{name}-")
    dirs = re.compile(rf"/{re.escape(name)}(-[a-z0-9]+)?/\.kafkanet")
    found = [f"netns {n}" for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
             .stdout.split() if n.startswith(ns_prefixes)]
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found += [f"process {line.strip()}" for line in ps.splitlines()
              if any(p in line for p in ns_prefixes) or dirs.search(line)]
    found += [f"process {pid} working in {cwd}" for pid, cwd in _working_dirs() if dirs.search(cwd)]
    found += [str(run) for run in Path("/run").glob(f"kn_{name}*") if run.name == f"kn_{name}"
              or run.name.startswith(f"kn_{name}-")]
    return found


def _working_dirs() -> list[tuple[int, str]]:
    """(pid, cwd) of every process: the shared AWS provider's argv names no environment."""
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out.append((int(proc.name), os.readlink(proc / "cwd")))
            except OSError:
                continue
    return out


def moto_alive(build: Path) -> bool:
    """Whether the moto server of build directory `build`, or of any e2e run's beside it, is alive."""
    return any(_moto_alive(b) for b in [build, *build.parent.glob(f"{build.name}-*")])


def _moto_alive(build: Path) -> bool:
    pid_file = build / ".kafkanet" / "moto" / "moto.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True
