"""A moto server on 127.0.0.1, owned by one environment.

The server is a separate process (``python -m generator.localaws.moto_compat``: moto.server with EC2 fixes) in its own
session, so Ctrl-C in the terminal of ``kafkanet apply`` does not kill it and it
keeps serving ``kafkanet test`` and ``kafkanet destroy`` later. Its records live
in the state directory the caller gives (e.g. ``build/<env>/.kafkanet/``):

* ``moto.pid``  - the server's pid
* ``moto.port`` - its TCP port on 127.0.0.1
* ``moto.log``  - its stdout/stderr (appended to, kept after stop)
* ``moto.iam.json`` - only with IAM enforcement on (``start(iam_policy=...)``): the
  access keys of the principal that holds the policy (mode 0600; moto's, never AWS's)
* ``moto.actions`` - with IAM enforcement on: every action moto checked, one line each
  (``allowed|denied ACTION USER``), kept after stop like the log

IAM enforcement: moto checks the action of every request against the caller's
IAM policies once its "initial no-auth action count" is used up. The server
starts with it unlimited, creates two IAM users through its own API (the
principal, holding only the policy given, whose keys terraform, kafkanet and
the integration suite then use; and an administrator, for set-up), and then
sets the count to 0 (``/moto-api/reset-auth``, the server-mode form of moto's
``set_initial_no_auth_action_count``): from then on a call the policy does not
allow fails with AccessDenied naming its action. moto checks actions only, not
resources or conditions.

:func:`find_running` reconnects from those records and removes them when they
are stale (process gone, or the pid now belongs to something else).
It only ever binds 127.0.0.1; there is no parameter to change that.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.base.endpoints import is_loopback_url
from generator.base.errors import InfraError, PrerequisiteError
from generator.base.files import write_atomic
from generator.base.procs import cmdline, poll, read_int, terminate

HOST = "127.0.0.1"
# moto.server behind a small shim that restores EC2 behaviour kafkanet relies on (see moto_compat)
MODULE = "generator.localaws.moto_compat"
# servers started by a kafkanet from before generator/ was layered, so that this one
# still finds (and stops) what an environment applied with it left running
EARLIER_MODULES = ("generator.moto_compat",)
PID_FILE = "moto.pid"
PORT_FILE = "moto.port"
LOG_FILE = "moto.log"
IAM_FILE = "moto.iam.json"
ACTIONS_FILE = "moto.actions"
ACTION_LOG_ENV = "KAFKANET_MOTO_ACTION_LOG"  # read by moto_compat inside the server
PRINCIPAL_USER = "kafkanet-nightly"
ADMIN_USER = "kafkanet-local-admin"
FAKE_CREDENTIALS = ("testing", "testing")  # what moto takes while it does not enforce IAM
# services the AWS provider calls: EC2 for everything, STS and IAM for its account checks
ENDPOINT_SERVICES = ("EC2", "STS", "IAM")
HEALTH_PATH = "/moto-api/config"  # tiny JSON, and only moto answers it

DEFAULT_STARTUP_BUDGET = 30.0  # moto imports in ~0.7 s here
DEFAULT_STOP_BUDGET = 10.0
_PORT_ATTEMPTS = 3  # a free port can be taken between our probe and moto's bind


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _is_our_moto(pid: int, port: int) -> bool:
    """Whether ``pid`` is alive and is a moto server started for ``port`` on 127.0.0.1."""
    argv = cmdline(pid)
    if not argv:
        return False
    started = any(module in argv for module in (MODULE, *EARLIER_MODULES))
    return started and ["-H", HOST] == _pair(argv, "-H") and ["-p", str(port)] == _pair(argv, "-p")


def _pair(argv: list[str], flag: str) -> list[str]:
    if flag in argv:
        index = argv.index(flag)
        return argv[index : index + 2]
    return []


def read_credentials(path: Path | str | None) -> tuple[str, str]:
    """The principal's (access key id, secret) from a server's ``moto.iam.json``; moto's fake pair without one."""
    if path is None:
        return FAKE_CREDENTIALS
    try:
        principal = json.loads(Path(path).read_text())["principal"]
        return principal["access_key_id"], principal["secret_access_key"]
    except (OSError, ValueError, KeyError) as exc:
        raise InfraError(f"{path}: cannot read the local IAM principal's keys ({exc}); apply again") from None


def client(service: str, endpoint: str, region: str, credentials: tuple[str, str] = FAKE_CREDENTIALS,
           **client_options: Any):  # fmt: skip
    """boto3 on a moto server: moto's credentials, and only ever a loopback endpoint."""
    import boto3

    if not is_loopback_url(endpoint):
        raise InfraError(f"refusing an {service.upper()} client for {endpoint}: a local moto server is on 127.0.0.1")
    key, secret = credentials
    return boto3.client(
        service, region_name=region, endpoint_url=endpoint,
        aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=None, **client_options,
    )


def ec2_client(endpoint: str, region: str, credentials: tuple[str, str] = FAKE_CREDENTIALS, **client_options: Any):
    """boto3 EC2 on a moto server (see :func:`client`)."""
    return client("ec2", endpoint, region, credentials, **client_options)


@dataclass
class MotoServer:
    """A running moto server. ``url`` is what terraform (via ``env()``) and boto3 get."""

    pid: int
    port: int
    state_dir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def ec2_client(self, region: str, **client_options: Any):
        """EC2 as the principal under test (with IAM enforcement off: moto's fake credentials)."""
        return ec2_client(self.url, region, self.credentials, **client_options)

    def admin_ec2_client(self, region: str, **client_options: Any):
        """EC2 as the set-up administrator: for the local stand-in of AWS's own machinery (the data
        plane reading what was applied), which on AWS needs no permission of the role."""
        if not self.iam_enforced:
            return self.ec2_client(region, **client_options)
        try:
            admin = json.loads(self.iam_file.read_text())["admin"]
        except (OSError, ValueError, KeyError) as exc:
            raise InfraError(f"{self.iam_file}: cannot read the local administrator's keys ({exc})") from None
        return ec2_client(self.url, region, (admin["access_key_id"], admin["secret_access_key"]), **client_options)

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    @property
    def iam_file(self) -> Path:
        return self.state_dir / IAM_FILE

    @property
    def actions_path(self) -> Path:
        return self.state_dir / ACTIONS_FILE

    @property
    def iam_enforced(self) -> bool:
        return self.iam_file.is_file()

    @property
    def credentials(self) -> tuple[str, str]:
        """Keys of the principal terraform, kafkanet and the suite act as."""
        return read_credentials(self.iam_file if self.iam_enforced else None)

    def env(self) -> dict[str, str | None]:
        """Environment for terraform/boto3 against this server (None = unset).

        This is how the local target reaches moto: the generated module has no
        endpoint setting of its own. Fake credentials, no profile or session
        token, ``AWS_ENDPOINT_URL`` for every service plus the three the AWS
        provider calls (EC2, and STS/IAM for its account checks) spelled out,
        the switch that would make SDKs ignore them removed, and no instance
        metadata lookups: every request lands on 127.0.0.1, never on AWS.
        """
        key, secret = self.credentials
        return {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": None,
            "AWS_SECURITY_TOKEN": None,
            "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None,
            "AWS_ENDPOINT_URL": self.url,
            **{f"AWS_ENDPOINT_URL_{service}": self.url for service in ENDPOINT_SERVICES},
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": None,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def is_alive(self) -> bool:
        """The recorded process still exists and is this moto server."""
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return _is_our_moto(self.pid, self.port)

    def healthy(self, timeout: float = 2.0) -> bool:
        """moto answers its own API on our port, and the process is ours."""
        if not self.is_alive():
            return False
        try:
            with urllib.request.urlopen(f"{self.url}{HEALTH_PATH}", timeout=timeout) as response:
                body = json.loads(response.read() or b"null")
        except (OSError, ValueError):
            return False
        return isinstance(body, dict)

    def reset(self) -> None:
        """Forget every resource moto holds (POST /moto-api/reset)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except OSError as exc:
            raise InfraError(f"moto server on {self.url} did not reset: {exc}") from None

    def stop(self, budget: float = DEFAULT_STOP_BUDGET) -> None:
        """SIGTERM, then SIGKILL its process group after ``budget``; remove the records."""
        if self.is_alive():
            terminate(self.pid, budget, self._proc)  # moto.server exits 0 on SIGTERM
        elif self._proc is not None:
            self._proc.wait()
        _remove_records(self.state_dir)


def _remove_records(state_dir: Path) -> None:
    for name in (PID_FILE, PORT_FILE, IAM_FILE):
        (state_dir / name).unlink(missing_ok=True)


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(tail)


def find_running(state_dir: Path | str, budget: float = 5.0) -> MotoServer | None:
    """The server recorded in ``state_dir`` if it is still running, else None.

    Stale records (process dead, or the pid reused by another program) are
    removed; an unrelated process is never signalled. A live server that does
    not answer within ``budget`` seconds raises InfraError.
    """
    state = Path(state_dir)
    pid = read_int(state / PID_FILE)
    port = read_int(state / PORT_FILE)
    if pid is None or port is None:
        _remove_records(state)
        return None
    server = MotoServer(pid=pid, port=port, state_dir=state)
    if not server.is_alive():
        _remove_records(state)
        return None
    if not poll(budget, server.healthy):
        raise InfraError(
            f"moto server (pid {pid}) on {server.url} is running but not answering; "
            f"see {server.log_path} or stop it with: kill {pid}"
        )
    return server


def start(
    state_dir: Path | str,
    *,
    port: int | None = None,
    budget: float = DEFAULT_STARTUP_BUDGET,
    python: str = sys.executable,
    iam_policy: dict[str, Any] | None = None,
) -> MotoServer:
    """Start a moto server on 127.0.0.1 (a free port unless ``port``) and wait until healthy.

    With ``iam_policy``, IAM enforcement is on before this returns: every later
    request must be signed by the principal holding only that policy (its keys
    in :attr:`MotoServer.credentials`) and is refused when the policy lacks its action.

    Refuses (InfraError) when ``state_dir`` already records a running server:
    use :func:`find_running` or :func:`ensure_running`.
    """
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    existing = find_running(state)
    if existing is not None:
        raise InfraError(
            f"a moto server is already running for {state} (pid {existing.pid}, {existing.url})"
        )
    tries = 1 if port is not None else _PORT_ATTEMPTS
    last_problem = ""
    for _ in range(tries):
        chosen = port if port is not None else _free_port()
        server, last_problem = _start_once(state, chosen, budget, python)
        if server is not None:
            if iam_policy is not None:
                try:
                    _enforce_iam(server, iam_policy)
                except BaseException:
                    server.stop()
                    raise
            return server
    raise InfraError(f"moto server did not start on {HOST}: {last_problem}")


def _start_once(state: Path, port: int, budget: float, python: str) -> tuple[MotoServer | None, str]:
    log_path = state / LOG_FILE
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["MOTO_PORT"] = str(port)
    env[ACTION_LOG_ENV] = str((state / ACTIONS_FILE).resolve())  # written only while IAM is enforced
    with log_path.open("ab") as log:
        offset = log.tell()
        log.write(f"--- kafkanet: starting moto on {HOST}:{port} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                [python, "-m", MODULE, "-H", HOST, "-p", str(port)],
                cwd=state,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise PrerequisiteError(f"cannot run {python} -m moto.server: {exc}") from None
    # Record first: if we die while waiting, destroy still finds and stops it.
    write_atomic(state / PID_FILE, f"{proc.pid}\n")
    write_atomic(state / PORT_FILE, f"{port}\n")
    server = MotoServer(pid=proc.pid, port=port, state_dir=state, _proc=proc)
    banner = f"Running on http://{HOST}:{port}".encode()

    def bound_and_answering() -> bool:
        # The banner proves *our* process bound the port (werkzeug prints it only
        # after bind); the HTTP check proves it serves. Either alone could be
        # fooled by another server that grabbed the port first.
        if proc.poll() is not None:
            return True  # stop polling; reported below
        with log_path.open("rb") as log:
            log.seek(offset)
            if banner not in log.read():
                return False
        return server.healthy(timeout=1.0)

    if poll(budget, bound_and_answering) and proc.poll() is None:
        return server, ""
    if proc.poll() is not None:
        problem = f"it exited with code {proc.returncode} ({_log_tail(log_path)}); log: {log_path}"
    else:
        problem = f"not healthy after {budget:g}s; log: {log_path}"
    server.stop()
    return None, problem


def _enforce_iam(server: MotoServer, policy: dict[str, Any]) -> None:
    """Create the principal (only ``policy``) and an administrator, record their keys, then enforce."""
    from botocore.exceptions import BotoCoreError, ClientError

    iam = client("iam", server.url, "us-east-1")
    keys = {}
    try:
        for role, user, document in (
            ("admin", ADMIN_USER, {"Version": "2012-10-17",
                                   "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
            ("principal", PRINCIPAL_USER, policy),
        ):  # fmt: skip
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName="kafkanet", PolicyDocument=json.dumps(document))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[role] = {"user": user, "access_key_id": key["AccessKeyId"],
                          "secret_access_key": key["SecretAccessKey"]}  # fmt: skip
    except (BotoCoreError, ClientError) as exc:
        raise InfraError(f"moto server on {server.url}: could not set up the IAM principal: {exc}") from None
    write_atomic(server.iam_file, json.dumps(keys, indent=2) + "\n", mode=0o600)
    # the count as the raw body (a form content type would hide it from moto)
    request = urllib.request.Request(f"{server.url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except OSError as exc:
        raise InfraError(f"moto server on {server.url} did not turn IAM enforcement on: {exc}") from None


def ensure_running(state_dir: Path | str, **start_options: Any) -> MotoServer:
    """The environment's running server, started if there is none.

    With ``iam_policy`` a running server must enforce IAM already: one started
    without it cannot be switched over (its resources were made by no principal).
    """
    server = find_running(state_dir)
    if server is not None:
        if start_options.get("iam_policy") is not None and not server.iam_enforced:
            raise PrerequisiteError(
                f"the moto server of {state_dir} runs without IAM enforcement; destroy the environment "
                "and apply it again with KAFKANET_IAM_ENFORCE set"
            )
        return server
    return start(state_dir, **start_options)


def stop(state_dir: Path | str, budget: float = DEFAULT_STOP_BUDGET) -> bool:
    """Stop whatever server ``state_dir`` records (also after a crash); True if one ran."""
    state = Path(state_dir)
    pid = read_int(state / PID_FILE)
    port = read_int(state / PORT_FILE)
    if pid is None or port is None or not _is_our_moto(pid, port):
        _remove_records(state)
        return False
    MotoServer(pid=pid, port=port, state_dir=state).stop(budget)
    return True
