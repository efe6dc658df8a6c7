"""``--admin-cidr CIDR|auto``: who may SSH to the bastion, for one run, instead of the spec's ``admin_cidrs``.

A CIDR is validated exactly like the spec field. ``auto`` asks a checkip-style
service (``KAFKANET_CHECKIP_URL``, default https://checkip.amazonaws.com) for the
operator's public IPv4 address and uses it as a /32; the reply must be exactly
one public address. One GET, a 5 s timeout on the connect and on every read, no
redirects followed (a redirect is reported, never chased to another host).

The local target never contacts the internet: there ``auto`` is refused, before
any connection is attempted, unless the URL is on loopback. ``generate`` has no
target and uses the URL as given.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import urllib.error
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

from generator import __version__
from generator.base.endpoints import is_loopback_url
from generator.base.errors import UserError
from generator.module.loaded import Loaded
from generator.spec.model import admin_cidr
from generator.spec.topology import Topology

AUTO = "auto"
CHECKIP_ENV = "KAFKANET_CHECKIP_URL"
DEFAULT_CHECKIP_URL = "https://checkip.amazonaws.com"
CHECKIP_TIMEOUT = 5.0
MAX_REPLY = 256  # bytes: an address and a newline, with room to spare
# The local target's emulated internet: documentation ranges that `ipaddress` calls
# private, but what a checkip service answers there (the operator lives in 203.0.113.0/24).
EMULATED_PUBLIC = (ipaddress.IPv4Network("198.51.100.0/24"), ipaddress.IPv4Network("203.0.113.0/24"))
HINT = "pass your address instead, e.g. --admin-cidr 203.0.113.50/32"


def checkip_url() -> str:
    return os.environ.get(CHECKIP_ENV) or DEFAULT_CHECKIP_URL


def resolve(values: Iterable[str], target: str | None) -> list[ipaddress.IPv4Network]:
    """The admin CIDRs ``--admin-cidr`` gives, in order and without repeats.

    ``target`` is ``"local"``, ``"aws"``, or None for ``generate`` (no target).
    """
    out: list[ipaddress.IPv4Network] = []
    for value in values:
        net = discover(checkip_url(), target) if value == AUTO else parse(value)
        if net not in out:
            out.append(net)
    return out


def parse(value: str) -> ipaddress.IPv4Network:
    try:
        return admin_cidr(value)
    except ValueError as exc:
        raise UserError(f"--admin-cidr: {exc}") from None


def discover(url: str, target: str | None, timeout: float | None = None) -> ipaddress.IPv4Network:
    """The operator's public address as a /32, from one GET of ``url``."""
    timeout = CHECKIP_TIMEOUT if timeout is None else timeout
    loopback = is_loopback_url(url)
    if target == "local" and not loopback:
        given = url if os.environ.get(CHECKIP_ENV) else f"unset (default {url})"
        raise UserError(
            f"--admin-cidr auto: the local target never contacts the internet, and {CHECKIP_ENV} is {given}; "
            f"point {CHECKIP_ENV} at a server on loopback, or {HINT}"
        )
    if urlsplit(url).scheme not in ("http", "https"):
        raise UserError(f"{CHECKIP_ENV}: {url!r} is not an http(s) URL; {HINT}")
    body = _get(url, timeout, loopback)
    return _public_address(url, body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx reaches the caller as an HTTPError: the address comes from the URL asked, nowhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002 (urllib's interface)
        return None


def _get(url: str, timeout: float, loopback: bool) -> bytes:
    # a loopback URL is never handed to an HTTP proxy from the environment
    proxies = urllib.request.ProxyHandler({}) if loopback else urllib.request.ProxyHandler()
    opener = urllib.request.build_opener(proxies, _NoRedirect())
    request = urllib.request.Request(url, headers={"User-Agent": f"kafkanet/{__version__}"})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.read(MAX_REPLY + 1)
    except urllib.error.HTTPError as exc:
        raise UserError(f"--admin-cidr auto: {url} answered HTTP {exc.code} {exc.reason}, not an address; {HINT}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):  # the connect timed out
            raise UserError(f"--admin-cidr auto: no connection to {url} within {timeout:g} s; {HINT}") from None
        raise UserError(f"--admin-cidr auto: cannot reach {url}: {exc.reason}; {HINT}") from None
    except TimeoutError:
        raise UserError(f"--admin-cidr auto: {url} sent no answer within {timeout:g} s; {HINT}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise UserError(f"--admin-cidr auto: {url} failed: {exc!r}; {HINT}") from None


def _public_address(url: str, body: bytes) -> ipaddress.IPv4Network:
    text = body.decode("utf-8", "replace").strip()
    shown = repr(text[:60] + ("..." if len(text) > 60 else ""))
    if len(body) > MAX_REPLY:
        raise UserError(f"--admin-cidr auto: {url} answered more than {MAX_REPLY} bytes ({shown}), not one address; {HINT}")
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise UserError(f"--admin-cidr auto: {url} answered {shown}, not one IPv4 address; {HINT}") from None
    kind = _not_public(address)
    if kind:
        raise UserError(
            f"--admin-cidr auto: {url} answered {address}, a {kind} address, not your public one "
            f"(a VPN or proxy in the way?); {HINT}"
        )
    return ipaddress.IPv4Network(f"{address}/32")


def _not_public(address: ipaddress.IPv4Address) -> str | None:
    """What kind of non-public address this is (None: public, or the local target's emulated internet)."""
    if any(address in net for net in EMULATED_PUBLIC):
        return None
    for kind, yes in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("shared (carrier-grade NAT)", address in ipaddress.IPv4Network("100.64.0.0/10")),
    ):
        if yes:
            return kind
    return None if address.is_global else "non-routable"


def override(loaded: Loaded, cidrs: list[ipaddress.IPv4Network]) -> Loaded:
    """``loaded`` with its admin CIDRs replaced (each already validated like the spec field)."""
    if not cidrs:
        raise ValueError("override() needs at least one admin CIDR")
    spec = loaded.spec.model_copy(update={"admin_cidrs": list(cidrs)})
    return Loaded(path=loaded.path, spec=spec, topology=Topology.from_spec(spec))
