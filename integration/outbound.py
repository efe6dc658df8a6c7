"""Outbound HTTP from an instance through the NAT, over the session's SSH transport (testinfra).

The probe URL answers with the caller's address as the internet sees it
(like checkip). Run on the host itself with curl, or Python where curl is
missing; bounded remotely and locally. Only failures that clear up by
themselves (connect refused or timed out while a NAT boots) are retried, a
few times. The fixture that runs it on every instance is ``outbound`` (conftest).
"""

from __future__ import annotations

import shlex
from typing import Any

from integration.support import Transient, fail, poll

CONNECT_TIMEOUT = 5
MAX_TIME = 8
REMOTE_BUDGET = 15
# curl exit codes for failures a booting NAT explains: couldn't connect, timeout, empty reply, recv error
TRANSIENT_CURL = {7: "could not connect", 28: "timed out", 52: "empty reply", 56: "receive failure"}


def fetch_command(url: str) -> str:
    python = (
        "import sys, urllib.request; "
        f"sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout={MAX_TIME}).read().decode())"
    )
    quoted = shlex.quote(url)
    return (
        f"if command -v curl >/dev/null 2>&1; then "
        f"exec curl -sS --fail --connect-timeout {CONNECT_TIMEOUT} --max-time {MAX_TIME} {quoted}; "
        f"else exec python3 -c {shlex.quote(python)} {quoted}; fi"
    )


def fetch_through_nat(name: str, host: Any, url: str) -> str:
    """The probe URL's body as fetched on ``host``; fails (pytest) naming the host and what it saw."""
    command = fetch_command(url)

    def fetch() -> str:
        result = host.run("timeout -k 2 %s /bin/sh -c %s", str(REMOTE_BUDGET), command)
        if result.rc in TRANSIENT_CURL:
            raise Transient(f"curl exit {result.rc} ({TRANSIENT_CURL[result.rc]}): {result.stderr.strip()[-200:]}")
        if result.rc != 0:
            said = (result.stderr or result.stdout).strip()[-300:]
            fail(name, f"outbound HTTP GET {url}", f"exit {result.rc}: {said}")
        return result.stdout.strip()

    return poll(f"{name}: outbound HTTP GET {url} through the NAT", fetch, attempts=2, interval=2.0)
