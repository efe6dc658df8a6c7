"""The data plane's own errors: localvpc depends on nothing of ``generator``.

Each carries one line per problem, like the CLI's error family; the
environment layer (:mod:`generator.environment.localplane`) maps them onto
it: a :class:`PlaneUserError` is something the user can fix (exit 2), a
:class:`PlanePrerequisiteError` a missing tool or permission, anything else
a :class:`PlaneInfraError` (the plane could not be built or removed).
"""

from __future__ import annotations


class PlaneError(Exception):
    """Base of the data plane's errors: one line per problem."""

    def __init__(self, *problems: str) -> None:
        if not problems:
            raise TypeError("a PlaneError needs at least one problem line")
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


class PlaneUserError(PlaneError):
    """Something the user can fix: wrong endpoint, an environment not applied, a bad address."""


class PlanePrerequisiteError(PlaneUserError):
    """A tool or permission the plane needs is missing (root, nft, sshd...)."""


class PlaneInfraError(PlaneError):
    """The plane could not be built, checked or torn down."""


# The keys moto takes while it does not enforce IAM (the plane's daemons' default).
FAKE_CREDENTIALS = ("testing", "testing")


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is a loopback address or ``localhost``: the plane reads only a local moto."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
