"""Fixtures of the local data plane's tests: recorded snapshots, and a live plane (root).

Every live plane gets a unique environment name per run and registers its
teardown *before* it is built; a session-finish hook tears down every plane
this run named, in case a fixture never got to.
"""

from __future__ import annotations

import copy
import os

import pytest

from localvpc import plane
from tests.localvpc.helpers import (
    STARTED_ENVS,
    Live,
    load_snapshot,
    require_root_plane,
    unique_env,
)


@pytest.fixture
def snap() -> dict:
    """A fresh (mutable) copy of the recorded reference snapshot."""
    return copy.deepcopy(load_snapshot())


@pytest.fixture
def variant_snap() -> dict:
    return copy.deepcopy(load_snapshot("ttareungyi-variant"))


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001 (pytest hook signature)
    if os.geteuid() == 0:
        for env in sorted(STARTED_ENVS):
            plane.teardown(env)


@pytest.fixture(scope="session")
def live(request, tmp_path_factory) -> Live:
    """The reference topology created in a moto server (its own process) and built as a plane."""
    require_root_plane()

    from generator.localaws import moto_server
    from generator.module.keys import ensure_key
    from localvpc import reference

    env = unique_env()
    request.addfinalizer(lambda: plane.teardown(env))  # before anything is built
    state = tmp_path_factory.mktemp("plane")
    server = moto_server.start(state / "moto")
    request.addfinalizer(server.stop)
    ec2 = server.ec2_client("ap-northeast-2")
    key, public = ensure_key(state, env)
    created = reference.create(ec2, env, public_key=public)
    info = plane.build(env, ec2, key, state)
    return Live(env, info, key, state, ec2, created.eip)
