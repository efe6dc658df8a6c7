"""The bastion's proxy command as a process: its argv, its socket, and stopping it.

An inventory's ``ssh.proxy_command`` (OpenSSH tokens ``%h %p %r %%``; on
target local e.g. ``ip netns exec kn_<env>_operator nc %h %p``), when set,
carries the SSH session to the bastion instead of a direct TCP connect.
This module owns turning it into an argv (:func:`expand_proxy_command`),
running it as a real socket (:class:`ProxySocket`, which ``ssh.Bastion`` hands
to paramiko) and stopping a process within a bound (:func:`stop_process`,
also used by ``vantage`` for its own run of the command).
"""

from __future__ import annotations

import os
import select
import shlex
import signal
import socket
import subprocess

from generator.access.errors import SshError
from generator.base.errors import UserError

PROXY_STOP_BUDGET = 3.0  # SIGTERM before SIGKILL for the proxy command


def expand_proxy_command(command: str, host: str, port: int, user: str = "") -> list[str]:
    """argv of an OpenSSH-style ProxyCommand with ``%h %p %r %%`` replaced (each token quoted safely)."""
    out: list[str] = []
    for word in shlex.split(command):
        text, i = [], 0
        while i < len(word):
            if word[i] == "%" and i + 1 < len(word):
                token = word[i + 1]
                replacement = {"h": host, "p": str(port), "r": user, "%": "%"}.get(token)
                if replacement is None:
                    raise UserError(f"ssh.proxy_command: unsupported token %{token} in {command!r} (use %h %p %r %%)")
                text.append(replacement)
                i += 2
            else:
                text.append(word[i])
                i += 1
        out.append("".join(text))
    if not out:
        raise UserError("ssh.proxy_command is empty")
    return out


class ProxySocket:
    """A ProxyCommand as a real socket: the command's stdin/stdout is one end of a socketpair.

    Unlike :class:`paramiko.ProxyCommand`, a dead command reads as EOF at
    once (no busy loop), timeouts are socket timeouts, and :meth:`close`
    waits for the process (SIGTERM, then SIGKILL) so nothing is left behind.
    """

    def __init__(self, argv: list[str], what: str) -> None:
        self.argv = argv
        self.what = what
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=theirs,
                stdout=theirs,
                stderr=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            ours.close()
            raise SshError(f"{what}: cannot run the proxy command {shlex.join(argv)}: {exc}") from None
        finally:
            theirs.close()
        self.sock = ours

    def stderr_tail(self, limit: int = 400, wait: float = 1.0) -> str:
        """What the command said on stderr, once it has exited (waits at most ``wait`` s; never blocks longer)."""
        if self.process.stderr is None:
            return ""
        try:
            self.process.wait(timeout=wait)
            ready, _, _ = select.select([self.process.stderr], [], [], 0.5)
            data = os.read(self.process.stderr.fileno(), 65536) if ready else b""
        except (subprocess.TimeoutExpired, OSError, ValueError):
            return ""
        return data.decode("utf-8", "replace").strip()[-limit:]

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            stop_process(self.process, PROXY_STOP_BUDGET)


def stop_process(process: subprocess.Popen, budget: float) -> None:
    """SIGTERM, wait up to ``budget``, then SIGKILL and wait; closes its pipes."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        except ProcessLookupError:
            pass
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()


__all__ = ["ProxySocket", "expand_proxy_command", "stop_process"]
