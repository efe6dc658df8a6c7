"""TCP reachability from the operator's side: bounded, from where SSH to the bastion starts.

With no ``ssh.proxy_command`` (target aws: the operator's machine *is*
outside) a probe is a plain ``connect`` with a timeout. With one (target
local: e.g. ``ip netns exec kn_<env>_operator nc %h %p``) the command is run
once for the bastion's SSH address; the process of its tree that holds the
ESTABLISHED socket to it shows where the operator's packets start (its network
namespace, found through ``/proc/PID/fd`` and ``/proc/PID/net/tcp``), and every
probe connects from that namespace. The positive control (the bastion's SSH
port answers) and the negative probes share :func:`probe_tcp`, so a probe that
reaches nothing cannot pass: anything it cannot classify is ``error``, which
never counts as closed.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass

from generator.access.vantage import Vantage, VantageError

__all__ = ["Probe", "Vantage", "VantageError", "probe_tcp"]

OPEN = "open"
REFUSED = "refused"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
ERROR = "error"
CLOSED_OUTCOMES = (REFUSED, TIMEOUT, UNREACHABLE)


@dataclass(frozen=True)
class Probe:
    address: str
    port: int
    outcome: str  # open | refused | timeout | unreachable | error
    detail: str
    seconds: float
    via: str  # where it was tried from

    @property
    def closed(self) -> bool:
        return self.outcome in CLOSED_OUTCOMES

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.address}:{self.port} {self.outcome} after {self.seconds:.1f} s{extra}"


def probe_tcp(vantage: Vantage, address: str, port: int, budget: float) -> Probe:
    """Try a TCP connection to ``address:port`` from ``vantage`` for at most ``budget`` seconds."""
    started = time.monotonic()

    def done(outcome: str, detail: str = "") -> Probe:
        return Probe(address, port, outcome, detail, time.monotonic() - started, vantage.description)

    try:
        vantage.connect(address, port, budget).close()
        return done(OPEN)
    except ConnectionRefusedError:
        return done(REFUSED, "TCP reset")
    except TimeoutError:
        return done(TIMEOUT, "no answer to SYN")
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return done(UNREACHABLE, exc.strerror or "")
        return done(ERROR, repr(exc))
