"""Evidence from a live environment, saved before destroy when a check failed.

Once destroy has run there is nothing left to look at, so ``kafkanet e2e`` (and
``kafkanet test``) save each host's evidence under the run's build directory,
``diagnostics/<UTC time>/``, and print the path (a CI job uploads it):

- local target, read directly (every namespace is this machine's): the plane's
  runtime files of each instance (``/run/kn_E/<host>/``: the NAT script's
  output ``cloud-init-output.log``, each broker stand-in's ``tansu.log``, sshd's
  log, its ``etc/``), and for every
  namespace ``kn_E_*`` its nftables ruleset, routes, policy rules and addresses;
- AWS, over SSH through the bastion (a ``run_on_host`` the caller brings from
  :mod:`generator.access`, a layer above this one): cloud-init's status and
  output, the journals of the kafkanet and Kafka units, the nftables ruleset,
  routes, forwarding and the rendered configs;
- both: the user data kafkanet rendered (``user-data/`` of the build directory)
  and, per host, the files it writes (``hosts/<host>/rendered/etc/...``: the
  rendered configs, e.g. each broker's ``server.properties``).

Collecting is best effort and bounded: every command has a timeout, and what
could not be read is listed in ``summary.txt`` instead of failing the run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from generator.environment.session import Env

DIR = "diagnostics"
COMMAND_TIMEOUT = 15.0

#: (host, shell command, timeout) -> (exit status, output): one command on one host.
HostRunner = Callable[[str, str, float], tuple[int, str]]

#: What each namespace shows locally: file name -> argv after `ip netns exec NS`.
LOCAL_NAMESPACE = {
    "nft-ruleset.txt": ["nft", "list", "ruleset"],
    "routes.txt": ["ip", "route", "show", "table", "all"],
    "rules.txt": ["ip", "rule"],
    "addresses.txt": ["ip", "-brief", "address"],
}

#: What each host shows on AWS: file name -> command run through the bastion.
AWS_HOST = {
    "cloud-init-status.txt": "cloud-init status --long",
    "cloud-init-output.log": "sudo cat /var/log/cloud-init-output.log",
    "journal.txt": "sudo journalctl --no-pager -n 3000 -u 'kafkanet-*' -u kafka.service",
    "units.txt": "systemctl --no-pager list-units --all 'kafkanet-*' kafka.service",
    "nft-ruleset.txt": "sudo nft list ruleset",
    "routes.txt": "ip route show table all; echo; ip rule; echo; sysctl net.ipv4.ip_forward",
    "addresses.txt": "ip -brief address",
    "configs.txt": ("sudo sh -c 'for f in /etc/kafka/server.properties /etc/kafkanet/* /etc/sysctl.d/*kafkanet*; "
                    "do [ -f \"$f\" ] && { echo \"== $f\"; cat \"$f\"; }; done; true'"),
}


@dataclass
class Diagnostics:
    path: Path
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def host_file(self, host: str, name: str) -> Path:
        return self.path / "hosts" / host / name


def collect(env: Env, run_on_host: HostRunner | None = None, hosts: list[str] | None = None,
            now: datetime | None = None) -> Diagnostics:  # fmt: skip
    """Save the environment's evidence under ``<build dir>/diagnostics/<UTC time>/``."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    diag = Diagnostics(path=env.path(DIR) / stamp)
    diag.path.mkdir(parents=True, exist_ok=True)
    user_data = env.path("user-data")
    if user_data.is_dir():
        _copy(diag, user_data, diag.path / "rendered" / "user-data")
        _rendered_files(diag, user_data)
    if env.target == "local":
        _collect_local(env, diag)
    elif run_on_host is not None:
        for host in hosts or []:
            for name, command in AWS_HOST.items():
                _save_command(diag, diag.host_file(host, name), lambda c=command, h=host: run_on_host(h, c, COMMAND_TIMEOUT))
    else:
        diag.problems.append("no way to reach the hosts (no bastion session): only the rendered files are saved")
    summary = [f"kafkanet diagnostics of {env.name} ({env.target}), {stamp}", ""]
    summary += [str(f.relative_to(diag.path)) for f in sorted(diag.files)]
    if diag.problems:
        summary += ["", "could not be collected:", *(f"  {p}" for p in diag.problems)]
    (diag.path / "summary.txt").write_text("\n".join(summary) + "\n")
    return diag


def _rendered_files(diag: Diagnostics, user_data: Path) -> None:
    """Each host's configs as its user data writes them: ``hosts/<host>/rendered/<path>``.

    On AWS the host's own copies are read too (``configs.txt``); locally this is
    what the plane's stand-ins were given (server.properties, the NAT script...)."""
    from generator.module import userdata

    for doc in sorted(user_data.glob("*.yaml")):
        loaded = userdata.load(doc)
        if loaded.node is None:
            diag.problems.append(f"{doc.name}: not YAML; its files could not be extracted")
        for entry in loaded.write_files:
            dest = diag.path / "hosts" / doc.stem / "rendered" / entry.path.lstrip("/")
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(entry.content)
            except OSError as exc:
                diag.problems.append(f"{dest.relative_to(diag.path)}: {exc.strerror or exc}")
            else:
                diag.files.append(dest)


def _collect_local(env: Env, diag: Diagnostics) -> None:
    from localvpc import netns, plane, render

    runtime = plane.runtime_dir(env.name)
    if runtime.is_dir():
        for folder in sorted(p for p in runtime.iterdir() if p.is_dir() and p.name != "netns"):
            _copy(diag, folder, diag.path / "hosts" / folder.name, skip={"authorized_keys"})
        for log in sorted(runtime.glob("*.log")) + sorted(runtime.glob("*.json")):
            _copy(diag, log, diag.path / "plane" / log.name)
    else:
        diag.problems.append(f"{runtime}: no runtime directory (the local data plane is not up)")
    prefix = render.netns_prefix(env.name)
    names = netns.list_netns(prefix)
    if not names:
        diag.problems.append(f"no network namespace {prefix}* (the local data plane is not up)")
    hosts = {p.name for p in (diag.path / "hosts").iterdir()} if (diag.path / "hosts").is_dir() else set()
    for ns in names:
        short = ns[len(prefix):]
        where = diag.path / ("hosts" if short in hosts else "namespaces") / short
        for name, argv in LOCAL_NAMESPACE.items():
            _save_command(diag, where / name, lambda a=argv, n=ns: _netns_exec(n, a))


def _netns_exec(ns: str, argv: list[str]) -> tuple[int, str]:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT, check=False)  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr


def _save_command(diag: Diagnostics, path: Path, run: Callable[[], tuple[int, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        rc, output = run()
    except Exception as exc:  # noqa: BLE001 - best effort: say what could not be read, go on
        diag.problems.append(f"{path.relative_to(diag.path)}: {type(exc).__name__}: {exc}")
        return
    if rc != 0:
        diag.problems.append(f"{path.relative_to(diag.path)}: exit {rc}")
    path.write_text(output)
    diag.files.append(path)


def _copy(diag: Diagnostics, source: Path, dest: Path, skip: set[str] = frozenset()) -> None:
    try:
        if source.is_dir():
            shutil.copytree(source, dest, ignore=lambda d, names: [n for n in names if n in skip
                                                                    or not (Path(d) / n).is_file()
                                                                    and not (Path(d) / n).is_dir()],
                            dirs_exist_ok=True)  # fmt: skip
            diag.files.extend(p for p in dest.rglob("*") if p.is_file())
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            diag.files.append(dest)
    except OSError as exc:
        diag.problems.append(f"{source}: {exc.strerror or exc}")
