"""Small network-namespace primitives: list, find processes, open a socket inside one.

:func:`netns_socket` is how a test (or paramiko) reaches an emulated address
without any root-namespace route: a short-lived thread enters the namespace,
connects, and hands the socket back. A socket stays in the namespace it was
created in, whatever thread uses it later.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def list_netns(prefix: str = "") -> list[str]:
    """Named network namespaces (what ``ip netns list`` shows) starting with ``prefix``."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def _ns_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(names: Iterable[str]) -> dict[int, str]:
    """``{pid: netns}`` of every live process whose network namespace is one of ``names``."""
    wanted = {}
    for name in names:
        key = _ns_key(str(NETNS_DIR / name))
        if key is not None:
            wanted[key] = name
    if not wanted:
        return {}
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        key = _ns_key(f"/proc/{entry}/ns/net")
        if key in wanted:
            found[int(entry)] = wanted[key]
    return found


def process_name(pid: int) -> str | None:
    """``comm`` of a live, non-zombie process, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = stat.partition(" (")[2].rpartition(") ")
    if rest[:1] in ("Z", "X"):
        return None
    return name


def listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in the network namespace of ``pid``."""
    try:
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    wanted = f":{port:04X}"
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(wanted):
            return True
    return False


def enter_fd(fd: int, label: str) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({label}): {os.strerror(err)}")


def _enter(name: str) -> None:
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter_fd(fd, name)
    finally:
        os.close(fd)


def connect_from(
    enter: Callable[[], None], label: str, address: tuple[str, int], timeout: float, source: str | None = None
) -> socket.socket:
    """A TCP socket connected to ``address`` from a thread that first calls ``enter`` (e.g. a setns).

    The thread ends right after the connect, so this process never leaves its own
    namespace; a socket keeps the namespace it was made in. Raises the connect's
    OSError (``TimeoutError``, ``ConnectionRefusedError``...). The socket keeps
    ``timeout`` as its I/O timeout; change it as needed.
    """
    result: dict[str, object] = {}

    def work() -> None:
        try:
            enter()
            result["sock"] = socket.create_connection(
                address, timeout=timeout, source_address=(source, 0) if source else None
            )
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=work, name=f"netns-{label}", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    if thread.is_alive():
        raise TimeoutError(f"connect to {address[0]}:{address[1]} from {label} did not return in {timeout + 5.0:.0f} s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


def netns_socket(name: str, address: tuple[str, int], timeout: float, source: str | None = None) -> socket.socket:
    """A TCP socket connected to ``address`` from inside namespace ``name`` (connect bounded by ``timeout``).

    ``source`` binds the local address first (it must be one of the namespace's).
    """
    return connect_from(lambda: _enter(name), name, address, timeout, source)


def http_get(name: str, url_host: str, port: int = 80, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    """``(status, body)`` of a plain HTTP/1.0 GET made from inside namespace ``name``."""
    with netns_socket(name, (url_host, port), timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {url_host}\r\nUser-Agent: kafkanet-localvpc\r\n\r\n".encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise OSError(f"not an HTTP answer from {url_host}:{port}: {status_line!r}") from None
    return status, body.decode("utf-8", "replace")
