"""The access layer's errors: what reaching the environment through its bastion raises.

:class:`SshError` (an :class:`~generator.base.errors.InfraError`, exit 1) when
the bastion or a host behind it cannot be reached, authenticated or used, and
its subclass :class:`HostKeyError` for a host missing from the environment's
known_hosts or one whose key changed. They sit below ``proxy`` (a proxy
command that cannot run is an SshError), ``ssh`` and ``commands``, so that
each of those raises them without importing another.
"""

from __future__ import annotations

from generator.base.errors import InfraError


class SshError(InfraError):
    """The bastion or a host behind it could not be reached, authenticated or used."""


class HostKeyError(SshError):
    """A host is not in the environment's known_hosts, or its key changed."""


__all__ = ["HostKeyError", "SshError"]
