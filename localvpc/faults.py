"""Faults for tests, on the local target only, each reversible: hang, kill, cut, partition, internet, delay.

* :func:`hang` / :func:`resume`: an instance stops answering, as a hung kernel
  would: every packet in, out of and through its namespace drops (an nftables
  table of its own, ``kafkanet_fault``: a hung NAT forwards nothing either) and
  its processes are frozen (SIGSTOP); resume removes the table and continues them.
* :func:`kill` / :func:`revive`: its processes (all, or those named ``what``,
  e.g. ``"tansu"``) die with SIGKILL; revive restarts the plane's daemons of that
  namespace that are no longer running, with the argv the build recorded.
* :func:`cut_link` / :func:`restore_link`: one link goes down: an instance's
  veth to the VPC router, or ``"igw"`` (router to internet gateway) or
  ``"internet"`` (internet gateway to internet). The side that is taken down is
  the one whose routes never change after the build; restore puts them back.
* :func:`partition` / :func:`heal`: two instances cannot reach each other
  (every packet between their private addresses drops in the VPC router,
  where an instance cannot undo it); each still reaches everything else,
  the internet and the EC2 API included.
* :func:`cut_internet` / :func:`restore_internet`: the emulated internet is
  unreachable for every instance: its web host (the probe URL, and what
  ``checkip.amazonaws.com`` resolves to) answers nothing but the EC2 API relay
  it also serves (port 443), so the NATs' monitors still read the API.
* :func:`set_delay` / :func:`clear_delay`: the propagation delay between an
  API change and the packets (read by :mod:`localvpc.live` on every poll).

Everything works from the plane's runtime directory (``/run/kn_E/manifest.json``),
so a test needs only the environment name and the host's short name
(``broker-1``, ``nat``) or its private address. Root is needed, as for the
plane itself. The same helpers as a command (the inventory of a NAT pair
declares them for the failover test, which may not import this package):
``python -m localvpc.faults hang|resume ENV HOST``,
``partition|heal ENV HOST HOST``, ``cut-internet|restore-internet ENV``,
``monitor-log ENV HOST`` (what a NAT's monitor logged);
a wrong name exits 2 with one line.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
from pathlib import Path

from localvpc import live, netns, procs, render
from localvpc.errors import PlaneError, PlaneUserError
from localvpc.translation import RESERVED_NAMES

FAULT_TABLE = "kafkanet_fault"  # hang: in the instance's namespace
PARTITION_TABLE = "kafkanet_partition"  # in the VPC router's namespace
INTERNET_TABLE = "kafkanet_no_internet"  # in the web host's namespace
API_RELAY_PORT = 443  # localvpc.apirelay.PORT (not imported: that module pulls in the services' libraries)


def _run(env: str) -> Path:
    render.check_env_name(env)
    return Path("/run") / f"kn_{env}"


def _manifest(env: str) -> dict:
    path = _run(env) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise PlaneUserError(f"faults: no running plane for {env} ({path} is missing); build it first") from None


def _host_ns(env: str, host: str) -> str:
    """The namespace of ``host``: its short name, or its private address."""
    manifest = _manifest(env)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        host = _host_by_address(env, manifest, host)
    ns = f"{render.netns_prefix(env)}{host}"
    if ns not in manifest["namespaces"] or host in RESERVED_NAMES:
        raise PlaneUserError(f"faults: {host!r} is not an instance of {env}'s plane")
    return ns


def _address(link: dict) -> str | None:
    shown = procs.run_step(["ip", "-n", link["netns"], "-4", "-j", "addr", "show", "dev", link["ifname"]], "faults: address")
    for entry in json.loads(shown.stdout or "[]"):
        for info in entry.get("addr_info", []):
            return info.get("local")
    return None


def _host_by_address(env: str, manifest: dict, address: str) -> str:
    prefix = render.netns_prefix(env)
    for name, link in (manifest.get("links") or {}).items():
        if link["netns"] == f"{prefix}{name}" and name not in RESERVED_NAMES and _address(link) == address:
            return name
    raise PlaneUserError(f"faults: no instance of {env}'s plane has the private address {address}")


def _nft_tables(ns: str) -> str:
    return procs.run_step(["ip", "netns", "exec", ns, "nft", "list", "tables"], "faults: nft list tables").stdout


def _drop_table(ns: str, table: str, what: str) -> None:
    if f"table ip {table}" in _nft_tables(ns):
        procs.run_step(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip", table], what)


# --- hang -----------------------------------------------------------------------


def hang(env: str, host: str) -> None:
    """``host`` stops answering: all its packets drop and its processes freeze. Undo with :func:`resume`."""
    ns = _host_ns(env, host)
    ruleset = (
        f"table ip {FAULT_TABLE} {{\n"
        "    chain input { type filter hook input priority -300; policy accept; iifname != \"lo\" drop; }\n"
        "    chain output { type filter hook output priority -300; policy accept; oifname != \"lo\" drop; }\n"
        "    chain forward { type filter hook forward priority -300; policy drop; }\n"
        "}\n"
    )
    procs.run_step(["ip", "netns", "exec", ns, "nft", "-f", "-"], f"faults: hang {host}", input=ruleset)
    live.signal_host(ns, signal.SIGSTOP)


def resume(env: str, host: str) -> None:
    """Undo :func:`hang` (idempotent)."""
    ns = _host_ns(env, host)
    live.signal_host(ns, signal.SIGCONT)
    _drop_table(ns, FAULT_TABLE, f"faults: resume {host}")


def is_hung(env: str, host: str) -> bool:
    ns = _host_ns(env, host)
    return f"table ip {FAULT_TABLE}" in procs.run_step(["ip", "netns", "exec", ns, "nft", "list", "tables"], "faults").stdout


# --- kill -----------------------------------------------------------------------


def kill(env: str, host: str, what: str | None = None) -> list[int]:
    """SIGKILL ``host``'s processes (only those whose name is ``what``, if given); the pids killed."""
    ns = _host_ns(env, host)
    pids = [pid for pid in sorted(netns.pids_in([ns])) if what is None or netns.process_name(pid) == what]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    procs.reap()
    return pids


def revive(env: str, host: str) -> list[str]:
    """Restart the plane's daemons of ``host`` that no longer run; what was restarted."""
    ns = _host_ns(env, host)
    run = _run(env)
    manifest = _manifest(env)
    alive = set(netns.pids_in([ns]))
    restarted = []
    for daemon in manifest["daemons"]:
        if daemon["netns"] != ns or daemon["pid"] in alive or netns.process_name(daemon["pid"]) is not None:
            continue
        proc = procs.spawn(daemon["argv"], Path(daemon["log"]))
        daemon["pid"] = proc.pid
        restarted.append(daemon["what"])
    if restarted:
        tmp = run / ".manifest.json.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, run / "manifest.json")
    return restarted


# --- links ----------------------------------------------------------------------


def _link(env: str, name: str) -> dict:
    links = _manifest(env).get("links") or {}
    if name not in links:
        raise PlaneUserError(f"faults: no link {name!r} in {env}'s plane; one of {', '.join(sorted(links))}")
    return links[name]


def cut_link(env: str, name: str) -> None:
    """Take link ``name`` (a host, ``"igw"`` or ``"internet"``) down: its packets vanish. Undo with :func:`restore_link`."""
    link = _link(env, name)
    procs.run_step(["ip", "-n", link["netns"], "link", "set", link["ifname"], "down"], f"faults: cut {name}")


def restore_link(env: str, name: str) -> None:
    """Bring link ``name`` up again with the routes its side had (idempotent)."""
    link = _link(env, name)
    batch = [f"link set {link['ifname']} up", *link["routes"]]
    procs.run_step(["ip", "-n", link["netns"], "-batch", "-"], f"faults: restore {name}", input="\n".join(batch) + "\n")


# --- partition --------------------------------------------------------------------


def _plane_ns(env: str, name: str, what: str) -> str:
    """The namespace of one of the plane's own parts (``router``, ``web``), named ``what`` in errors."""
    ns = f"{render.netns_prefix(env)}{name}"
    if ns not in _manifest(env)["namespaces"]:
        raise PlaneUserError(f"faults: {env}'s plane has no {what} namespace ({ns})")
    return ns


def _router_ns(env: str) -> str:
    return _plane_ns(env, "router", "VPC router")


def _private_address(env: str, host: str) -> str:
    ns = _host_ns(env, host)
    link = next((v for v in (_manifest(env).get("links") or {}).values() if v["netns"] == ns), None)
    address = _address(link) if link else None
    if address is None:
        raise PlaneUserError(f"faults: {host!r} of {env}'s plane has no private address")
    return address


def partition(env: str, one: str, other: str) -> None:
    """``one`` and ``other`` cannot reach each other; both still reach the rest. Undo with :func:`heal`."""
    a, b = _private_address(env, one), _private_address(env, other)
    if a == b:
        raise PlaneUserError(f"faults: a partition needs two instances ({one} and {other} are one)")
    ruleset = (
        f"table ip {PARTITION_TABLE} {{\n"
        "    chain forward {\n"
        "        type filter hook forward priority -300; policy accept;\n"
        f"        ip saddr {a} ip daddr {b} drop\n"
        f"        ip saddr {b} ip daddr {a} drop\n"
        "    }\n"
        "}\n"
    )
    ns = _router_ns(env)
    _drop_table(ns, PARTITION_TABLE, "faults: partition")  # one partition at a time
    procs.run_step(["ip", "netns", "exec", ns, "nft", "-f", "-"], f"faults: partition {one} {other}", input=ruleset)


def heal(env: str, one: str | None = None, other: str | None = None) -> None:
    """Undo :func:`partition` (idempotent; the names are only checked)."""
    for host in (one, other):
        if host is not None:
            _host_ns(env, host)
    _drop_table(_router_ns(env), PARTITION_TABLE, "faults: heal")


def is_partitioned(env: str) -> bool:
    return f"table ip {PARTITION_TABLE}" in _nft_tables(_router_ns(env))


# --- the internet -------------------------------------------------------------------


def _web_ns(env: str) -> str:
    return _plane_ns(env, "web", "web host")


def cut_internet(env: str) -> None:
    """The internet is unreachable for every instance (the web host answers only the EC2 API relay).

    Undo with :func:`restore_internet`."""
    ruleset = (
        f"table ip {INTERNET_TABLE} {{\n"
        "    chain input {\n"
        "        type filter hook input priority -300; policy drop;\n"
        "        iifname \"lo\" accept\n"
        f"        tcp dport {API_RELAY_PORT} accept\n"
        "    }\n"
        "}\n"
    )
    ns = _web_ns(env)
    _drop_table(ns, INTERNET_TABLE, "faults: cut the internet")
    procs.run_step(["ip", "netns", "exec", ns, "nft", "-f", "-"], "faults: cut the internet", input=ruleset)


def restore_internet(env: str) -> None:
    """Undo :func:`cut_internet` (idempotent)."""
    _drop_table(_web_ns(env), INTERNET_TABLE, "faults: restore the internet")


def internet_is_cut(env: str) -> bool:
    return f"table ip {INTERNET_TABLE}" in _nft_tables(_web_ns(env))


# --- propagation delay ------------------------------------------------------------


def set_delay(env: str, seconds: float) -> None:
    """API changes reach the packets ``seconds`` later (the live daemon reads it on its next poll)."""
    if seconds < 0:
        raise PlaneUserError(f"faults: a propagation delay cannot be negative ({seconds})")
    folder = live.live_dir(_run(env))
    if not folder.is_dir():
        raise PlaneUserError(f"faults: {env}'s plane does not follow the API (no live daemon); build it with endpoint_url")
    tmp = folder / ".delay.tmp"
    tmp.write_text(f"{seconds}\n")
    os.replace(tmp, folder / "delay")


def clear_delay(env: str) -> None:
    """Back to the daemon's own delay (``KAFKANET_PLANE_DELAY`` or 0)."""
    try:
        (live.live_dir(_run(env)) / "delay").unlink()
    except FileNotFoundError:
        pass


def monitor_log(env: str, host: str) -> str:
    """What the NAT monitor of ``host`` has logged (its systemd journal on AWS; a file of the plane here)."""
    ns = _host_ns(env, host)
    name = ns[len(render.netns_prefix(env)):]
    try:
        return (_run(env) / name / "nat-monitor.log").read_text(errors="replace")
    except OSError:
        raise PlaneUserError(f"faults: {host!r} of {env}'s plane runs no NAT monitor (no nat-monitor.log)") from None


def live_status(env: str) -> dict | None:
    """The live daemon's last status (polls, applies, host states, error), or None."""
    try:
        return json.loads((live.live_dir(_run(env)) / "status.json").read_text())
    except (OSError, ValueError):
        return None


# --- the command --------------------------------------------------------------------

COMMANDS = {
    "hang": (hang, 1), "resume": (resume, 1),
    "partition": (partition, 2), "heal": (heal, 2),
    "cut-internet": (cut_internet, 0), "restore-internet": (restore_internet, 0),
    "monitor-log": (lambda env, host: print(monitor_log(env, host), end=""), 1),
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localvpc.faults", description=__doc__.splitlines()[0])
    parser.add_argument("fault", choices=sorted(COMMANDS))
    parser.add_argument("env")
    parser.add_argument("hosts", nargs="*", help="short names (broker-1, nat) or private addresses")
    args = parser.parse_args(argv)
    action, wanted = COMMANDS[args.fault]
    if len(args.hosts) != wanted:
        print(f"faults: {args.fault} takes {wanted} host(s), got {len(args.hosts)}: {' '.join(args.hosts)}", file=sys.stderr)
        return 2
    try:
        action(args.env, *args.hosts)
    except PlaneUserError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except PlaneError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
