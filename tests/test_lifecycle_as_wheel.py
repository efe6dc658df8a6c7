"""kafkanet as a user installs it: a wheel built from this checkout, in a fresh venv, away from the repo.

The wheel must carry everything the checkout gives for free: templates/ (as
generator/templates), the price book, and the integration suite that
``kafkanet test`` runs. One venv for the module; it renders the seed from a
directory outside the repo (byte-equal to the checkout's rendering), prices
it, and runs the suite against the session's live seed environment.

Named to run among the seed's tests after test_lifecycle_access.py and before
test_lifecycle_breaks.py (which destroys the seed at its end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, SEED

# under `pytest -n 2 --dist loadgroup` the whole module runs in the seed's worker: one venv
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("seed")]

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P wheel"
INSTALL_TIMEOUT = 600


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


def _source_copy(dest: Path) -> Path:
    """The checkout's tracked and new files (not build/ or the venvs): setuptools writes beside its source."""
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True)
    for name in filter(None, listed.stdout.split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = _source_copy(work / "src")
    built = _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(source)],
                 timeout=INSTALL_TIMEOUT)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (found,) = (work / "dist").glob("kafkanet-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv with the wheel and its local-target extra: bin/ of that venv."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(home)
    pip = _run([str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                f"{wheel}[local]"], timeout=INSTALL_TIMEOUT)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return home / "bin"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working directory with nothing of the checkout in it, and a copy of the seed spec."""
    assert ROOT not in tmp_path.parents
    spec = SEED.read_text() + f"ssh: {{public_key: {KEY}}}\n"
    (tmp_path / "ttareungyi.yaml").write_text(spec)
    return tmp_path


def test_the_wheel_carries_templates_price_book_and_suite(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*.j2")}
    assert {f"generator/templates/{t}" for t in templates} <= names
    assert {"generator/module/prices.yaml", "integration/plugin.py", "integration/conftest.py",
            "integration/pytest.ini"} <= names
    assert {f"integration/{p.name}" for p in (ROOT / "integration").glob("test_*.py")} <= names


def test_the_installed_package_renders_the_seed_as_the_checkout_does(installed: Path, outside: Path):
    env = {k: v for k, v in os.environ.items() if k != "KAFKANET_BUILD_ROOT"}
    from_wheel = _run([str(installed / "kafkanet"), "generate", "ttareungyi.yaml", "--out", "wheel"],
                      cwd=outside, env=env, timeout=120)
    assert from_wheel.returncode == 0, from_wheel.stderr
    where = _run([str(installed / "python"), "-c", "import generator; print(generator.__file__)"], cwd=outside)
    assert ROOT not in Path(where.stdout.strip()).parents, where.stdout
    from_checkout = _run([sys.executable, "-m", "generator.cli", "generate", "ttareungyi.yaml", "--out", "checkout"],
                         cwd=outside, env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert from_checkout.returncode == 0, from_checkout.stderr
    rendered = sorted(p.relative_to(outside / "wheel") for p in (outside / "wheel").rglob("*")
                      if p.is_file() and ".kafkanet" not in p.parts)
    assert Path("network.tf") in rendered and Path("README.md") in rendered, rendered
    for rel in rendered:
        assert (outside / "wheel" / rel).read_bytes() == (outside / "checkout" / rel).read_bytes(), rel
    cost = _run([str(installed / "kafkanet"), "cost", "ttareungyi.yaml"], cwd=outside, env=env, timeout=60)
    assert cost.returncode == 0 and "NAT" in cost.stdout, cost.stderr


def test_the_installed_kafkanet_test_runs_its_own_suite_against_the_live_seed(installed: Path, seed, tmp_path: Path):
    env = {**os.environ, "KAFKANET_BUILD_ROOT": str(seed.build_root)}
    run = _run([str(installed / "kafkanet"), "test", str(seed.spec)], cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-2000:])
    site = _run([str(installed / "python"), "-c", "import integration; print(integration.__file__)"],
                cwd=tmp_path).stdout.strip()
    suite = Path(site).parent
    assert ROOT not in suite.parents
    said = run.stdout + run.stderr
    assert f"-c {suite / 'pytest.ini'}" in said and " passed" in said, said[-2000:]
