"""The live daemon's life (root): terminate through the API, and no daemon outlives its plane.

The reference topology in a moto server of its own (no terraform: these tests
are about the daemon, not the module), built with ``endpoint_url``.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from generator.localaws import moto_server
from generator.module.keys import ensure_key
from localvpc import live, netns, plane, procs, reference, render
from tests.localvpc.helpers import require_root_plane, unique_env

pytestmark = [pytest.mark.root, pytest.mark.slow]

WAIT = 5.0


def wait_for(what: str, check, budget: float = WAIT):
    __tracebackhide__ = True
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"waited {budget:.0f} s for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_root_plane()
    srv = moto_server.start(tmp_path_factory.mktemp("moto") / "moto")
    yield srv
    srv.stop()


def _build(request, server, tmp_path, tag: str):
    env = unique_env(tag)
    request.addfinalizer(lambda: plane.teardown(env))  # before anything is built
    ec2 = server.ec2_client("ap-northeast-2")
    key, public = ensure_key(tmp_path, env)
    reference.create(ec2, env, public_key=public)
    info = plane.build(env, ec2, key, tmp_path, endpoint_url=server.url)
    wait_for(f"{env}'s live daemon", lambda: live.find(env))
    return env, ec2, info


def test_a_terminated_instance_stops_for_good(request, server, tmp_path):
    env, ec2, info = _build(request, server, tmp_path, "t")
    victim, nat = info.hosts["broker-3"], info.hosts["nat"]
    address = (victim.private_ip, 22)
    netns.netns_socket(nat.netns, address, 2.0).close()  # control: it answers before
    ec2.terminate_instances(InstanceIds=[victim.instance_id])
    wait_for("broker-3's processes to end", lambda: procs.reap() or not netns.pids_in([victim.netns]))

    def refused() -> bool:
        try:
            netns.netns_socket(nat.netns, address, 0.5).close()
        except OSError:
            return True
        return False

    assert refused(), "broker-3 still answers after TerminateInstances"
    netns.netns_socket(nat.netns, (info.hosts["broker-2"].private_ip, 22), 2.0).close()  # the others run on


def test_teardown_stops_the_daemon_even_when_the_runtime_state_is_gone(request, server, tmp_path):
    env, _, _ = _build(request, server, tmp_path, "s")
    pids = live.find(env)
    assert pids
    shutil.rmtree(plane.runtime_dir(env))  # as after a crash that lost /run/kn_<env>
    plane.teardown(env)
    assert not live.find(env), f"live daemon {pids} of {env} survived teardown"


def test_the_daemon_exits_when_its_plane_is_gone(request, server, tmp_path):
    env, _, _ = _build(request, server, tmp_path, "g")
    router = f"{render.netns_prefix(env)}router"
    subprocess.run(["ip", "netns", "del", router], check=True, capture_output=True)
    wait_for(f"{env}'s daemon to exit without its router namespace", lambda: not live.find(env), budget=live.CHANGE_WAIT + 3)
