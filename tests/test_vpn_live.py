"""`kafkanet tunnel SPEC --vpn` on a live local environment: kcat and confluent-kafka through the bastion.

One copy of the seed is applied for the whole module (its destroy registered first). The
tunnel runs as the real command, a subprocess; the clients run inside the operator
namespace (``ip netns exec kn_<env>_operator``), where the emulated internet starts and
where sshuttle's rules live. Each test says what it compares: this machine's own network
namespace (nftables, iptables, routes, rules) must not change while the tunnel is up nor
after, and once the tunnel stops (SIGINT, SIGTERM, or kafkanet killed outright) the
operator namespace has its ruleset and its processes back as they were.

kcat: Debian 12's kcat links librdkafka 2.0.2, which cannot parse tansu's ApiVersions v3
answer (tansu writes every tagged field, defaults included, and 2.0.2 reads past them:
"Protocol read buffer underflow for ApiVersion v3", the same from inside the VPC, so not
the tunnel's doing). Where the system's librdkafka is older than 2.1, Debian's kcat binary
is run against the librdkafka that confluent-kafka's wheel ships (2.x, LD_LIBRARY_PATH).
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from generator.access import vpn
from localvpc.netns import netns_socket, pids_in
from tests.conftest import ROOT, require
from tests.envs import apply_env, needs_root

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.xdist_group("vpn")]

READY_BUDGET = 120.0  # preflight + sshuttle's SSH session and rules, on a busy 2-core machine
STOP_BUDGET = 40.0  # vpn's own bounds: SIGINT 10 s, SIGTERM 5 s, the tree 10 s


@pytest.fixture(scope="module")
def live(request, tmp_path_factory):
    needs_root()  # before the tools: without root this module skips, with that reason
    require("kcat")
    require("iptables-save")
    return apply_env(request, tmp_path_factory, "vpn")


def operator(live) -> str:
    return json.loads((live.env.path(".kafkanet/plane/plane.json")).read_text())["operator_netns"]


def broker(live, index: int = 0) -> tuple[str, int]:
    inv = live.inventory
    return inv["brokers"][index]["private_ip"], int(inv["kafka"]["port"])


# --- the state compared -----------------------------------------------------------------------------

_COUNTERS = re.compile(r"counter packets \d+ bytes \d+|\[\d+:\d+\]")


def _run(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, f"{' '.join(argv)}: exit {out.returncode}: {out.stderr}"
    lines = [line for line in out.stdout.splitlines() if not line.startswith("#")]  # iptables-save's dated header
    return _COUNTERS.sub("", "\n".join(lines))


def root_state() -> dict[str, str]:
    """This machine's own network namespace: what sshuttle would change if it ran here."""
    return {
        "nft list ruleset": _run(["nft", "list", "ruleset"]),
        "iptables-save": _run(["iptables-save"]),
        "ip6tables-save": _run(["ip6tables-save"]),
        "ip route (all tables)": _run(["ip", "route", "show", "table", "all"]),
        "ip -6 route (all tables)": _run(["ip", "-6", "route", "show", "table", "all"]),
        "ip rule": _run(["ip", "rule"]),
        "addresses": _run(["ip", "-br", "addr"]),
    }


def operator_state(netns: str) -> dict[str, object]:
    return {
        "nft list ruleset": _run(["ip", "netns", "exec", netns, "nft", "list", "ruleset"]),
        "ip route": _run(["ip", "netns", "exec", netns, "ip", "route", "show", "table", "all"]),
        "processes": sorted(pids_in([netns])),
    }


def assert_same(before: dict, after: dict, where: str) -> None:
    __tracebackhide__ = True
    changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
    assert not changed, f"{where} changed: " + "; ".join(f"{k}: {b!r} -> {a!r}" for k, (b, a) in changed.items())


def reaches(netns: str, address: tuple[str, int]) -> bool:
    try:
        netns_socket(netns, address, timeout=5.0).close()
        return True
    except OSError:
        return False


# --- the tunnel, as the command ---------------------------------------------------------------------


TUNNEL_TMPDIRS: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_tunnel_tmpdirs():
    yield
    while TUNNEL_TMPDIRS:
        shutil.rmtree(TUNNEL_TMPDIRS.pop(), ignore_errors=True)


class Tunnel:
    """`kafkanet tunnel SPEC --vpn` as a subprocess, up once it printed the bootstrap servers."""

    def __init__(self, live, log: Path) -> None:
        self.log = log
        # a temporary directory of its own: other workers' tunnels (tests/test_vpn.py) use the machine's at once
        # short, under /tmp: a Unix socket's path is at most 107 bytes and pytest's tmp_path can be deeper
        self.tmpdir = Path(tempfile.mkdtemp(prefix="kn-vpn-test-", dir="/tmp"))
        TUNNEL_TMPDIRS.append(self.tmpdir)  # removed when the module ends, after the leftover checks
        self.notify_before = notify_dirs(self.tmpdir)
        self.err = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "generator.cli", "tunnel", str(live.spec), "--vpn"],
            env={**os.environ, "KAFKANET_BUILD_ROOT": str(live.build_root), "PYTHONPATH": str(ROOT),
                 "TMPDIR": str(self.tmpdir)},
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err,
        )  # fmt: skip
        started = time.monotonic()
        self._out = b""
        self.bootstrap = self._line(READY_BUDGET)
        self.example = self._line(5)
        self.seconds = time.monotonic() - started

    def _line(self, budget: float) -> str:
        """The next stdout line, read from the descriptor (a buffered reader would hide the next one from select)."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + budget
        while b"\n" not in self._out:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            data = os.read(fd, 4096) if ready else b""
            if not data:
                self.kill()
                raise AssertionError(f"`kafkanet tunnel --vpn` said no whole line on stdout within {budget:g} s "
                                     f"(exit {self.proc.poll()}, got {self._out!r}): {self.stderr()}")  # fmt: skip
            self._out += data
        line, _, self._out = self._out.partition(b"\n")
        return line.decode().strip()

    def stderr(self) -> str:
        if not self.err.closed:
            self.err.flush()
        return self.log.read_text()

    def stop(self, sig: int) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=STOP_BUDGET)
        finally:
            self.kill()
        return rc, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.proc.stdout.closed:
            self.proc.stdout.close()
        self.err.close()


# --- clients through a running tunnel ---------------------------------------------------------------


@pytest.fixture(scope="class")
def up(live, tmp_path_factory):
    netns = operator(live)
    root_before = root_state()
    operator_before = operator_state(netns)
    assert not reaches(netns, broker(live)), "control: without the tunnel the operator namespace reaches no broker"
    tunnel = Tunnel(live, tmp_path_factory.mktemp("vpn-up") / "tunnel.err")
    try:
        yield tunnel, netns, root_before, operator_before
    finally:
        rc, _ = tunnel.stop(signal.SIGINT)
        assert rc == 0, tunnel.stderr()


@pytest.fixture(scope="module")
def kcat_env(tmp_path_factory) -> dict[str, str]:
    """The environment kcat runs in: its own librdkafka when it is 2.1 or newer, else confluent-kafka's (see above)."""
    said = subprocess.run(["kcat", "-V"], capture_output=True, text=True).stdout
    version = re.search(r"librdkafka (\d+)\.(\d+)", said)
    assert version, "kcat -V names no librdkafka version"
    if (int(version[1]), int(version[2])) >= (2, 1):
        return dict(os.environ)
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    shipped = sorted(libs.glob("librdkafka*.so.1"))
    assert shipped, f"no librdkafka in {libs}"
    link_dir = tmp_path_factory.mktemp("librdkafka")
    (link_dir / "librdkafka.so.1").symlink_to(shipped[0])
    env = {**os.environ, "LD_LIBRARY_PATH": str(link_dir)}
    said = subprocess.run(["kcat", "-V"], capture_output=True, text=True, env=env).stdout
    assert re.search(r"librdkafka 2\.([1-9]|\d\d)", said), said
    return env


def kcat(env: dict[str, str], netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, "kcat", *args], input=stdin, capture_output=True,
                          text=True, timeout=45, env=env)  # fmt: skip


class TestClientsThroughTheTunnel:
    def test_it_says_how_to_use_it(self, live, up):
        tunnel, netns, _, _ = up
        assert tunnel.bootstrap == live.inventory["kafka"]["bootstrap_servers"]
        host, port = broker(live)
        assert tunnel.example == f"ip netns exec {netns} kcat -b {host}:{port} -L"
        err = tunnel.stderr()
        assert f"TCP to {live.inventory['network']['vpc_cidr']} from the operator namespace {netns}" in err, err
        print(f"tunnel up in {tunnel.seconds:.1f} s")

    def test_only_the_operator_namespace_changed(self, live, up):
        _, netns, root_before, operator_before = up
        assert_same(root_before, root_state(), "this machine's own network namespace")
        # control: the rules exist, in the operator namespace, and route only the VPC CIDR
        tables = vpn.sshuttle_tables(netns)
        assert len(tables) == 1, tables
        ruleset = operator_state(netns)["nft list ruleset"]
        assert f"ip daddr {live.inventory['network']['vpc_cidr']} redirect to" in ruleset, ruleset
        assert ruleset.count("redirect to") == 1, ruleset
        assert operator_state(netns)["ip route"] == operator_before["ip route"], "sshuttle adds no route"

    def test_the_operator_namespace_reaches_every_broker(self, live, up):
        _, netns, _, _ = up
        for index, b in enumerate(live.inventory["brokers"]):
            assert reaches(netns, broker(live, index)), f"{b['name']} {b['private_ip']}: no TCP through the tunnel"

    def test_kcat_lists_the_cluster_metadata(self, live, up, kcat_env):
        _, netns, _, _ = up
        host, port = broker(live)
        out = kcat(kcat_env, netns, "-b", f"{host}:{port}", "-L", "-m", "20")
        assert out.returncode == 0, out.stderr
        assert f"at {host}:{port}" in out.stdout, out.stdout  # the advertised private address, reached
        for topic in live.inventory["kafka"]["topics"]:
            assert f'topic "{topic["name"]}" with {topic["partitions"]} partitions' in out.stdout, out.stdout

    def test_kcat_produces_and_consumes_a_record(self, live, up, kcat_env):
        _, netns, _, _ = up
        host, port = broker(live)
        topic = live.inventory["kafka"]["topics"][0]["name"]
        key, value = "ST-4", f"vpn-{uuid.uuid4().hex}"
        sent = kcat(kcat_env, netns, "-P", "-b", f"{host}:{port}", "-t", topic, "-p", "0", "-K", "\t",
                    "-X", "acks=all", stdin=f"{key}\t{value}\n")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        got = kcat(kcat_env, netns, "-C", "-b", f"{host}:{port}", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                   "-f", "%k\t%s\n")  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert f"{key}\t{value}" in got.stdout.splitlines(), got.stdout

    def test_confluent_kafka_round_trips_1000_acks_all_records(self, live, up):
        _, netns, _, _ = up
        host, port = broker(live)
        out = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "tests.vpn_roundtrip", f"{host}:{port}", "-n", "1000"],
            capture_output=True, text=True, timeout=180, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout.strip().splitlines()[-1])
        assert "error" not in result, result
        assert result["undelivered"] == 0 and not result["delivery_errors"], result
        assert result["group"], "tansu serves librdkafka's consumer group here: no assign() fallback was needed"
        assert (result["consumed"], result["same_records"]) == (1000, True), result
        print(f"1000 records produced in {result['produce_seconds']:.2f} s")


# --- stopping leaves nothing ------------------------------------------------------------------------


def notify_dirs(tmpdir: Path) -> set[Path]:
    """Where `tunnel --vpn` hears sshuttle's READY: a directory of its own under the temporary directory."""
    return set(tmpdir.glob("kafkanet-vpn-*"))


def _stopped_cleanly(live, netns, root_before, operator_before, tunnel, wait_for: float = 0.0) -> None:
    __tracebackhide__ = True
    left = notify_dirs(tunnel.tmpdir) - tunnel.notify_before
    assert not left, f"left in the temporary directory: {left}"
    deadline = time.monotonic() + wait_for
    while operator_state(netns) != operator_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_same(operator_before, operator_state(netns), f"the operator namespace {netns} after the tunnel")
    assert_same(root_before, root_state(), "this machine's own network namespace after the tunnel")
    assert not vpn.sshuttle_tables(netns)
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    ours = [line for line in ps.splitlines() if "sshuttle" in line and str(live.env.build_dir) in line]
    assert not ours, ours
    assert not reaches(netns, broker(live)), "the VPC is still reachable from the operator namespace"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_leaves_nothing_in_the_operator_namespace(live, sig, tmp_path):
    netns = operator(live)
    root_before, operator_before = root_state(), operator_state(netns)
    tunnel = Tunnel(live, tmp_path / "tunnel.err")
    assert vpn.sshuttle_tables(netns), "control: the tunnel's rules are there while it runs"
    assert reaches(netns, broker(live)), "control: the tunnel carries TCP while it runs"
    rc, seconds = tunnel.stop(sig)
    assert rc == 0, tunnel.stderr()
    assert "tunnel stopped: no sshuttle table left in" in tunnel.stderr()
    assert "after sshuttle:" not in tunnel.stderr(), "sshuttle left something kafkanet had to clean up"
    _stopped_cleanly(live, netns, root_before, operator_before, tunnel)
    print(f"stopped in {seconds:.1f} s")


def test_kafkanet_killed_outright_still_leaves_nothing(live, tmp_path):
    """SIGKILL gives kafkanet no chance: sshuttle gets SIGTERM (parent-death signal), its firewall process
    sees it go and undoes the rules; nothing of it is left once that is done."""
    netns = operator(live)
    root_before, operator_before = root_state(), operator_state(netns)
    tunnel = Tunnel(live, tmp_path / "tunnel.err")
    assert vpn.sshuttle_tables(netns), "control: the tunnel's rules are there while it runs"
    tunnel.stop(signal.SIGKILL)
    _stopped_cleanly(live, netns, root_before, operator_before, tunnel, wait_for=20.0)


def test_a_second_tunnel_of_the_same_environment_is_refused(live, tmp_path, capsys):
    netns = operator(live)
    tunnel = Tunnel(live, tmp_path / "tunnel.err")
    try:
        assert live.cli("tunnel", str(live.spec), "--vpn") == 2
        err = capsys.readouterr().err
        assert f"{netns} already has sshuttle's table(s)" in err and "stop it first" in err, err
    finally:
        assert tunnel.stop(signal.SIGINT)[0] == 0, tunnel.stderr()


def test_a_table_left_after_sshuttle_is_removed_and_said_so(live, tmp_path):
    """The safety net: a sshuttle table that appeared while the tunnel ran and is still there once sshuttle
    has gone (here one added by hand, as a crashed firewall process would leave it) is removed, and said."""
    netns = operator(live)
    operator_before = operator_state(netns)
    tunnel = Tunnel(live, tmp_path / "tunnel.err")
    _run(["ip", "netns", "exec", netns, "nft", "add", "table", "inet", "sshuttle-ipv4-65000"])
    rc, _ = tunnel.stop(signal.SIGINT)
    assert rc == 0, tunnel.stderr()
    assert f"after sshuttle: nft table inet sshuttle-ipv4-65000 removed from {netns}" in tunnel.stderr()
    assert_same(operator_before, operator_state(netns), f"the operator namespace {netns} after the tunnel")
