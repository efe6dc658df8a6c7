"""What the plane's entry points return: :class:`PlaneInfo` from a build, :class:`PlaneStatus`, :class:`TeardownReport`.

Plain frozen records, no behaviour beyond what the inventory asks of a built
plane (the ssh ProxyCommand argv, known_hosts lines, a JSON-ready dict); the
build writes ``PlaneInfo.to_dict()`` to ``plane.json`` in its state directory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class HostInfo:
    name: str
    instance_id: str
    role: str | None
    netns: str
    hostname: str
    private_ip: str
    public_ip: str | None  # emulated
    moto_public_ip: str | None
    kafka_port: int | None
    host_key: str  # "ssh-ed25519 AAAA..."


@dataclass(frozen=True)
class PlaneInfo:
    """What the inventory needs to reach the local environment."""

    env: str
    ssh_user: str
    proxy_command: str  # ssh ProxyCommand (%h %p) through the operator namespace
    operator_netns: str
    operator_ip: str
    outsider_netns: str
    outsider_ip: str
    web_netns: str
    web_ip: str
    probe_url: str  # answers with the caller's address
    bastion: str | None
    bastion_public_ip: str | None
    hosts: dict[str, HostInfo]
    public_ip_map: dict[str, str]  # moto's public address -> emulated one
    notes: tuple[str, ...] = ()
    build_seconds: float = 0.0

    def proxy_argv(self, host: str, port: int = 22) -> list[str]:
        return ["ip", "netns", "exec", self.operator_netns, "nc", host, str(port)]

    def known_hosts(self) -> str:
        """known_hosts lines: the bastion by its public address, every host by its private one.

        A NAT pair's NATs are each pinned under the bastion's address too: the
        Elastic IP moves to the standby on failover.
        """
        lines = []
        bastion = self.hosts.get(self.bastion) if self.bastion else None
        for h in self.hosts.values():
            names = [h.private_ip] + ([h.public_ip] if h.name == self.bastion and h.public_ip else [])
            if bastion and h.name != bastion.name and h.role == bastion.role and self.bastion_public_ip:
                names.append(self.bastion_public_ip)
            lines.append(f"{','.join(names)} {h.host_key}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlaneStatus:
    env: str
    namespaces: tuple[str, ...]
    processes: dict[str, tuple[tuple[int, str], ...]]  # netns -> ((pid, comm), ...)
    expected_namespaces: tuple[str, ...]  # from the manifest; () when there is none
    missing_daemons: tuple[str, ...]  # "netns/comm" recorded at build but gone

    @property
    def running(self) -> bool:
        return bool(self.namespaces)

    @property
    def healthy(self) -> bool:
        return (
            bool(self.expected_namespaces)
            and set(self.expected_namespaces) <= set(self.namespaces)
            and not self.missing_daemons
        )


@dataclass(frozen=True)
class TeardownReport:
    env: str
    namespaces: tuple[str, ...]
    processes: int
    seconds: float
