"""The generated ssh_config, read back by OpenSSH itself (`ssh -G` parses and resolves, never connects).

That it really reaches a broker through the bastion is checked on the live
seed in test_lifecycle_access.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from generator.base.errors import UserError
from generator.environment import sshconfig
from tests.conftest import require


def inventory(tmp_path: Path, proxy_command: str | None = "ip netns exec kn_x_operator nc %h %p") -> dict:
    key, known = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    return {
        "environment": "lab",
        "target": "local" if proxy_command else "aws",
        "ssh": {
            "user": "ec2-user",
            "private_key": str(key),
            "known_hosts": str(known),
            "proxy_command": proxy_command,
            "port": 22,
        },
        "bastion": {"name": "bastion", "public_ip": "198.51.100.10", "private_ip": "10.0.0.10"},
        "brokers": [
            {"name": "broker-1", "private_ip": "10.0.1.10"},
            {"name": "broker-2", "private_ip": "10.0.2.10"},
        ],
    }


def resolved(config: Path, host: str) -> dict[str, list[str]]:
    """What OpenSSH makes of ``host`` with only this file (``ssh -G``): option -> values."""
    out = subprocess.run([require("ssh"), "-G", "-F", str(config), host], capture_output=True, text=True, timeout=10,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    options: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        name, _, value = line.partition(" ")
        options.setdefault(name, []).append(value)
    return options


def test_bastion_block_on_the_local_target(tmp_path: Path):
    inv = inventory(tmp_path)
    config = sshconfig.write(tmp_path / "ssh_config", inv)
    got = resolved(config, "lab-bastion")
    assert got["hostname"] == ["198.51.100.10"] and got["user"] == ["ec2-user"] and got["port"] == ["22"]
    assert got["proxycommand"] == ["ip netns exec kn_x_operator nc %h %p"]
    assert "proxyjump" not in got
    assert got["identityfile"] == [inv["ssh"]["private_key"]] and got["identitiesonly"] == ["yes"]
    assert got["userknownhostsfile"] == [inv["ssh"]["known_hosts"]]
    assert got["globalknownhostsfile"] == ["/dev/null"]
    assert got["stricthostkeychecking"] == ["true"]  # how -G prints "yes"


@pytest.mark.parametrize(("host", "address"), [("lab-broker-1", "10.0.1.10"), ("lab-broker-2", "10.0.2.10")])
def test_brokers_jump_through_the_bastion(tmp_path: Path, host: str, address: str):
    inv = inventory(tmp_path)
    got = resolved(sshconfig.write(tmp_path / "ssh_config", inv), host)
    assert got["hostname"] == [address] and got["proxyjump"] == ["lab-bastion"]
    assert "proxycommand" not in got  # the jump host carries the ProxyCommand, not the broker
    assert got["identityfile"] == [inv["ssh"]["private_key"]] and got["stricthostkeychecking"] == ["true"]
    assert got["userknownhostsfile"] == [inv["ssh"]["known_hosts"]]


def test_aws_target_dials_the_bastion_directly(tmp_path: Path):
    config = sshconfig.write(tmp_path / "ssh_config", inventory(tmp_path, proxy_command=None))
    assert "ProxyCommand" not in config.read_text()
    got = resolved(config, "lab-bastion")
    assert got["hostname"] == ["198.51.100.10"] and "proxycommand" not in got


def test_no_block_matches_a_host_of_another_environment(tmp_path: Path):
    """The file may be Included from ~/.ssh/config: nothing in it may apply to other hosts."""
    inv = inventory(tmp_path)
    got = resolved(sshconfig.write(tmp_path / "ssh_config", inv), "lab-broker-9")
    assert got["hostname"] == ["lab-broker-9"] and "proxyjump" not in got and "proxycommand" not in got
    assert inv["ssh"]["private_key"] not in got["identityfile"]
    assert got["userknownhostsfile"] != [inv["ssh"]["known_hosts"]]


def test_paths_with_blanks_survive(tmp_path: Path):
    odd = tmp_path / "my builds"
    odd.mkdir()
    inv = inventory(odd)
    got = resolved(sshconfig.write(odd / "ssh_config", inv), "lab-broker-1")
    assert got["identityfile"] == [inv["ssh"]["private_key"]]
    assert got["userknownhostsfile"] == [inv["ssh"]["known_hosts"]]


def test_a_percent_in_a_path_is_escaped(tmp_path: Path):
    """Both options take %-tokens (ssh_config(5) TOKENS), expanded at connect time (`ssh -G` shows them raw)."""
    inv = inventory(tmp_path / "100%")
    text = sshconfig.render(inv, "x")
    assert f"  IdentityFile {tmp_path}/100%%/id_ed25519\n" in text
    assert f"  UserKnownHostsFile {tmp_path}/100%%/known_hosts\n" in text


def test_a_path_ssh_config_cannot_hold_is_refused_naming_it(tmp_path: Path):
    inv = inventory(tmp_path)
    inv["ssh"]["private_key"] = str(tmp_path / 'a"b' / "id")
    with pytest.raises(UserError, match=r"ssh.private_key .*a\"b.*cannot go into an ssh_config"):
        sshconfig.render(inv, "x")


def test_written_atomically_and_header_shows_how_to_use_it(tmp_path: Path):
    path = tmp_path / "build" / "lab" / "ssh_config"
    sshconfig.write(path, inventory(tmp_path))
    sshconfig.write(path, inventory(tmp_path))  # replacing it leaves no temporary file either
    assert [p.name for p in path.parent.iterdir()] == ["ssh_config"]
    assert path.stat().st_mode & 0o777 == 0o644
    assert f"#   ssh -F {path} lab-broker-1\n" in path.read_text()
