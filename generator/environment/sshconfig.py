"""An OpenSSH client config for a live environment, from its inventory.

``kafkanet apply`` writes it next to the module (``build/<env>/ssh_config``) and
``kafkanet destroy`` removes it. Each host is ``<env>-bastion`` or
``<env>-broker-N``; brokers are reached with ``ProxyJump <env>-bastion``, the
bastion itself directly, or through the inventory's ProxyCommand on the local
target (its public address lives inside the operator's network namespace).
Host keys are checked against the environment's own known_hosts only::

    ssh -F build/ttareungyi/ssh_config ttareungyi-broker-1

The file also works from ``~/.ssh/config`` with ``Include /abs/path/ssh_config``:
every block names its hosts explicitly, no wildcard reaches other hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generator.base.errors import UserError
from generator.base.files import write_atomic

SSH_CONFIG = "ssh_config"  # relative to the build directory
KEEPALIVE = 15  # ServerAliveInterval, as the Python session uses


def alias(inventory: Mapping[str, Any], host: str) -> str:
    """The ssh_config name of ``host`` (``bastion``, ``broker-1``): ``<env>-<host>``."""
    return f"{inventory['environment']}-{host}"


def _path(value: str, what: str) -> str:
    """A file path as an ssh_config argument: ``%`` escaped (paths take tokens), quoted when it has blanks."""
    if any(c in value for c in '"\\\n\r'):
        raise UserError(f"{what} {value!r}: a path with quotes, backslashes or newlines cannot go into an ssh_config; "
                        "use a KAFKANET_BUILD_ROOT without them")  # fmt: skip
    value = value.replace("%", "%%")
    return f'"{value}"' if any(c.isspace() for c in value) else value


def render(inventory: Mapping[str, Any], shown_path: str) -> str:
    """The file's text; ``shown_path`` is how its header tells the reader to pass it to ``ssh -F``."""
    env = inventory["environment"]
    ssh = inventory["ssh"]
    bastion = inventory["bastion"]
    brokers = inventory["brokers"]
    bastion_alias = alias(inventory, bastion.get("name", "bastion"))
    first = alias(inventory, brokers[0]["name"]) if brokers else bastion_alias
    lines = [
        f"# OpenSSH access to {env} (target {inventory['target']}): written by `kafkanet apply`,",
        "# removed by `kafkanet destroy`. Brokers are reached through the bastion (ProxyJump);",
        "# host keys are checked against the environment's own known_hosts only.",
        f"#   ssh -F {shown_path} {first}",
        "",
        f"Host {bastion_alias}",
        f"  HostName {bastion['public_ip']}",
    ]
    if ssh.get("proxy_command"):
        # the local target: the emulated public address is reachable only from the operator namespace
        lines.append(f"  ProxyCommand {ssh['proxy_command']}")
    for broker in brokers:
        lines += [
            "",
            f"Host {alias(inventory, broker['name'])}",
            f"  HostName {broker['private_ip']}",
            f"  ProxyJump {bastion_alias}",
        ]
    every = " ".join([bastion_alias, *(alias(inventory, b["name"]) for b in brokers)])
    lines += [
        "",
        f"Host {every}",
        f"  User {ssh['user']}",
        f"  Port {int(ssh.get('port') or 22)}",
        f"  IdentityFile {_path(str(ssh['private_key']), 'ssh.private_key')}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {_path(str(ssh['known_hosts']), 'ssh.known_hosts')}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        f"  ServerAliveInterval {KEEPALIVE}",
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, inventory: Mapping[str, Any]) -> Path:
    """Render and write atomically (a temporary sibling renamed into place); returns ``path``."""
    write_atomic(path, render(inventory, str(path)))
    return path
