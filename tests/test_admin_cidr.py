"""`--admin-cidr CIDR|auto` on generate/plan/apply: the override reaches the HCL, `auto` asks a checkip URL.

Every checkip server here is an http.server on 127.0.0.1 in a thread; the
local target's refusal of any other URL is checked with the socket layer
patched to fail on any connection attempt.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from generator.base.errors import UserError
from generator.cli import main
from generator.module import admincidr
from tests.conftest import SEED

SPEC_CIDR = "203.0.113.50/32"  # what the seed spec says


@dataclass
class Reply:
    body: bytes = b"203.0.113.9\n"
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class CheckIp:
    """A checkip stand-in on loopback: answers every GET with ``reply``, counts requests."""

    def __init__(self) -> None:
        self.reply = Reply()
        self.requests: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's interface)
                owner.requests.append(self.path)
                reply = owner.reply
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def checkip(monkeypatch) -> Iterator[CheckIp]:
    server = CheckIp()
    monkeypatch.setenv(admincidr.CHECKIP_ENV, server.url)
    yield server
    server.close()


def admin_default(build: Path) -> str:
    """The `default` line of variable "admin_cidrs" in the generated variables.tf."""
    text = (build / "ttareungyi" / "variables.tf").read_text()
    block = text[text.index('variable "admin_cidrs"'):]
    return next(line.strip() for line in block.splitlines() if line.strip().startswith("default"))


def test_without_the_option_the_spec_cidr_is_generated(_build_root):
    assert main(["generate", str(SEED)]) == 0
    assert admin_default(_build_root) == f'default     = ["{SPEC_CIDR}"]'


def test_a_cidr_replaces_the_spec_one_in_the_hcl(_build_root, capsys):
    assert main(["generate", str(SEED), "--admin-cidr", "203.0.113.7/32"]) == 0
    assert admin_default(_build_root) == 'default     = ["203.0.113.7/32"]'
    assert SPEC_CIDR not in (_build_root / "ttareungyi" / "variables.tf").read_text()
    err = capsys.readouterr().err
    assert "admin CIDR(s) for this run: 203.0.113.7/32" in err and f"the spec has {SPEC_CIDR}" in err


def test_repeated_option_gives_every_cidr_once_in_order(_build_root):
    argv = ["generate", str(SEED), "--admin-cidr", "198.51.100.0/28", "--admin-cidr", "203.0.113.7/32",
            "--admin-cidr", "198.51.100.0/28"]  # fmt: skip
    assert main(argv) == 0
    assert admin_default(_build_root) == 'default     = ["198.51.100.0/28", "203.0.113.7/32"]'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("203.0.113.7", "--admin-cidr: '203.0.113.7' is not a CIDR: add the prefix length, e.g. 203.0.113.7/32"),
        ("203.0.113.7/24", "--admin-cidr: '203.0.113.7/24' has host bits set; did you mean 203.0.113.0/24?"),
        ("0.0.0.0/0", "--admin-cidr: 0.0.0.0/0 would open SSH to the whole internet"),
        ("my-laptop", "--admin-cidr: 'my-laptop' is not a CIDR"),
    ],
)
def test_a_bad_cidr_is_refused_like_the_spec_field_and_nothing_is_written(value, message, _build_root, capsys):
    assert main(["generate", str(SEED), "--admin-cidr", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not _build_root.exists()


def test_auto_uses_the_address_checkip_answers(checkip, _build_root, capsys):
    assert main(["generate", str(SEED), "--admin-cidr", "auto"]) == 0
    assert admin_default(_build_root) == 'default     = ["203.0.113.9/32"]'
    assert checkip.requests == ["/"]
    assert "admin CIDR(s) for this run: 203.0.113.9/32" in capsys.readouterr().err


def test_auto_accepts_a_public_address(checkip):
    checkip.reply = Reply(b"8.8.4.4")  # never contacted: only the answer of the loopback server
    assert admincidr.resolve(["auto"], "aws") == [admincidr.ipaddress.IPv4Network("8.8.4.4/32")]


@pytest.mark.parametrize(
    ("reply", "seen"),
    [
        (Reply(b"<html>hello</html>"), "answered '<html>hello</html>', not one IPv4 address"),
        (Reply(b"203.0.113.9\n203.0.113.10\n"), "not one IPv4 address"),
        (Reply(b""), "answered '', not one IPv4 address"),
        (Reply(b"10.1.2.3\n"), "answered 10.1.2.3, a private address"),
        (Reply(b"192.168.0.7"), "answered 192.168.0.7, a private address"),
        (Reply(b"127.0.0.1"), "answered 127.0.0.1, a loopback address"),
        (Reply(b"100.64.3.4"), "answered 100.64.3.4, a shared (carrier-grade NAT) address"),
        (Reply(b"192.0.2.7"), "answered 192.0.2.7, a private address"),  # documentation, not the local plane's
        (Reply(b"2001:db8::1"), "not one IPv4 address"),
        (Reply(b"x" * 400), "answered more than 256 bytes"),
        (Reply(b"oops", status=503), "answered HTTP 503"),
    ],
    ids=["html", "two-addresses", "empty", "rfc1918-10", "rfc1918-192", "loopback", "cgnat", "test-net-1", "ipv6",
         "too-long", "http-503"],
)
def test_auto_refuses_what_is_not_one_public_address(reply, seen, checkip, _build_root, capsys):
    checkip.reply = reply
    assert main(["generate", str(SEED), "--admin-cidr", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"--admin-cidr auto: {checkip.url}" in err[0] and seen in err[0], err
    assert "pass your address instead, e.g. --admin-cidr 203.0.113.50/32" in err[0]
    assert not _build_root.exists()


def test_auto_gives_up_after_its_timeout(checkip, monkeypatch, capsys, _build_root):
    monkeypatch.setattr(admincidr, "CHECKIP_TIMEOUT", 0.5)
    checkip.reply = Reply(delay=3.0)
    started = time.monotonic()
    assert main(["generate", str(SEED), "--admin-cidr", "auto"]) == 2
    assert time.monotonic() - started < 2.5
    err = capsys.readouterr().err
    assert f"--admin-cidr auto: {checkip.url} sent no answer within 0.5 s" in err
    assert not _build_root.exists()


def test_auto_does_not_follow_a_redirect(checkip, capsys):
    elsewhere = CheckIp()
    try:
        checkip.reply = Reply(b"", status=302, headers={"Location": elsewhere.url})
        assert main(["generate", str(SEED), "--admin-cidr", "auto"]) == 2
        assert "answered HTTP 302" in capsys.readouterr().err
        assert elsewhere.requests == []
    finally:
        elsewhere.close()


def test_auto_names_a_url_that_refuses_the_connection(monkeypatch, capsys):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = probe.getsockname()[1]
    monkeypatch.setenv(admincidr.CHECKIP_ENV, f"http://127.0.0.1:{closed}/")
    assert main(["generate", str(SEED), "--admin-cidr", "auto"]) == 2
    assert f"--admin-cidr auto: cannot reach http://127.0.0.1:{closed}/: " in capsys.readouterr().err


@pytest.fixture
def no_connections(monkeypatch) -> list:
    """Every TCP connection attempt of this process fails the test (and is recorded)."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize("command", ["plan", "apply", "e2e"])
@pytest.mark.parametrize("url", [None, "https://checkip.amazonaws.com", "http://203.0.113.80/"],
                         ids=["default-url", "real-checkip", "emulated-web-host"])  # fmt: skip
def test_local_target_refuses_auto_with_a_non_loopback_url_before_any_connection(
    command, url, monkeypatch, no_connections, capsys, _build_root
):
    if url is None:
        monkeypatch.delenv(admincidr.CHECKIP_ENV, raising=False)
    else:
        monkeypatch.setenv(admincidr.CHECKIP_ENV, url)
    assert main([command, str(SEED), "--admin-cidr", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--admin-cidr auto: the local target never contacts the internet" in err[0], err
    assert f"point {admincidr.CHECKIP_ENV} at a server on loopback" in err[0]
    assert no_connections == []
    assert not _build_root.exists()


def test_local_target_uses_a_loopback_checkip(checkip):
    assert admincidr.resolve(["auto"], "local") == [admincidr.ipaddress.IPv4Network("203.0.113.9/32")]
    assert checkip.requests == ["/"]


def test_no_generate_with_an_override_is_refused(capsys):
    assert main(["apply", str(SEED), "--no-generate", "--admin-cidr", "203.0.113.7/32"]) == 2
    assert "--admin-cidr changes the generated module: drop --no-generate" in capsys.readouterr().err


def test_override_keeps_everything_else_of_the_spec():
    from generator.module.loaded import load

    loaded = load(SEED)
    changed = admincidr.override(loaded, [admincidr.parse("198.51.100.0/28")])
    assert [str(c) for c in changed.spec.admin_cidrs] == ["198.51.100.0/28"]
    assert changed.spec.model_dump(exclude={"admin_cidrs"}) == loaded.spec.model_dump(exclude={"admin_cidrs"})
    assert changed.topology.spec is changed.spec and changed.path == loaded.path
    with pytest.raises(UserError, match="--admin-cidr: 'nope' is not a CIDR"):
        admincidr.parse("nope")
