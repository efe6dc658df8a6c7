"""testinfra hosts that ride the session's one SSH transport through the bastion.

testinfra's paramiko backend keeps its connection in a ``client`` cached
property and only ever calls ``client.get_transport()`` on it; the clean seam
is to build the host with ``testinfra.get_host("paramiko://user@name")`` and
set that property to the session's already-connected client. Two guards:

* the injected object bounds every session channel's reads (a command that
  hangs fails after ``command_timeout`` instead of hanging the suite);
* should testinfra ever drop the client and try to connect on its own (it does
  after a transport error), the ssh_config it is given routes every host to a
  ProxyCommand that refuses, so it can never dial a private address from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import paramiko
import testinfra

from generator.access.ssh import Bastion

GUARD_SSH_CONFIG = """\
# kafkanet integration suite: testinfra hosts reuse the session's SSH transport through the bastion.
# If testinfra ever tries to open a connection of its own, refuse instead of dialling anything.
Host *
    ProxyCommand /bin/sh -c 'echo "kafkanet: testinfra may not open its own SSH connection (to %h)" >&2; exit 1'
    StrictHostKeyChecking yes
"""


class _BoundedTransport:
    """The session transport as testinfra sees it: every session channel gets a read timeout."""

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self._transport = transport
        self._timeout = timeout

    def open_session(self, *args: Any, **kwargs: Any) -> paramiko.Channel:
        kwargs.setdefault("timeout", min(self._timeout, 10.0))
        channel = self._transport.open_session(*args, **kwargs)
        channel.settimeout(self._timeout)
        return channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SessionClient:
    """Stands in for testinfra's SSHClient: the bastion's (or a hop's) client, owned by the session."""

    def __init__(self, client: paramiko.SSHClient, command_timeout: float) -> None:
        self._client = client
        self._timeout = command_timeout

    def get_transport(self) -> _BoundedTransport | None:
        transport = self._client.get_transport()
        return None if transport is None else _BoundedTransport(transport, self._timeout)

    def close(self) -> None:
        """The session's Bastion closes the real connection, not testinfra."""


def testinfra_host(client: paramiko.SSHClient, name: str, user: str, guard_config: Path, command_timeout: float = 60.0):
    """A ``testinfra.host.Host`` named ``name`` whose commands run over ``client``."""
    host = testinfra.get_host(f"paramiko://{user}@{name}", ssh_config=str(guard_config), timeout=3)
    host.backend.client = SessionClient(client, command_timeout)  # replaces the cached_property's value
    return host


def write_guard_config(folder: Path) -> Path:
    path = folder / "ssh_config"
    path.write_text(GUARD_SSH_CONFIG)
    return path


class TestinfraHosts(Mapping[str, Any]):
    """``{"bastion": Host, "broker-1": Host, ...}``; each connects (one hop) on first use."""

    __test__ = False  # not a test class, whatever pytest's collection rules say

    def __init__(self, bastion: Bastion, inventory: Mapping[str, Any], guard_config: Path) -> None:
        self._bastion = bastion
        self._user = str(inventory["ssh"]["user"])
        self._guard = guard_config
        self._addresses = {inventory["bastion"]["name"]: None}
        self._addresses.update({b["name"]: b["private_ip"] for b in inventory["brokers"]})
        self._hosts: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self._hosts:
            address = self._addresses[name]
            client = self._bastion.client if address is None else self._bastion.client_for(address)
            self._hosts[name] = testinfra_host(client, name, self._user, self._guard)
        return self._hosts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._addresses)

    def __len__(self) -> int:
        return len(self._addresses)
