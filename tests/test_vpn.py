"""`kafkanet tunnel SPEC --vpn` without root: the argument lists, the preflight's verdicts, the user errors,
and the process handling against a stand-in for sshuttle (a script that speaks its sd_notify READY).

The same command on a live local environment, with sshuttle, kcat and confluent-kafka: test_vpn_live.py.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from generator.access import vpn
from generator.access.errors import SshError
from generator.base.errors import InfraError, UserError
from generator.cli import main
from tests.conftest import SEED

INVENTORY = {
    "version": 1, "environment": "ttareungyi", "target": "local", "region": "ap-northeast-2",
    "bastion": {"name": "bastion", "public_ip": "198.51.100.10"},
    "brokers": [{"name": "broker-1", "private_ip": "10.0.1.10"}],
    "network": {"vpc_cidr": "10.0.0.0/16"},
    "kafka": {"port": 9092, "bootstrap_servers": "10.0.1.10:9092"},
}  # fmt: skip


def local_plan(**overrides) -> vpn.VpnPlan:
    values = {"ssh_config": Path("/b/with space/ssh_config"), "sshuttle": "/venv/bin/sshuttle",
              "netns": "kn_ttareungyi_operator", "verbose": False, **overrides}  # fmt: skip
    return vpn.plan(INVENTORY, **values)


# --- argument lists ----------------------------------------------------------------------------


def test_local_sshuttle_runs_inside_the_operator_namespace_routing_only_the_vpc():
    argv = local_plan().sshuttle_argv()
    assert argv[:5] == ["ip", "netns", "exec", "kn_ttareungyi_operator", "/venv/bin/sshuttle"]
    assert argv[-1] == "10.0.0.0/16", "the VPC CIDR is the only subnet routed, and the last argument"
    assert argv[argv.index("-r") + 1] == "ttareungyi-bastion"  # the Host alias of build/<name>/ssh_config
    assert argv[argv.index("--method") + 1] == "nft"  # rules in the namespace's own nftables
    assert "--disable-ipv6" in argv and "-v" not in argv
    # sshuttle splits -e with shlex: a build path with a blank must come back whole
    ssh = shlex.split(argv[argv.index("-e") + 1])
    assert ssh[:3] == ["ssh", "-F", "/b/with space/ssh_config"]
    assert "BatchMode=yes" in ssh, "a changed host key or a missing key fails, never prompts"


def test_aws_sshuttle_runs_here_with_its_own_method_choice():
    plan = local_plan(netns=None)
    argv = plan.sshuttle_argv()
    assert argv[0] == "/venv/bin/sshuttle" and "ip" not in argv[:1]
    assert "--method" not in argv  # nat/nft on Linux, pf on macOS: sshuttle picks
    assert argv[-1] == "10.0.0.0/16"
    assert plan.client_prefix() == []


def test_verbose_is_passed_on():
    assert "-v" in local_plan(verbose=True).sshuttle_argv()


def test_preflight_asks_the_bastion_for_python_through_the_same_ssh_config():
    argv = local_plan().preflight_argv()
    assert argv[:4] == ["ip", "netns", "exec", "kn_ttareungyi_operator"]
    assert argv[4:7] == ["ssh", "-F", "/b/with space/ssh_config"]
    assert argv[-2:] == ["ttareungyi-bastion", vpn.PYTHON_PROBE]


def test_clients_run_inside_the_operator_namespace():
    assert local_plan().client_prefix() == ["ip", "netns", "exec", "kn_ttareungyi_operator"]


def test_the_cidr_is_normalised():
    inv = {**INVENTORY, "network": {"vpc_cidr": "10.1.2.3/16"}}
    assert vpn.plan(inv, Path("c"), "s", None, False).cidr == "10.1.0.0/16"


# --- the preflight's verdicts -----------------------------------------------------------------


def test_preflight_finds_python():
    assert vpn.judge_preflight(0, "/usr/bin/python3\n", "", local_plan(), "aws") == "/usr/bin/python3"


@pytest.mark.parametrize("rc", [1, 127])
def test_a_bastion_without_python_is_a_user_error(rc):
    with pytest.raises(UserError) as err:
        vpn.judge_preflight(rc, "", "", local_plan(netns=None), "aws")
    line = str(err.value)
    assert err.value.exit_code == 2 and "\n" not in line
    assert "no python3 or python" in line and "dnf install -y python3" in line and "without --vpn" in line


def test_an_ssh_failure_is_an_infrastructure_error_with_what_ssh_said():
    with pytest.raises(SshError) as err:
        vpn.judge_preflight(255, "", "Host key verification failed.\r\n", local_plan(), "local")
    assert err.value.exit_code == InfraError.exit_code and "Host key verification failed." in str(err.value)


def test_overlap_with_this_machines_network_is_refused():
    assert vpn.overlapping_addresses("10.0.0.0/16", ["127.0.0.1", "10.0.3.7", "192.168.1.2", "x"]) == ["10.0.3.7"]
    vpn.refuse_overlap("10.0.0.0/16", ["192.168.1.2"])
    with pytest.raises(UserError, match="10.0.3.7 is inside the VPC CIDR 10.0.0.0/16"):
        vpn.refuse_overlap("10.0.0.0/16", ["10.0.3.7"])


# --- user errors through the CLI: one line, exit 2 --------------------------------------------


def write_fake_applied(build_root: Path, target: str = "local") -> Path:
    """The seed's build directory with an inventory and its target record, as `apply` leaves them."""
    build = build_root / "ttareungyi"
    (build / ".kafkanet").mkdir(parents=True, exist_ok=True)
    (build / ".kafkanet" / "inventory.json").write_text(json.dumps({**INVENTORY, "target": target}))
    (build / ".kafkanet" / "target.json").write_text(json.dumps({"target": target, "environment": "ttareungyi"}))
    return build


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("kafkanet: error: ")
    return err[0]


def test_vpn_with_port_is_exit_2(capsys):
    assert main(["tunnel", str(SEED), "--vpn", "--port", "5000"]) == 2
    assert "--port is the SOCKS5 tunnel's" in one_error_line(capsys)


def test_vpn_on_an_environment_not_applied_is_exit_2(capsys):
    assert main(["tunnel", str(SEED), "--vpn"]) == 2
    assert "run `kafkanet apply SPEC` first" in one_error_line(capsys)


def test_vpn_without_sshuttle_is_exit_2(capsys, monkeypatch, tmp_path, _build_root):
    write_fake_applied(_build_root)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # nothing beside it
    monkeypatch.setenv("PATH", str(tmp_path))  # nor on PATH
    assert main(["tunnel", str(SEED), "--vpn"]) == 2
    line = one_error_line(capsys)
    assert "needs sshuttle" in line and "pip install 'kafkanet[vpn]'" in line and "apt-get install sshuttle" in line


def fake_tools(tmp_path: Path, *names: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in names:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_vpn_without_root_is_exit_2(capsys, monkeypatch, tmp_path, _build_root):
    write_fake_applied(_build_root, "aws")
    monkeypatch.setenv("PATH", str(fake_tools(tmp_path, "sshuttle", "ssh")))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["tunnel", str(SEED), "--target", "aws", "--vpn"]) == 2
    line = one_error_line(capsys)
    assert "--vpn needs root" in line and "sudo -E kafkanet tunnel" in line and "--target aws --vpn" in line


def test_vpn_without_ssh_is_exit_2(capsys, monkeypatch, tmp_path, _build_root):
    write_fake_applied(_build_root, "aws")
    monkeypatch.setenv("PATH", str(fake_tools(tmp_path, "sshuttle")))
    assert main(["tunnel", str(SEED), "--target", "aws", "--vpn"]) == 2
    assert "needs ssh on PATH: install the OpenSSH client" in one_error_line(capsys)


def test_vpn_without_the_data_plane_is_exit_2(capsys, monkeypatch, tmp_path, _build_root):
    write_fake_applied(_build_root, "local")
    monkeypatch.setenv("PATH", f"{fake_tools(tmp_path, 'sshuttle')}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert main(["tunnel", str(SEED), "--vpn"]) == 2
    assert "no local data plane record" in one_error_line(capsys)


def test_operator_namespace_gone_is_a_user_error(tmp_path):
    record = tmp_path / "plane.json"
    record.write_text(json.dumps({"operator_netns": "kn_no-such-env-here_operator"}))
    with pytest.raises(UserError, match="does not exist .*run `kafkanet apply` again"):
        vpn.operator_netns(record, "no-such-env-here")


def test_vpn_without_ssh_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no .*ssh_config .*run `kafkanet apply` again"):
        vpn.require_ssh_config(tmp_path / "ssh_config", "ttareungyi")


def test_the_other_target_is_refused(capsys, _build_root):
    write_fake_applied(_build_root, "local")
    assert main(["tunnel", str(SEED), "--target", "aws", "--vpn"]) == 2
    assert "was applied with --target local" in one_error_line(capsys)


# --- the process handling, against a stand-in for sshuttle ------------------------------------

FAKE_SSHUTTLE = textwrap.dedent('''\
    #!{python}
    """Stands in for sshuttle: starts a child (as sshuttle starts ssh and its firewall process),
    says READY=1 on $NOTIFY_SOCKET (unless told not to), and ends cleanly on SIGINT."""
    import os, signal, socket, subprocess, sys, time
    mode = os.environ.get("FAKE_MODE", "ok")
    print("c : fake sshuttle " + " ".join(sys.argv[1:]), file=sys.stderr, flush=True)
    if mode == "drop-once":  # the first drops (as at a NAT failover), the next stay up
        marker = os.environ["FAKE_PIDS"] + ".dropped"
        mode = "ok" if os.path.exists(marker) else "drop"
        open(marker, "w").close()
    if mode == "fail":
        print("c : fatal: server died with error code 255", file=sys.stderr, flush=True)
        sys.exit(99)
    child = subprocess.Popen(["sleep", "300"], start_new_session=True)  # like sshuttle's firewall process
    with open(os.environ["FAKE_PIDS"], "a") as f:  # a line per incarnation
        f.write(f"{{os.getpid()}} {{child.pid}}\\n")
    if mode != "mute":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"READY=1\\nSTATUS=Connected", os.environ["NOTIFY_SOCKET"])
    if mode == "stubborn":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        while True:
            time.sleep(0.1)
            if mode == "drop":
                sys.exit(1)
    except KeyboardInterrupt:
        child.terminate()
        child.wait()
        print("c : Keyboard interrupt: exiting.", file=sys.stderr, flush=True)
''')


@pytest.fixture
def fake_sshuttle(tmp_path, monkeypatch):
    path = tmp_path / "sshuttle"
    path.write_text(FAKE_SSHUTTLE.format(python=sys.executable))
    path.chmod(0o755)
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    return path, pids


def running(pid: int) -> bool:
    from generator.base.procs import cmdline

    return cmdline(pid) is not None


def start(path: Path, lines: list[str]) -> vpn.Tunnel:
    return vpn.Tunnel.start(local_plan(netns=None, sshuttle=str(path)), lines.append)


def test_tunnel_waits_for_ready_and_stops_every_process(fake_sshuttle, monkeypatch):
    path, pids = fake_sshuttle
    lines: list[str] = []
    tunnel = start(path, lines)
    tunnel.wait_ready(budget=20)
    sshuttle_pid, child = map(int, pids.read_text().split())
    assert sshuttle_pid == tunnel.process.pid and {sshuttle_pid, child} <= tunnel.tree
    assert running(child)
    assert tunnel.stop() == [], "a clean SIGINT exit needs no cleaning up after it"
    assert not running(sshuttle_pid) and not running(child)
    assert tunnel.process.returncode == 0
    assert any("Keyboard interrupt" in line for line in lines), lines  # SIGINT reached it as Ctrl-C
    assert any(line.endswith("10.0.0.0/16") for line in lines), "the argv reaches the program"
    assert not Path(tunnel.notify_dir).exists()


def test_a_deep_temporary_directory_still_gets_a_working_ready_socket(fake_sshuttle, monkeypatch, tmp_path):
    """A Unix socket's path holds 107 bytes: under a TMPDIR deeper than that the socket goes under /tmp instead."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile caches the directory it chose first
    path, _ = fake_sshuttle
    tunnel = start(path, [])
    try:
        assert not Path(tunnel.notify_dir).is_relative_to(deep)
        assert len(os.fsencode(tunnel.notify_dir)) + len("/notify") <= vpn.UNIX_PATH_MAX
        tunnel.wait_ready(budget=20)
    finally:
        assert tunnel.stop() == []
    assert not Path(tunnel.notify_dir).exists() and not list(deep.iterdir())


def test_a_sshuttle_that_ends_before_ready_is_reported_with_its_lines(fake_sshuttle, monkeypatch):
    path, _ = fake_sshuttle
    monkeypatch.setenv("FAKE_MODE", "fail")
    tunnel = start(path, [])
    with pytest.raises(InfraError, match=r"exit 99\) before the tunnel was up: .*server died with error code 255"):
        tunnel.wait_ready(budget=20)
    tunnel.stop()


def test_no_ready_within_the_budget_is_an_error_and_nothing_is_left(fake_sshuttle, monkeypatch):
    path, pids = fake_sshuttle
    monkeypatch.setenv("FAKE_MODE", "mute")
    tunnel = start(path, [])
    with pytest.raises(InfraError, match="no tunnel after 1 s"):
        tunnel.wait_ready(budget=1)
    assert pids.exists()
    tunnel.tree = vpn.descendants(tunnel.process.pid)
    tunnel.stop()
    assert not any(running(int(p)) for p in pids.read_text().split())


def test_a_sshuttle_deaf_to_signals_is_killed_and_said_so(fake_sshuttle, monkeypatch):
    path, pids = fake_sshuttle
    monkeypatch.setenv("FAKE_MODE", "stubborn")
    monkeypatch.setattr(vpn, "INTERRUPT_BUDGET", 0.5)
    monkeypatch.setattr(vpn, "TERM_BUDGET", 0.5)
    monkeypatch.setattr(vpn, "TREE_BUDGET", 0.5)
    tunnel = start(path, [])
    tunnel.wait_ready(budget=20)
    started = time.monotonic()
    cleaned = tunnel.stop()
    assert time.monotonic() - started < 10
    sshuttle_pid, child = map(int, pids.read_text().split())
    assert any(f"pid {sshuttle_pid}) killed" in line for line in cleaned), cleaned
    assert any(f"process {child} " in line for line in cleaned), cleaned  # its orphan, found from the tree
    assert not running(sshuttle_pid) and not running(child)


def driver(tmp_path: Path, sshuttle: Path) -> Path:
    """A script that runs vpn.run() with the fake sshuttle as `kafkanet tunnel` would (SIGTERM is Ctrl-C)."""
    script = tmp_path / "drive.py"
    script.write_text(textwrap.dedent(f'''\
        import signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from generator.access import vpn
        from generator.cli import _sigterm_as_interrupt
        from tests.test_vpn import local_plan
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        vpn.preflight = lambda plan, target: "/usr/bin/python3"
        vpn.TREE_BUDGET = 0.5
        said = lambda line: print(line, file=sys.stderr, flush=True)
        sys.exit(vpn.run(local_plan(netns=None, sshuttle={str(sshuttle)!r}), "aws", said, said, "10.0.1.10:9092"))
    '''))
    return script


def test_run_gives_up_on_a_tunnel_that_keeps_dropping_and_cleans_up(fake_sshuttle, monkeypatch, capsys):
    path, pids = fake_sshuttle
    monkeypatch.setenv("FAKE_MODE", "drop")  # every incarnation ends by itself, leaving its child behind
    monkeypatch.setattr(vpn, "TREE_BUDGET", 0.5)
    monkeypatch.setattr(vpn, "RECONNECT_BUDGET", 2.0)
    monkeypatch.setattr(vpn, "RETRY_DELAYS", (0.1,))
    monkeypatch.setattr(vpn, "preflight", lambda plan, target: "/usr/bin/python3")
    said: list[str] = []
    with pytest.raises(SshError, match=r"sshuttle ended \(exit 1\): the tunnel to ttareungyi stopped and did not "
                                       r"stay up for 2 s of reconnecting"):  # fmt: skip
        vpn.run(local_plan(netns=None, sshuttle=str(path)), "aws", said.append, said.append, "10.0.1.10:9092")
    out = capsys.readouterr().out.splitlines()
    assert out == ["10.0.1.10:9092", "kcat -b 10.0.1.10:9092 -L"], "the tunnel's lines are printed once"
    incarnations = [line.split() for line in pids.read_text().splitlines()]
    assert len(incarnations) >= 2, "no reconnection was tried"
    assert sum("reconnecting" in line for line in said) == len(incarnations) - 1, said
    for _, child in incarnations:
        assert any(f"after sshuttle: process {child} " in line for line in said), said
    assert not any(running(int(p)) for pair in incarnations for p in pair)


def test_run_reconnects_a_tunnel_that_dropped(fake_sshuttle, tmp_path):
    """A dropped tunnel (a NAT failover) comes back by itself; the first sshuttle's processes are gone."""
    path, pids = fake_sshuttle
    script = driver(tmp_path, path)
    env = {**os.environ, "FAKE_MODE": "drop-once"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    err: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "10.0.1.10:9092"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("tunnel back after" in line for line in err):
            line = proc.stderr.readline()
            if not line:
                break
            err.append(line)
        assert any("tunnel back after" in line for line in err), "".join(err)
        proc.send_signal(signal.SIGTERM)
        rest, more = proc.communicate(timeout=30)
        err.append(more)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(err)
    assert proc.returncode == 0, text
    assert "sshuttle ended (exit 1): the connection to " in text and "reconnecting" in text, text
    assert "tunnel stopped: none of sshuttle's 2 process(es) running" in text, text
    incarnations = [line.split() for line in pids.read_text().splitlines()]
    assert len(incarnations) == 2, incarnations
    assert not any(running(int(p)) for pair in incarnations for p in pair)


def test_run_stops_cleanly_on_sigterm_through_the_cli_handler(fake_sshuttle, tmp_path):
    """`kafkanet tunnel` turns SIGTERM into KeyboardInterrupt; run() then stops sshuttle and returns 0."""
    path, pids = fake_sshuttle
    script = driver(tmp_path, path)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "10.0.1.10:9092"  # printed once READY came
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "tunnel stopped: none of sshuttle's 2 process(es) running" in err, err
    assert not any(running(int(p)) for p in pids.read_text().split())


def test_descendants_follow_the_tree():
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        assert vpn.poll(5, lambda: len(vpn.descendants(proc.pid)) == 3), vpn.descendants(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_the_process_tree_is_found_without_proc_too(monkeypatch):
    """macOS has no /proc: ps gives the tree, kill(pid, 0) says who is alive."""
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        assert vpn.poll(5, lambda: len(vpn.descendants(proc.pid)) == 2)
        with_proc = vpn.descendants(proc.pid)
        real_isdir = os.path.isdir
        monkeypatch.setattr(vpn.os.path, "isdir", lambda p: False if p == "/proc/self" else real_isdir(p))
        assert vpn.descendants(proc.pid) == with_proc
        assert vpn.alive(with_proc) == sorted(with_proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert vpn.poll(5, lambda: not vpn.alive(with_proc - {proc.pid}))
