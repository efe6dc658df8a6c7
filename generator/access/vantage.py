"""Where the operator's connections start: the vantage point of reachability probes.

With no proxy command (target aws: the operator's machine *is* outside) it is
this process's own network namespace. With one (target local: e.g. ``ip netns
exec kn_<env>_operator nc %h %p``) the command is run once for the bastion's
SSH address; the process of its tree that holds the ESTABLISHED socket to it
shows where the operator's packets start (its network namespace, found through
``/proc/PID/fd`` and ``/proc/PID/net/tcp``), and every connection is made from
that namespace. Part of the suite's public API (see ``pyproject.toml``).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time
from pathlib import Path

from generator.access.proxy import expand_proxy_command, stop_process
from localvpc.netns import connect_from, enter_fd

TCP_ESTABLISHED = "01"
TCP_SYN_SENT = "02"
_WATCH_INTERVAL = 0.02


class Vantage:
    """The network namespace the operator's connections start from; probes connect from there.

    Without a proxy command it is this process's own. With one, the command is
    run once for the bastion's SSH address and the process of its tree that
    holds the ESTABLISHED socket to it is found: its network namespace is the
    vantage point (held open by a file descriptor until :meth:`close`).
    """

    def __init__(self, description: str, netns_fd: int | None = None) -> None:
        self.description = description
        self._fd = netns_fd

    @classmethod
    def direct(cls) -> Vantage:
        return cls("direct from this machine")

    @classmethod
    def of_process(cls, pid: int, address: str, port: int, what: str) -> Vantage:
        """The namespace from which ``pid`` (or a descendant) holds an ESTABLISHED connection to ``address:port``."""
        for member, state in sorted(_socket_states(pid, address, port)):
            if state == TCP_ESTABLISHED:
                try:
                    fd = os.open(f"/proc/{member}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    raise VantageError(f"cannot open the network namespace of {what} (pid {member}): {exc}") from None
                return cls(f"the network namespace {what} dials from", fd)
        raise VantageError(
            f"{what} (pid {pid}) holds no ESTABLISHED TCP connection to {address}:{port}; "
            "it must dial the target itself to serve as the probes' vantage point"
        )

    @property
    def same_as_ours(self) -> bool:
        """Whether probes would start in this process's own network namespace."""
        if self._fd is None:
            return True
        return os.fstat(self._fd).st_ino == os.stat("/proc/self/ns/net").st_ino

    @classmethod
    def of_proxy_command(cls, proxy_command: str, address: str, port: int, budget: float = 10.0) -> Vantage:
        """Run ``proxy_command`` for ``address:port`` and adopt the namespace it dials from.

        Raises :class:`VantageError` when the command does not itself open a
        TCP connection to ``address:port`` within ``budget``.
        """
        argv = expand_proxy_command(proxy_command, address, port)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise VantageError(f"cannot run the proxy command {' '.join(argv)}: {exc}") from None
        try:
            deadline = time.monotonic() + budget
            while time.monotonic() < deadline:
                if any(state == TCP_ESTABLISHED for _, state in _socket_states(proc.pid, address, port)):
                    return cls.of_process(proc.pid, address, port, f"`{' '.join(argv)}`")
                if proc.poll() is not None:
                    said = _read_stderr(proc)
                    raise VantageError(
                        f"the proxy command {' '.join(argv)} exited {proc.returncode} without connecting"
                        + (f": {said[-200:]}" if said else "")
                    )
                time.sleep(_WATCH_INTERVAL)
            raise VantageError(
                f"the proxy command {' '.join(argv)} held no TCP connection to {address}:{port} "
                f"after {budget:g} s (it must dial the target itself to serve as a probe vantage point)"
            )
        finally:
            stop_process(proc, 2.0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """A TCP socket connected to ``address:port`` from the vantage point (raises the connect's OSError)."""
        if self._fd is None:
            return socket.create_connection((address, port), timeout=timeout)
        fd = self._fd
        return connect_from(lambda: enter_fd(fd, self.description), self.description, (address, port), timeout)


class VantageError(Exception):
    """The probe's vantage point cannot be established: every probe then fails, none passes."""


def _read_stderr(proc: subprocess.Popen) -> str:
    """What an exited command wrote on stderr (bounded: a lingering grandchild cannot block us)."""
    if proc.stderr is None:
        return ""
    ready, _, _ = select.select([proc.stderr], [], [], 1.0)
    if not ready:
        return ""
    return os.read(proc.stderr.fileno(), 65536).decode("utf-8", "replace").strip()


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _hex_address(address: str, port: int) -> str:
    packed = socket.inet_aton(address)
    return f"{struct.unpack('<I', packed)[0]:08X}:{port:04X}"


def _socket_states(pid: int, address: str, port: int) -> set[tuple[int, str]]:
    """(pid, TCP state) of the sockets held by ``pid``'s process tree whose peer is ``address:port``."""
    try:
        wanted = _hex_address(address, port)
    except OSError:
        return set()
    states: set[tuple[int, str]] = set()
    for member in _process_tree(pid):
        inodes = _socket_inodes(member)
        if not inodes:
            continue
        try:
            lines = Path(f"/proc/{member}/net/tcp").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[2] == wanted and fields[9] in inodes:
                states.add((member, fields[3]))
    return states
