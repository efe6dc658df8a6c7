"""Operator access to a live environment: ``kafkanet ssh`` and ``kafkanet tunnel``.

Both ride one :class:`generator.access.ssh.Bastion` session: the environment's key,
host keys pinned in its known_hosts, brokers reached through ``direct-tcpip``
channels on the bastion's transport (no key ever leaves this machine).

* :func:`run_command` runs a command on a host, streams its stdout/stderr as
  they come, forwards this process's stdin (as ``ssh host command`` does) and
  returns the remote exit status;
* :func:`shell` opens an interactive shell on a pty, this terminal in raw mode
  (restored whatever happens) and its size passed on, also after a resize;
* :func:`tunnel` serves SOCKS5 on 127.0.0.1 for Kafka clients on this machine
  (kafka-python ``proxy_url``); only the environment's brokers, on the Kafka
  and SSH ports, may be reached through it: never an open proxy.
"""

from __future__ import annotations

import errno
import os
import select
import selectors
import signal
import sys
import termios
import time
import tty
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import paramiko

from generator.access.errors import SshError
from generator.access.ssh import Bastion
from generator.base.errors import UserError
from generator.environment.inventory import broker_names

CHUNK = 32768
HEALTH_INTERVAL = 1.0  # seconds between checks that the tunnel's SSH transport is alive
CLOSE_STATUS_BUDGET = 10.0  # after the remote output ends, how long its exit status may take


@dataclass(frozen=True)
class Host:
    name: str  # bastion, broker-1, ...
    address: str  # what the session dials: the bastion's public address, a broker's private one


def hosts(inventory: Mapping[str, Any]) -> list[Host]:
    bastion = inventory["bastion"]
    return [Host(bastion.get("name", "bastion"), bastion["public_ip"]),
            *(Host(b["name"], b["private_ip"]) for b in inventory["brokers"])]  # fmt: skip


def find_host(inventory: Mapping[str, Any], wanted: str) -> Host:
    """``bastion``, ``broker-N``, a broker's private IP (or one of the bastion's addresses)."""
    known = hosts(inventory)
    bastion = inventory["bastion"]
    for host in known:
        if wanted in (host.name, host.address):
            return host
    if wanted in (bastion.get("private_ip"), bastion.get("aws_public_ip")):
        return known[0]
    brokers = inventory["brokers"]
    raise UserError(
        f"HOST {wanted!r} is not a host of {inventory['environment']}; use one of: "
        f"{', '.join(h.name for h in known)}"
        + (f" (or a broker's private IP: {', '.join(b['private_ip'] for b in brokers)})" if brokers else "")
    )


def connect(inventory: Mapping[str, Any]) -> Bastion:
    """The bastion session (connected); the caller closes it."""
    if inventory.get("target") == "local" and not inventory["ssh"].get("proxy_command"):
        raise UserError("inventory: target local without ssh.proxy_command (the operator namespace); refusing to "
                        "dial emulated addresses from this machine's own network; run `kafkanet apply` again")  # fmt: skip
    bastion = Bastion.from_inventory(inventory)
    try:
        bastion.connect()
    except BaseException:
        bastion.close()
        raise
    return bastion


def _session(bastion: Bastion, host: Host) -> paramiko.Channel:
    client = bastion.client_for(host.address)  # the bastion's own client, or a broker's through it
    transport = client.get_transport()
    label = bastion.label(host.address)
    if transport is None or not transport.is_active():
        raise SshError(f"{label}: the SSH connection is closed")
    try:
        return transport.open_session(timeout=bastion.channel_timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SshError(f"{label}: cannot open a session channel: {exc!r}") from None


# --- a command ------------------------------------------------------------------------------


def _stdin_fd() -> int | None:
    """This process's stdin as a file descriptor, if it has a usable one (pytest's capture has none)."""
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None
    return fd


def run_command(bastion: Bastion, host: Host, command: str) -> int:
    """Run ``command`` (a shell string, as ssh passes it) on ``host``; its exit status.

    stdout and stderr are streamed to ours as they come; our stdin is
    forwarded until its end (then the remote side sees EOF). No time limit:
    the command runs until it exits or we are interrupted (Ctrl-C, SIGTERM),
    which closes the channel.
    """
    channel = _session(bastion, host)
    try:
        channel.exec_command(command)
        _relay(channel, _stdin_fd(), sys.stdout.buffer, sys.stderr.buffer)
        # a BrokenPipeError (`kafkanet ssh ... | head`) goes up to cli.main: exit 141, quietly
        return _exit_status(channel, bastion.label(host.address))
    finally:
        channel.close()


def _relay(channel: paramiko.Channel, stdin_fd: int | None, out: BinaryIO, err: BinaryIO) -> None:
    """Copy the remote stdout/stderr to ours and our stdin to the remote side, until the remote output ends."""
    # poll(2), not epoll: stdin may be a regular file or /dev/null (`< input`), which epoll refuses
    selector = selectors.PollSelector()
    selector.register(channel, selectors.EVENT_READ, "channel")  # ready on stdout, stderr, EOF or close
    if stdin_fd is None:
        channel.shutdown_write()
    else:
        selector.register(stdin_fd, selectors.EVENT_READ, "stdin")
    try:
        output_open = True
        while output_open:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "stdin":
                    data = os.read(stdin_fd, CHUNK)
                    try:
                        if data:
                            channel.sendall(data)
                        else:
                            channel.shutdown_write()
                    except OSError:  # the remote side closed its stdin (the command is done with it)
                        data = b""
                    if not data:
                        selector.unregister(stdin_fd)
                    continue
                while channel.recv_stderr_ready():
                    err.write(channel.recv_stderr(CHUNK))
                    err.flush()
                if channel.recv_ready() or channel.eof_received or channel.closed:
                    data = channel.recv(CHUNK)  # b"" only at EOF, once every byte was read
                    if data:
                        out.write(data)
                        out.flush()
                    elif not channel.recv_stderr_ready():
                        output_open = False
    finally:
        selector.close()


def _exit_status(channel: paramiko.Channel, label: str) -> int:
    """The remote exit status, which follows the end of its output (a closed channel ends the wait)."""
    if not channel.status_event.wait(CLOSE_STATUS_BUDGET):
        raise SshError(f"{label}: the output ended but no exit status came within {CLOSE_STATUS_BUDGET:g} s")
    if channel.exit_status < 0:
        raise SshError(f"{label}: the remote side closed without an exit status "
                       "(killed by a signal, or the connection dropped)")  # fmt: skip
    return channel.exit_status


# --- an interactive shell -------------------------------------------------------------------


def require_terminal() -> int:
    """stdin's descriptor, when it is a terminal (an interactive shell needs one)."""
    fd = _stdin_fd()
    if fd is None or not os.isatty(fd):
        raise UserError("stdin is not a terminal: pass a command after --, e.g. `kafkanet ssh SPEC broker-1 -- hostname`")
    return fd


def shell(bastion: Bastion, host: Host) -> int:
    """An interactive login shell on ``host`` over a pty; its exit status.

    This terminal goes into raw mode (every key, Ctrl-C included, goes to the
    remote side) and is restored in ``finally``; SIGWINCH passes the new size on.
    """
    fd = require_terminal()
    columns, lines = os.get_terminal_size(fd)
    channel = _session(bastion, host)
    resized = False

    def on_resize(signum: int, frame: object) -> None:  # noqa: ARG001 (signal handler interface)
        nonlocal resized
        resized = True

    saved = termios.tcgetattr(fd)
    previous = signal.signal(signal.SIGWINCH, on_resize)
    try:
        try:
            channel.get_pty(term=os.environ.get("TERM") or "xterm-256color", width=columns, height=lines)
            channel.invoke_shell()
            tty.setraw(fd)
            out = sys.stdout.buffer
            watched: list[Any] = [channel, fd]
            while True:
                ready, _, _ = select.select(watched, [], [], 0.5)
                if resized:
                    resized = False
                    channel.resize_pty(*os.get_terminal_size(fd))
                if channel in ready:
                    data = channel.recv(CHUNK)
                    if not data:
                        break
                    out.write(data)
                    out.flush()
                if fd in ready:
                    data = os.read(fd, CHUNK)
                    if data:
                        channel.sendall(data)
                    else:  # the terminal went away: the remote shell sees EOF, and we wait for it to end
                        watched.remove(fd)
                        channel.shutdown_write()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
        return _exit_status(channel, bastion.label(host.address))
    finally:
        channel.close()


# --- the tunnel -----------------------------------------------------------------------------


def tunnel_destinations(inventory: Mapping[str, Any]) -> frozenset[tuple[str, int]]:
    """What the tunnel may reach: every broker (private IP or EC2 DNS name) on the Kafka and SSH ports."""
    ports = (int(inventory["kafka"]["port"]), int(inventory["ssh"].get("port") or 22))
    return frozenset(
        (name, port) for broker in inventory["brokers"] for name in broker_names(inventory, broker) for port in ports
    )


def tunnel(inventory: Mapping[str, Any], port: int, say) -> int:
    """Serve SOCKS5 on 127.0.0.1:``port`` through the bastion until interrupted; 0 then.

    stdout gets exactly two lines (the proxy URL, then a kafka-python example);
    everything else goes through ``say`` (stderr). Ctrl-C or SIGTERM is the
    normal way to stop it: exit 0. A dropped SSH connection raises SshError (exit 1).
    """
    allowed = tunnel_destinations(inventory)
    bastion = connect(inventory)
    try:
        try:
            server = bastion.socks5(allowed=lambda host, p: (host, p) in allowed, port=port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: 127.0.0.1:{port} is already in use; pick another port, "
                                "or --port 0 for a free one") from None  # fmt: skip
            raise UserError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
        bootstrap = inventory["kafka"]["bootstrap_servers"]
        # socks5h: names (a broker's private DNS name) are resolved by the bastion, inside the VPC
        print(server.url_remote_dns, flush=True)
        print(f'KafkaProducer(bootstrap_servers="{bootstrap}", proxy_url="{server.url_remote_dns}")', flush=True)
        ports = sorted({p for _, p in allowed})
        say(f"tunnel to {inventory['environment']} through {bastion.label(bastion.address)}: SOCKS5 on "
            f"127.0.0.1:{server.port}, only to the brokers on port(s) {', '.join(map(str, ports))}; "
            "Ctrl-C to stop")  # fmt: skip
        if inventory["kafka"].get("implementation") == "tansu":
            first = f"{inventory['brokers'][0]['private_ip']}:{inventory['kafka']['port']}"
            say(f"local target: every tansu broker keeps its own store; bootstrap one broker (e.g. {first}) "
                "to read back what you wrote")  # fmt: skip
        try:
            while bastion.connected:
                time.sleep(HEALTH_INTERVAL)
        except KeyboardInterrupt:
            stats = server.stats
            say(f"tunnel stopped: {stats.connections} connection(s) carried, {stats.refused} refused, "
                f"{stats.bytes_up} bytes up, {stats.bytes_down} bytes down")  # fmt: skip
            return 0
        raise SshError(f"{bastion.label(bastion.address)}: the SSH connection closed; the tunnel stopped")
    finally:
        bastion.close()  # stops the SOCKS server and its connections first
