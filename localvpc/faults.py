"""Faults for tests, on the local target only, each reversible: hang, kill, cut, delay.

* :func:`hang` / :func:`resume`: an instance stops answering, as a hung kernel
  would: every packet in and out of its namespace drops (an nftables table of
  its own, ``kafkanet_fault``) and its processes are frozen (SIGSTOP); resume
  removes the table and continues them.
* :func:`kill` / :func:`revive`: its processes (all, or those named ``what``,
  e.g. ``"tansu"``) die with SIGKILL; revive restarts the plane's daemons of that
  namespace that are no longer running, with the argv the build recorded.
* :func:`cut_link` / :func:`restore_link`: one link goes down: an instance's
  veth to the VPC router, or ``"igw"`` (router to internet gateway) or
  ``"internet"`` (internet gateway to internet). The side that is taken down is
  the one whose routes never change after the build; restore puts them back.
* :func:`set_delay` / :func:`clear_delay`: the propagation delay between an
  API change and the packets (read by :mod:`localvpc.live` on every poll).

Everything works from the plane's runtime directory (``/run/kn_E/manifest.json``),
so a test needs only the environment name and the host's short name
(``broker-1``, ``nat``). Root is needed, as for the plane itself.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from localvpc import live, netns, procs, render
from localvpc.errors import PlaneUserError
from localvpc.translation import RESERVED_NAMES

FAULT_TABLE = "kafkanet_fault"


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
    ns = f"{render.netns_prefix(env)}{host}"
    if ns not in _manifest(env)["namespaces"] or host in RESERVED_NAMES:
        raise PlaneUserError(f"faults: {host!r} is not an instance of {env}'s plane")
    return ns


# --- hang -----------------------------------------------------------------------


def hang(env: str, host: str) -> None:
    """``host`` stops answering: all its packets drop and its processes freeze. Undo with :func:`resume`."""
    ns = _host_ns(env, host)
    ruleset = (
        f"table ip {FAULT_TABLE} {{\n"
        "    chain input { type filter hook input priority -300; policy accept; iifname != \"lo\" drop; }\n"
        "    chain output { type filter hook output priority -300; policy accept; oifname != \"lo\" drop; }\n"
        "}\n"
    )
    procs.run_step(["ip", "netns", "exec", ns, "nft", "-f", "-"], f"faults: hang {host}", input=ruleset)
    live.signal_host(ns, signal.SIGSTOP)


def resume(env: str, host: str) -> None:
    """Undo :func:`hang` (idempotent)."""
    ns = _host_ns(env, host)
    live.signal_host(ns, signal.SIGCONT)
    tables = procs.run_step(["ip", "netns", "exec", ns, "nft", "list", "tables"], f"faults: resume {host}").stdout
    if f"table ip {FAULT_TABLE}" in tables:
        procs.run_step(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip", FAULT_TABLE], f"faults: resume {host}")


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


def live_status(env: str) -> dict | None:
    """The live daemon's last status (polls, applies, host states, error), or None."""
    try:
        return json.loads((live.live_dir(_run(env)) / "status.json").read_text())
    except (OSError, ValueError):
        return None
