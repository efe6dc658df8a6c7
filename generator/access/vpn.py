"""``kafkanet tunnel SPEC --vpn``: every TCP client reaches the VPC through the bastion, with sshuttle.

The SOCKS5 tunnel (:mod:`generator.access.commands`) serves kafka-python only:
librdkafka (confluent-kafka, kcat, every binding of it) has no proxy support,
the Java client ignores the JVM's SOCKS settings, and brokers advertise private
addresses, so port forwards alone send a client on to ``10.0.x.10:9092``.
sshuttle (https://sshuttle.readthedocs.io) is the well-kept tool built for exactly
this: firewall rules send TCP for the VPC CIDR to a local listener, which carries
it over one SSH session to a small Python server it starts on the bastion.

What it needs, checked before anything changes (one line and exit 2 otherwise):
root (sshuttle's firewall rules), sshuttle and the OpenSSH client on this
machine, an applied environment (its inventory and ``build/<name>/ssh_config``,
which pins the host keys in its own known_hosts) and Python on the bastion
(AL2023 ships python3; a preflight over that same SSH config asks for it).

Where it runs: on the local target inside the operator's network namespace
(``kn_<env>_operator``, where the emulated internet starts): its nftables
rules, its listener and its processes live there, and nothing changes in this
machine's own namespace; clients run there too (``ip netns exec``). On AWS it
runs in this machine's namespace, routing only the VPC CIDR.

Stopping (Ctrl-C, SIGTERM, sshuttle ending): sshuttle gets SIGINT (its own
clean exit), its firewall process undoes the rules, and every process of its
tree is waited for (SIGKILL after a bound); on the local target the operator
namespace is then checked for sshuttle's nftables tables, and one it left
would be removed and said so.
"""

from __future__ import annotations

import ctypes
import ipaddress
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from generator.access.errors import SshError
from generator.base.errors import InfraError, PrerequisiteError, UserError
from generator.base.procs import cmdline, poll
from generator.environment.sshconfig import alias
from localvpc.netns import list_netns

READY_BUDGET = 60.0  # sshuttle: SSH session, server upload, firewall rules
PREFLIGHT_BUDGET = 30.0  # the ssh that asks the bastion for Python
INTERRUPT_BUDGET = 10.0  # SIGINT: sshuttle's clean exit (its firewall process undoes the rules)
TERM_BUDGET = 5.0  # then SIGTERM, then SIGKILL
TREE_BUDGET = 10.0  # every process sshuttle started must be gone by then
# A tunnel that drops (the bastion's address moved to a NAT pair's standby, or the SSH
# connection broke) is started again until it stays up STABLE seconds, for at most this long.
RECONNECT_BUDGET = 90.0
STABLE = 5.0
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # between attempts that did not come up; the last repeats
SSH_CONNECT_TIMEOUT = 15
# sshuttle's own server command tries python3, then python; the preflight asks the same
PYTHON_PROBE = "command -v python3 || command -v python"
TABLE_PREFIX = "sshuttle-"  # sshuttle's nft method: table inet sshuttle-ipv4-<port>

Say = Callable[[str], None]


# --- what it needs ----------------------------------------------------------------------------


def find_sshuttle() -> str:
    """sshuttle beside this Python (``pip install 'kafkanet[vpn]'``, also under sudo's PATH), else on PATH."""
    beside = Path(sys.executable).with_name("sshuttle")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("sshuttle")
    if found is None:
        raise PrerequisiteError(
            "--vpn needs sshuttle, which is not installed: `pip install 'kafkanet[vpn]'` in kafkanet's environment, "
            "or `apt-get install sshuttle` (Debian/Ubuntu), `brew install sshuttle` (macOS)"
        )
    return found


def require_tools(local: bool) -> None:
    missing = [tool for tool in ("ssh", *(("ip", "nft") if local else ())) if shutil.which(tool) is None]
    if missing:
        raise PrerequisiteError(
            f"--vpn needs {', '.join(missing)} on PATH: install "
            + " and ".join({"ssh": "the OpenSSH client", "ip": "iproute2", "nft": "nftables"}[t] for t in missing)
        )


def require_root(target: str, spec: str) -> None:
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "--vpn needs root: sshuttle adds firewall (NAT) rules"
            + (" inside the operator namespace" if target == "local" else " on this machine")
            + f"; run `sudo -E kafkanet tunnel {spec} --target {target} --vpn` "
            "(sudo's PATH may not have kafkanet: give its full path, e.g. .venv/bin/kafkanet)"
        )


def operator_netns(plane_json: Path, env_name: str) -> str:
    """The operator namespace of a live local environment, from the data plane's record; refused when gone."""
    try:
        name = json.loads(plane_json.read_text())["operator_netns"]
    except FileNotFoundError:
        raise UserError(f"{env_name}: no local data plane record ({plane_json}); run `kafkanet apply` first") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{plane_json}: not a data plane record ({exc!r}); run `kafkanet apply` again") from None
    if name not in list_netns(name):
        raise UserError(f"{env_name}: the operator namespace {name} does not exist (the local data plane is not "
                        "running, e.g. after a reboot); run `kafkanet apply` again")  # fmt: skip
    return name


def require_ssh_config(path: Path, env_name: str) -> Path:
    if not path.is_file():
        raise UserError(f"{env_name}: no {path} (written by `kafkanet apply`); run `kafkanet apply` again")
    return path


def overlapping_addresses(cidr: str, addresses: Iterable[str]) -> list[str]:
    """This machine's addresses inside the VPC CIDR: routing it through the bastion would take them over."""
    net = ipaddress.ip_network(cidr, strict=False)
    out = []
    for text in addresses:
        try:
            if ipaddress.ip_address(text) in net:
                out.append(text)
        except ValueError:
            continue
    return out


def local_ipv4_addresses() -> list[str]:
    """This namespace's IPv4 addresses (``ip -j``); empty where ``ip`` is missing (macOS) or says nothing usable."""
    if shutil.which("ip") is None:
        return []
    try:
        out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, timeout=10).stdout
        return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", []) if "local" in a]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return []


def refuse_overlap(cidr: str, addresses: Iterable[str]) -> None:
    taken = overlapping_addresses(cidr, addresses)
    if taken:
        raise UserError(
            f"this machine's address {', '.join(taken)} is inside the VPC CIDR {cidr}: --vpn would send this "
            "network's own traffic to the bastion; use the SOCKS5 tunnel (without --vpn) from this network"
        )


# --- the commands -----------------------------------------------------------------------------


@dataclass(frozen=True)
class VpnPlan:
    """What ``--vpn`` runs, as argument lists (built without root, unit-tested)."""

    environment: str
    cidr: str  # the VPC's, the only traffic routed
    bastion: str  # the bastion's Host alias in ssh_config
    ssh_config: Path
    sshuttle: str
    netns: str | None = None  # local: the operator namespace; aws: None (this machine's own)
    method: str | None = None  # local: nft (sshuttle's tables, easy to check); aws: sshuttle's choice
    verbose: bool = False

    def ssh_command(self) -> list[str]:
        """OpenSSH over the environment's own config: its key, its pinned host keys, never a prompt."""
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT}"]  # fmt: skip

    def _where(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def sshuttle_argv(self) -> list[str]:
        argv = [self.sshuttle, "--disable-ipv6", "-e", shlex.join(self.ssh_command()), "-r", self.bastion]
        if self.method:
            argv += ["--method", self.method]
        if self.verbose:
            argv.append("-v")
        return self._where([*argv, self.cidr])

    def preflight_argv(self) -> list[str]:
        return self._where([*self.ssh_command(), self.bastion, PYTHON_PROBE])

    def client_prefix(self) -> list[str]:
        """What a client command is run under to use the tunnel: ``ip netns exec NS`` locally, nothing on AWS."""
        return self._where([])


def plan(inventory: Mapping[str, Any], ssh_config: Path, sshuttle: str, netns: str | None, verbose: bool) -> VpnPlan:
    return VpnPlan(
        environment=inventory["environment"],
        cidr=str(ipaddress.ip_network(inventory["network"]["vpc_cidr"], strict=False)),
        bastion=alias(inventory, inventory["bastion"].get("name", "bastion")),
        ssh_config=ssh_config,
        sshuttle=sshuttle,
        netns=netns,
        method="nft" if netns else None,
        verbose=verbose,
    )


def judge_preflight(rc: int, stdout: str, stderr: str, plan_: VpnPlan, target: str) -> str:
    """The bastion's Python (its path), or the error that says what is wrong."""
    said = " ".join(stderr.split())[-400:]
    if rc == 0 and stdout.strip():
        return stdout.strip().splitlines()[0]
    if rc == 255:  # OpenSSH's own failure: connection, authentication, host key
        raise SshError(f"{plan_.bastion}: ssh over {plan_.ssh_config} failed (exit 255): {said or 'no message'}")
    if rc in (0, 1, 127):  # the probe ran: neither python3 nor python on the bastion's PATH
        hint = ("AL2023 ships python3; install it (`kafkanet ssh SPEC bastion -- sudo dnf install -y python3`)"
                if target == "aws" else "the local bastion uses this machine's python3: install python3")  # fmt: skip
        raise UserError(f"{plan_.bastion} has no python3 or python on PATH, and sshuttle runs its server there: "
                        f"{hint}, or use the SOCKS5 tunnel (without --vpn) with kafka-python")  # fmt: skip
    raise SshError(f"{plan_.bastion}: `{PYTHON_PROBE}` exited {rc}: {said or 'no message'}")


def preflight(plan_: VpnPlan, target: str) -> str:
    """Ask the bastion for Python through the very SSH config sshuttle will use; its path."""
    argv = plan_.preflight_argv()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=PREFLIGHT_BUDGET, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SshError(f"{plan_.bastion}: no answer over ssh within {PREFLIGHT_BUDGET:g} s "
                       f"({shlex.join(argv)})") from None  # fmt: skip
    return judge_preflight(done.returncode, done.stdout, done.stderr, plan_, target)


# --- the namespace's state --------------------------------------------------------------------


def sshuttle_tables(netns: str) -> list[str]:
    """sshuttle's nftables tables in ``netns`` (``inet sshuttle-ipv4-12300``...)."""
    out = subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"],
                         capture_output=True, text=True, timeout=10)  # fmt: skip
    if out.returncode != 0:
        raise InfraError(f"{netns}: nft list tables failed: {out.stderr.strip()[-300:]}")
    tables = []
    for line in out.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[2].startswith(TABLE_PREFIX):
            tables.append(f"{words[1]} {words[2]}")
    return tables


def _parents() -> dict[int, int]:
    """``{pid: ppid}`` of every process now (``/proc``; ``ps`` where there is none, as on macOS)."""
    if not os.path.isdir("/proc/self"):
        listing = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, timeout=10).stdout
        return {int(pid): int(ppid) for pid, ppid in (row.split() for row in listing.splitlines() if row.strip())}
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    return out


def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it now (sshuttle's firewall process, ssh, the proxy command)."""
    parents = _parents()
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return tree


def alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` still running; a zombie has ended (it holds nothing)."""
    if os.path.isdir("/proc/self"):
        return sorted(p for p in pids if cmdline(p) is not None)
    return sorted(p for p in pids if _signalable(p))


def _signalable(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- running it -------------------------------------------------------------------------------


_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # pragma: no cover (runs in the child, between fork and exec)
    # Ctrl-C is ours to forward (sshuttle leads its own session); a parent started with SIGINT
    # ignored (a background job) would otherwise pass that on and sshuttle could not exit cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # kafkanet killed outright: sshuttle gets SIGTERM, its firewall process then undoes the rules (Linux)
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _hold_signals() -> dict[int, Any]:
    """Ignore SIGINT and SIGTERM for a while (main thread only); the handlers to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}


# a Unix socket's path holds at most 107 bytes (sun_path is 108 with its NUL)
UNIX_PATH_MAX = 107


def notify_directory() -> str:
    """A fresh directory for sshuttle's READY socket: under TMPDIR, or under /tmp when TMPDIR is too deep for one."""
    notify_dir = tempfile.mkdtemp(prefix="kafkanet-vpn-")
    if len(os.fsencode(os.path.join(notify_dir, "notify"))) <= UNIX_PATH_MAX:
        return notify_dir
    os.rmdir(notify_dir)
    return tempfile.mkdtemp(prefix="kafkanet-vpn-", dir="/tmp")


@dataclass
class Tunnel:
    """A running sshuttle; :meth:`stop` leaves nothing behind (also when it never got ready)."""

    plan: VpnPlan
    process: subprocess.Popen
    notify_dir: str
    notify: socket.socket
    tail: deque = field(default_factory=lambda: deque(maxlen=15))
    tree: set[int] = field(default_factory=set)
    tables_before: list[str] = field(default_factory=list)  # sshuttle tables in the namespace before it started
    relay: threading.Thread | None = None

    @classmethod
    def start(cls, plan_: VpnPlan, echo: Callable[[str], None]) -> Tunnel:
        before = sshuttle_tables(plan_.netns) if plan_.netns else []
        notify_dir = notify_directory()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            path = os.path.join(notify_dir, "notify")
            notify.bind(path)  # a path, not an abstract socket: those belong to one network namespace
            env = {**os.environ, "NOTIFY_SOCKET": path}  # sshuttle says READY=1 once its rules are in place
            process = subprocess.Popen(plan_.sshuttle_argv(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, env=env, start_new_session=True,
                                       preexec_fn=_child_setup)  # fmt: skip
        except BaseException:
            notify.close()
            shutil.rmtree(notify_dir, ignore_errors=True)
            raise
        tunnel = cls(plan_, process, notify_dir, notify, tables_before=before)
        tunnel.relay = threading.Thread(target=tunnel._relay, args=(echo,), name="sshuttle-stderr", daemon=True)
        tunnel.relay.start()
        return tunnel

    def _relay(self, echo: Callable[[str], None]) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                echo(line)

    def last_lines(self) -> str:
        if self.relay is not None:
            self.relay.join(timeout=2.0)
        return " | ".join(self.tail) or "nothing on stderr"

    def wait_ready(self, budget: float = READY_BUDGET) -> None:
        """Until sshuttle reports READY=1 (its firewall rules are in place); InfraError if it ends or times out."""
        deadline = time.monotonic() + budget
        self.notify.settimeout(0.2)
        while True:
            try:
                message = self.notify.recv(4096).decode("utf-8", "replace")
            except TimeoutError:
                message = ""
            if "READY=1" in message.split("\n"):
                self.tree = descendants(self.process.pid)
                # nothing more to hear: the socket's file goes now, so even a kafkanet killed outright leaves none
                shutil.rmtree(self.notify_dir, ignore_errors=True)
                return
            rc = self.process.poll()
            if rc is not None:
                raise InfraError(f"sshuttle ended (exit {rc}) before the tunnel was up: {self.last_lines()}")
            if time.monotonic() >= deadline:
                raise InfraError(f"sshuttle: no tunnel after {budget:g} s: {self.last_lines()}")

    def stop(self) -> list[str]:
        """Stop sshuttle and everything it started; what had to be cleaned up after it (normally nothing)."""
        cleaned: list[str] = []
        held = _hold_signals()  # a second Ctrl-C must not cut the cleanup short (it is bounded)
        try:
            self.tree |= descendants(self.process.pid) if self.process.poll() is None else set()
            for sig, budget in ((signal.SIGINT, INTERRUPT_BUDGET), (signal.SIGTERM, TERM_BUDGET)):
                if self.process.poll() is not None:
                    break
                try:
                    self.process.send_signal(sig)
                    self.process.wait(timeout=budget)
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
                cleaned.append(f"sshuttle (pid {self.process.pid}) killed: it did not stop on SIGINT or SIGTERM")
            # its firewall process undoes the rules once sshuttle is gone, then ends
            if not poll(TREE_BUDGET, lambda: not alive(self.tree), interval=0.05):
                for pid in alive(self.tree):
                    cleaned.append(f"process {pid} ({' '.join((cmdline(pid) or ['?'])[:3])}) killed")
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                poll(5.0, lambda: not alive(self.tree), interval=0.05)
            netns = self.plan.netns
            if netns:  # ours: any sshuttle table that was not there before it started
                for table in sshuttle_tables(netns):
                    if table not in self.tables_before:
                        subprocess.run(["ip", "netns", "exec", netns, "nft", "delete", "table", *table.split()],
                                       capture_output=True, text=True, timeout=10)  # fmt: skip
                        cleaned.append(f"nft table {table} removed from {netns}")
                left = [t for t in sshuttle_tables(netns) if t not in self.tables_before]
                if left:
                    raise InfraError(f"{netns}: sshuttle's table(s) {', '.join(left)} are still there; "
                                     f"remove them: ip netns exec {netns} nft delete table {left[0]}")  # fmt: skip
            running = alive(self.tree)
            if running:
                raise InfraError(f"sshuttle's process(es) {', '.join(map(str, running))} still run after SIGKILL")
        finally:
            for sig, handler in held.items():
                signal.signal(sig, handler)
            if self.relay is not None:
                self.relay.join(timeout=2.0)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.notify.close()
            shutil.rmtree(self.notify_dir, ignore_errors=True)
        return cleaned


def run(plan_: VpnPlan, target: str, say: Say, echo: Callable[[str], None], bootstrap: str) -> int:
    """Preflight, start sshuttle, print how to use it, hold it until interrupted; 0 then.

    sshuttle ending by itself (the SSH connection dropped, e.g. a NAT pair's failover moved
    the bastion's address to the standby) is followed by a new sshuttle, until one stays up;
    when none does within :data:`RECONNECT_BUDGET` seconds that is an SshError (exit 3).
    """
    if plan_.netns:
        taken = sshuttle_tables(plan_.netns)
        if taken:
            raise UserError(f"{plan_.netns} already has sshuttle's table(s) {', '.join(taken)}: another "
                            f"`kafkanet tunnel --vpn` of {plan_.environment} is running; stop it first")  # fmt: skip
    python = preflight(plan_, target)
    current = [Tunnel.start(plan_, echo)]  # the running sshuttle, whichever incarnation: stopped at the end
    try:
        try:
            current[0].wait_ready()
            prefix = shlex.join(plan_.client_prefix())
            where = f"from the operator namespace {plan_.netns}" if plan_.netns else "from this machine"
            print(bootstrap, flush=True)
            print(f"{prefix + ' ' if prefix else ''}kcat -b {bootstrap.split(',')[0]} -L", flush=True)
            say(f"transparent tunnel to {plan_.environment} through {plan_.bastion} (sshuttle pid "
                f"{current[0].process.pid}, {python} on the bastion): TCP to {plan_.cidr} {where} goes through the "
                "bastion; every Kafka client works, nothing to configure; Ctrl-C to stop")  # fmt: skip
            if plan_.netns:
                say(f"local target: run clients inside {plan_.netns} (`{prefix} CLIENT ...`); this machine's own "
                    "network namespace is not changed")  # fmt: skip
            _hold(plan_, current, say, echo)  # returns only by an exception
        except KeyboardInterrupt:
            tunnel = current[0]
            leftovers = tunnel.stop()
            for line in leftovers:
                say(f"after sshuttle: {line}")
            checked = (f"no sshuttle table left in {plan_.netns}, " if plan_.netns else "")
            say(f"tunnel stopped: {checked}none of sshuttle's {len(tunnel.tree)} process(es) running")
            return 0
    finally:
        tunnel = current[0]
        if tunnel.process.poll() is None or tunnel.notify.fileno() != -1:
            for line in tunnel.stop():
                say(f"after sshuttle: {line}")


def _hold(plan_: VpnPlan, current: list[Tunnel], say: Say, echo: Callable[[str], None]) -> NoReturn:
    """Keep the tunnel up: each time sshuttle ends by itself, start another (see :func:`run`)."""
    up_since = time.monotonic()
    outage: float | None = None  # when the drops that are not over yet began
    while True:
        rc = current[0].process.wait()
        dropped = time.monotonic()
        if outage is None or dropped - up_since >= STABLE:
            outage = dropped
        why = current[0].last_lines()
        for line in current[0].stop():
            say(f"after sshuttle: {line}")
        deadline = outage + RECONNECT_BUDGET
        if dropped >= deadline:
            raise SshError(f"sshuttle ended (exit {rc}): the tunnel to {plan_.environment} stopped and did not "
                           f"stay up for {RECONNECT_BUDGET:g} s of reconnecting; {why}")  # fmt: skip
        say(f"sshuttle ended (exit {rc}): the connection to {plan_.bastion} dropped (a NAT pair's failover "
            f"moves its address to the standby); reconnecting, for at most {deadline - dropped:.0f} s")  # fmt: skip
        _start_again(plan_, current, echo, deadline, rc)
        up_since = time.monotonic()
        say(f"tunnel back after {up_since - dropped:.1f} s (sshuttle pid {current[0].process.pid})")


def _start_again(plan_: VpnPlan, current: list[Tunnel], echo: Callable[[str], None], deadline: float,
                 rc: int) -> None:  # fmt: skip
    """A new sshuttle in ``current[0]``, READY before ``deadline``; SshError when none is."""
    for attempt in itertools.count(1):
        current[0] = Tunnel.start(plan_, echo)
        try:
            current[0].wait_ready(budget=max(1.0, min(READY_BUDGET, deadline - time.monotonic())))
            return
        except InfraError as exc:
            current[0].stop()
            pause = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]
            if time.monotonic() + pause >= deadline:
                raise SshError(f"sshuttle ended (exit {rc}): the tunnel to {plan_.environment} stopped and did "
                               f"not come back within {RECONNECT_BUDGET:g} s ({attempt} attempt(s)); "
                               f"the last: {exc}") from None  # fmt: skip
            time.sleep(pause)


__all__ = [
    "PYTHON_PROBE",
    "Tunnel",
    "VpnPlan",
    "descendants",
    "find_sshuttle",
    "judge_preflight",
    "local_ipv4_addresses",
    "operator_netns",
    "overlapping_addresses",
    "plan",
    "preflight",
    "refuse_overlap",
    "require_root",
    "require_ssh_config",
    "require_tools",
    "run",
    "sshuttle_tables",
]
