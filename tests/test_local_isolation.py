"""On the local target nothing leaves loopback: terraform, the AWS provider and moto
only ever talk to 127.0.0.1.

The generated module has no endpoint setting; the local target points the
provider at moto through its environment alone (generator/localaws/moto_server.py
``MotoServer.env``). If that ever missed a service, or the provider looked up
instance metadata or credentials elsewhere, it would call real AWS. This test
runs `kafkanet plan` (generate, moto, the shared provider, init, a full plan
with the provider's credential and account checks) and `kafkanet destroy` inside
a network namespace of its own whose only way out is a dead-end veth, and an
nftables counter there counts every packet to anything but loopback. A positive
control proves the counter sees a connection attempt.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

import pytest

from tests.envs import KAFKANET, e2e_env, e2e_spec, machine_leftovers, needs_root

pytestmark = [pytest.mark.terraform, pytest.mark.root, pytest.mark.slow]

# the namespace's own "outside": a TEST-NET-2 address on a veth whose peer is in the same namespace
DUMMY_ADDRESS = "198.51.100.254/24"
CONTROL_TARGET = ("198.51.100.9", 443)
NFT_RULES = """
table inet kntest {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    counter name escaped drop
  }
  counter escaped {}
}
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def sealed_netns():
    """A namespace with loopback, a default route into a dead-end veth, and a counter on it."""
    needs_root()
    name = f"kntest_iso_{secrets.token_hex(3)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        # a veth pair with both ends in here: no dummy module on these kernels
        _ip("-n", name, "link", "add", "out0", "type", "veth", "peer", "name", "out1")
        _ip("-n", name, "addr", "add", DUMMY_ADDRESS, "dev", "out0")
        _ip("-n", name, "link", "set", "out0", "up")
        _ip("-n", name, "route", "add", "default", "dev", "out0")
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=NFT_RULES, check=True, text=True)
        yield name
    finally:
        _ip("netns", "del", name)


def _escaped(netns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "counter", "inet", "kntest", "escaped"],
                         check=True, capture_output=True, text=True).stdout
    return int(re.search(r"packets (\d+)", out).group(1))


def test_counter_sees_a_connection_attempt(sealed_netns):
    """Positive control: the same namespace and counter catch one TCP SYN."""
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(1)\n"
        f"try: s.connect({CONTROL_TARGET!r})\n"
        "except OSError: pass\n"
    )
    subprocess.run(["ip", "netns", "exec", sealed_netns, sys.executable, "-c", code], check=True, timeout=30)
    assert _escaped(sealed_netns) >= 1


def _kafkanet_in(netns: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, str(KAFKANET), *args],
                          env=env, capture_output=True, text=True, timeout=150)


def test_plan_and_destroy_on_the_local_target_stay_on_loopback(sealed_netns, tmp_path):
    name, spec = e2e_spec(tmp_path, "iso")
    env = e2e_env(tmp_path)
    try:
        plan = _kafkanet_in(sealed_netns, env, "-v", "plan", str(spec))  # -v: terraform's own lines too
        out = plan.stdout + plan.stderr
        assert plan.returncode == 0, out[-3000:]
        assert re.search(r"Plan: \d+ to add, 0 to change, 0 to destroy", out), out[-3000:]
        assert _escaped(sealed_netns) == 0, "kafkanet plan sent packets off loopback"
    finally:  # stops moto and the provider, also when plan failed
        destroy = _kafkanet_in(sealed_netns, env, "destroy", str(spec))
    assert destroy.returncode == 0, (destroy.stdout + destroy.stderr)[-3000:]
    assert _escaped(sealed_netns) == 0, "kafkanet destroy sent packets off loopback"
    assert machine_leftovers(name) == []
