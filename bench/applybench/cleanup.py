"""Stopping everything a run started, then finding what of it is still there.

Owns the end of every run, whatever happened in it (failure and Ctrl-C
included): :func:`cleanup` destroys what moto still holds, stops the recorded
shared provider and moto, reaps our moto children and, as root, tears down the
run's data plane; :func:`left_behind` then looks for what survived (a shared
provider process or its /tmp/plugin* socket, a moto server, a ``kn_<env>``
namespace), removes each and returns them as findings that fail the run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from generator.base.errors import KafkanetError
from generator.base.procs import cmdline, terminate
from generator.environment import destroy as env_destroy
from generator.environment import session
from generator.localaws import moto_server
from generator.terraform import provider

from .meter import Meter


def reap(motos: list[moto_server.MotoServer]) -> None:
    """Reap the moto servers we started that have exited (lifecycle stops moto by pid)."""
    for server in motos:
        if server._proc is not None:
            server._proc.poll()


def cleanup(env: session.Env, motos: list[moto_server.MotoServer]) -> None:
    """Whatever happened: no moto, provider, namespace, state or records of this run left."""
    state = env.path(session.MOTO_DIR)
    try:
        running = moto_server.find_running(state) is not None
    except KafkanetError as exc:  # running but not answering: stopped below
        print(f"cleanup: {exc}", file=sys.stderr)
        running = False
    if running:
        try:
            env_destroy.destroy(env, timings=session.Timings())
        except (KafkanetError, OSError) as exc:
            print(f"cleanup: {exc}", file=sys.stderr)
    provider.stop_recorded(env.path(session.PROVIDER_DIR))
    moto_server.stop(state)
    reap(motos)
    if os.geteuid() == 0:
        with contextlib.suppress(Exception):
            from localvpc import plane as localplane

            localplane.teardown(env.name)


def left_behind(env: session.Env, meter: Meter, motos: list[moto_server.MotoServer]) -> list[str]:
    """What of this run still exists after the cleanup; each is reported, then removed."""
    from localvpc import netns
    from localvpc.render import netns_prefix

    left = []
    for found in meter.shared.values():
        argv = cmdline(found.pid)
        if argv and Path(argv[0]).name.startswith("terraform-provider-") and "-debug" in argv:
            left.append(f"shared provider pid {found.pid} ({found.command}) still running")
            terminate(found.pid, provider.STOP_BUDGET, sig=signal.SIGINT)
        if found.socket and os.path.exists(found.socket):
            left.append(f"provider socket {found.socket} ({found.command}) left")
            with contextlib.suppress(OSError):
                os.unlink(found.socket)
    for server in motos:
        if cmdline(server.pid) is not None:
            left.append(f"moto pid {server.pid} still running")
            server.stop()
    left += [f"namespace {name} left" for name in netns.list_netns(netns_prefix(env.name))]
    return left
