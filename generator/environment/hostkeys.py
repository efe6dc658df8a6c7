"""Pin the SSH host keys of an AWS environment from its instances' console output.

cloud-init prints every host key it generated to the serial console between
``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY KEYS-----``.
EC2 keeps that console output, and reading it goes through the AWS API with
the infra owner's credentials, not through the network path being checked. So
the keys are known before the first SSH connection, and a man in the middle on
that first connection is refused like any other changed key. (On the local
target the data plane generates the keys itself and writes known_hosts.)

EC2 publishes console output a few minutes after boot; the wait is bounded and
a timeout names the instance, what it saw and what to do.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from generator.base.errors import InfraError

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
DEFAULT_BUDGET = 600.0  # EC2 publishes console output a few minutes after boot
POLL_INTERVAL = 15.0


@dataclass(frozen=True)
class Host:
    name: str  # bastion, broker-1, ...
    instance_id: str
    addresses: tuple[str, ...]  # how SSH will reach it: the bastion's public IP, a broker's private IP


def bastion_hosts(bastion: Mapping[str, Any]) -> list[Host]:
    """The hosts behind the bastion's address: the NAT, and a pair's standby too.

    The Elastic IP moves to the standby on failover, so both instances' keys are
    pinned under that one address (``kafkanet ssh`` accepts either, no other).
    """
    address = (bastion["public_ip"],)
    hosts = [Host("bastion", bastion["instance_id"], address)]
    standby = bastion.get("standby")
    if standby:
        hosts.append(Host("bastion-standby", standby["instance_id"], address))
    return hosts


def host_keys(console_text: str) -> list[str]:
    """``["ssh-ed25519 AAAA...", ...]`` from the last host-key block of a console log (type and key only)."""
    start = console_text.rfind(BEGIN)
    if start < 0:
        return []
    end = console_text.find(END, start)
    if end < 0:
        return []
    keys = []
    for line in console_text[start + len(BEGIN):end].splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in KEY_TYPES and _is_base64(words[1]):
            keys.append(f"{words[0]} {words[1]}")
    return keys


def _is_base64(text: str) -> bool:
    try:
        return bool(base64.b64decode(text, validate=True))
    except ValueError:
        return False


def _console_text(ec2: Any, instance_id: str) -> str:
    # botocore decodes the API's base64 (its after-call handler for GetConsoleOutput)
    # not Latest=True: Xen instances (the seed's t2.micro NAT) do not support it
    return ec2.get_console_output(InstanceId=instance_id).get("Output") or ""


def pinned(known_hosts_text: str) -> dict[str, list[str]]:
    """``{instance_id: [keys]}`` from a known_hosts file this module wrote (the id is each line's comment)."""
    out: dict[str, list[str]] = {}
    for line in known_hosts_text.splitlines():
        words = line.split()
        if len(words) == 4 and words[1] in KEY_TYPES and words[3].startswith("i-"):
            out.setdefault(words[3], []).append(f"{words[1]} {words[2]}")
    return out


def known_hosts(
    ec2: Any,
    hosts: list[Host],
    *,
    previous: str = "",
    budget: float = DEFAULT_BUDGET,
    interval: float = POLL_INTERVAL,
    say: Callable[[str], None] = lambda _line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """known_hosts text for ``hosts``, polling each one's console output until its keys appear.

    Keys already pinned in ``previous`` for the same instance are kept, not read again:
    the console keeps only its last 64 KB, so a long-running instance's boot-time keys
    may be gone from it, and a replaced instance (new id) is read afresh.
    """
    deadline = time.monotonic() + budget
    before = pinned(previous)
    found = {h.name: before[h.instance_id] for h in hosts if h.instance_id in before}
    while True:
        for host in hosts:
            if host.name not in found:
                keys = host_keys(_console_text(ec2, host.instance_id))
                if keys:
                    found[host.name] = keys
        waiting = [h for h in hosts if h.name not in found]
        if not waiting:
            break
        if time.monotonic() + interval > deadline:
            names = ", ".join(f"{h.name} ({h.instance_id})" for h in waiting)
            raise InfraError(
                f"no SSH host keys in the console output of {names} after {budget:g} s "
                f"(no '{BEGIN}' block yet); run `kafkanet apply` again in a few minutes to pin them"
            )
        say(f"waiting for the SSH host keys in the console output of {len(waiting)} instance(s)")
        sleep(interval)
    return _lines({h.name: h for h in hosts}, found)


def _lines(hosts: Mapping[str, Host], found: Mapping[str, list[str]]) -> str:
    lines = [
        f"{','.join(host.addresses)} {key} {host.instance_id}" for name, host in hosts.items() for key in found[name]
    ]
    return "\n".join(lines) + "\n"
