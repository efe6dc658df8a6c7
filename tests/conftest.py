"""Fixtures shared by the unit and contract tests."""

from __future__ import annotations

import shutil
import signal
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "tests" / "specs"
SEED = ROOT / "environments" / "ttareungyi.yaml"

SEED_TEXT = SEED.read_text()

# A make test started in the background by a non-interactive shell (`make test &`, some CI
# runners) inherits SIGINT *ignored*, and so would every child: the tests that press Ctrl-C
# on a kafkanet they started would wait for an interrupt nobody hears. A handled signal is
# reset to its default in a child at exec, an ignored one is not: handle it here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def write_spec(tmp_path: Path):
    """Write a spec file from YAML text (dedented) and return its path."""

    def _write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return _write


@pytest.fixture(autouse=True)
def _build_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Default build directories go under tmp, never into the repository's build/."""
    root = tmp_path / "build"
    monkeypatch.setenv("KAFKANET_BUILD_ROOT", str(root))
    return root


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; run `make install` (it installs every test prerequisite)")
    return path


@pytest.fixture(scope="session")
def seed(request, tmp_path_factory):
    """The seed environment applied once per session on the local target (unique name).

    Shared by test_lifecycle.py (checks of the applied state),
    test_lifecycle_access.py (ssh, tunnel, ssh_config) and
    test_lifecycle_breaks.py (the integration suite against broken variants,
    then a destroy after killing its moto server), which must run last: pytest
    runs the files in that (name) order.
    """
    from tests.envs import apply_env

    return apply_env(request, tmp_path_factory, "lc")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup` (make test) every test on the session's seed runs in
    one worker, in file order (test_lifecycle_breaks.py destroys the seed at its end); the rest
    spread over the workers while the seed's worker mostly waits on the AWS provider's polls; so do
    the tests of a module that share a module- or class-scoped fixture (one worker each)."""
    for item in items:
        if "seed" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("seed"))
        elif _shares_a_fixture_within_its_module(item) and not item.get_closest_marker("xdist_group"):
            # a module's (or class's) shared fixture, e.g. an applied environment or a checkov
            # run, is set up once per worker that runs one of its tests: one worker runs them all
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    _longest_first(items)


#: A slow test's expected seconds when its ``slow`` mark gives none (``pytest.mark.slow(seconds=N)``).
SLOW_SECONDS = 20
FAST_SECONDS = 1


def _longest_first(items: list[pytest.Item]) -> None:
    """Order the work units (an xdist group, or a test of none) by their expected seconds, longest
    first: xdist hands units out in collection order, and a 7-minute test collected late ends the
    run minutes after the other workers are idle (make test: 17:52 for 946 s of work per worker).
    Within a unit the order stays the file order (the seed's group relies on it). The seconds are
    the ``slow`` mark's hint, a guess for scheduling only: nothing is timed or asserted by it."""
    def unit(item: pytest.Item) -> str:
        group = item.get_closest_marker("xdist_group")
        return f"@{group.args[0]}" if group else item.nodeid

    def seconds(item: pytest.Item) -> float:
        slow = item.get_closest_marker("slow")
        return FAST_SECONDS if slow is None else float(slow.kwargs.get("seconds", SLOW_SECONDS))

    cost: dict[str, float] = {}
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        key = unit(item)
        cost[key] = cost.get(key, 0.0) + seconds(item)
        first.setdefault(key, index)
    items.sort(key=lambda item: (-cost[unit(item)], first[unit(item)]))  # stable: a unit keeps its order


def pytest_configure(config: pytest.Config) -> None:
    """Refuse `--dist loadgroup` where its groups are ignored without a word: pytest-xdist (up to 3.8)
    marks a group by rewriting ``item._nodeid``, which pytest 9.2 no longer reads; every worker then
    applies a seed and every module fixture of its own (make test took half again as long)."""
    if config.getoption("dist", default="no") != "loadgroup" or hasattr(config, "workerinput"):
        return
    from importlib.metadata import version

    from packaging.version import Version

    if Version(pytest.__version__) >= Version("9.2") and Version(version("pytest-xdist")) <= Version("3.8.0"):
        raise pytest.UsageError(
            f"--dist loadgroup has no effect with pytest {pytest.__version__} and pytest-xdist "
            f"{version('pytest-xdist')}: install the test extra (`make install`), which keeps pytest below 9.2"
        )


def _shares_a_fixture_within_its_module(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope in ("module", "class", "package") for defs in info.name2fixturedefs.values() for d in defs)


def hears_ctrl_c() -> None:
    """``preexec_fn`` for a child a test presses Ctrl-C on: SIGINT back to its default.

    A command started in the background by a non-interactive shell (``make test &``,
    some CI runners) inherits SIGINT *ignored*, and Python then installs no
    KeyboardInterrupt handler: the child would never hear the test's Ctrl-C.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)

