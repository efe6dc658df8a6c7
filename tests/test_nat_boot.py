"""The NAT instance's boot scripts, run for real from the rendered user data.

- kafkanet-nat-packages: installs nftables with a bounded number of retries
  (cloud-init's `packages:` tries once, and AL2023's first-boot dnf can fail),
  driven here by a stand-in package command that fails a few times, or always.
- kafkanet-nat-setup: checks its own result. It runs in a throw-away network
  namespace (kntest_*) with a veth uplink, once with the real nft, then with an
  nft that exits 0 but loses the masquerade rule, and with a sysctl that does
  not apply: both must fail loudly instead of leaving a NAT that forwards nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.bootkit import cloud_configs, install, scratch_netns, stub, written

# Where the user data puts them on the instance (written out: these tests pin the contract;
# the local data plane runs NAT_SCRIPT_PATH from the user data).
NAT_SCRIPT_PATH = "/usr/local/sbin/kafkanet-nat-setup"
NAT_PACKAGES_SCRIPT_PATH = "/usr/local/sbin/kafkanet-nat-packages"


@pytest.fixture(scope="module")
def nat_cloud() -> dict:
    return cloud_configs()["nat"]


# --- kafkanet-nat-packages ---------------------------------------------------------


def _run_packages(script: Path, bin_dir: Path, tries: int) -> tuple[subprocess.CompletedProcess, float]:
    # PATH without /usr/sbin, where this machine's nft lives: the script must see no nft
    # until the stand-in package command "installs" one into bin_dir.
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "KAFKANET_PKG_INSTALL": f"{bin_dir}/fake-dnf -y install",
        "KAFKANET_PKG_TRIES": str(tries),
        "KAFKANET_PKG_BACKOFF": "0",
        "KAFKANET_PKG_BACKOFF_MAX": "0",
    }
    started = time.monotonic()
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


def _fake_dnf(bin_dir: Path, failures: int) -> Path:
    """A package command that fails `failures` times, then installs an `nft` (and boto3's python3) into bin_dir."""
    calls = bin_dir / "calls"
    stub(
        bin_dir,
        "fake-dnf",
        f"""
        echo "$*" >>{calls}
        if (( $(wc -l <{calls}) <= {failures} )); then
          echo "Error: Failed to download metadata for repo 'amazonlinux'" >&2
          exit 1
        fi
        printf '#!/bin/sh\\nexit 0\\n' >{bin_dir}/nft && chmod +x {bin_dir}/nft
        # python3-boto3: a python3 for which `import boto3` succeeds
        printf '#!/bin/sh\\nexit 0\\n' >{bin_dir}/python3 && chmod +x {bin_dir}/python3
        """,
    )
    return calls


def test_package_script_retries_until_nftables_installs(nat_cloud, tmp_path):
    script = install(written(nat_cloud, NAT_PACKAGES_SCRIPT_PATH), tmp_path)
    bin_dir = tmp_path / "bin"
    calls = _fake_dnf(bin_dir, failures=3)
    result, _ = _run_packages(script, bin_dir, tries=6)
    assert result.returncode == 0, result.stdout + result.stderr
    assert calls.read_text().splitlines() == ["-y install nftables python3-boto3"] * 4
    assert "on try 4 of 6" in result.stdout, result.stdout


def test_package_script_gives_up_loudly_within_its_bound(nat_cloud, tmp_path):
    script = install(written(nat_cloud, NAT_PACKAGES_SCRIPT_PATH), tmp_path)
    bin_dir = tmp_path / "bin"
    calls = _fake_dnf(bin_dir, failures=1000)
    result, seconds = _run_packages(script, bin_dir, tries=5)
    assert result.returncode != 0
    assert len(calls.read_text().splitlines()) == 5, "tried more or fewer times than its bound"
    assert "giving up" in result.stderr and "failed 5 times" in result.stderr, result.stderr
    assert seconds < 30


def test_package_script_does_nothing_when_nft_is_there(nat_cloud, tmp_path):
    """At every later boot: no package command (and no network) needed."""
    script = install(written(nat_cloud, NAT_PACKAGES_SCRIPT_PATH), tmp_path)
    bin_dir = tmp_path / "bin"
    calls = _fake_dnf(bin_dir, failures=0)
    stub(bin_dir, "nft", "exit 0")
    stub(bin_dir, "python3", "exit 0")  # boto3 imports
    result, _ = _run_packages(script, bin_dir, tries=5)
    assert result.returncode == 0, result.stderr
    assert not calls.exists()


# --- kafkanet-nat-setup, in a throw-away namespace ----------------------------------


def _uplink(ns: str) -> None:
    """An uplink with a default route, what the script looks for, inside ns only: a veth
    whose peer stays in the same namespace (these kernels have no dummy module)."""
    for argv in (
        ["link", "add", "kn0", "type", "veth", "peer", "name", "kn1"],
        ["addr", "add", "10.0.0.10/24", "dev", "kn0"],
        ["link", "set", "kn1", "up"],
        ["link", "set", "kn0", "up"],
        ["route", "add", "default", "via", "10.0.0.1", "dev", "kn0"],
    ):
        subprocess.run(["ip", "-n", ns, *argv], check=True, capture_output=True, timeout=10)


def _setup(ns: str, script: Path, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    path = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env = {"PATH": f"{path_prefix}:{path}" if path_prefix else path}
    return subprocess.run(
        ["ip", "netns", "exec", ns, "bash", str(script)], env=env, capture_output=True, text=True, timeout=120
    )


def _in(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], check=True, capture_output=True, text=True, timeout=10
    ).stdout


def _real(tool: str) -> str:
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{tool} is not installed; run `make install`")
    return found


def _good_then_broken(script: Path, stand_in: Path, prepare: list[str], probe: list[str]):
    """In one throw-away namespace: the script with the real tools must succeed (the
    positive control), then, after `prepare`, with `stand_in` first on PATH; returns
    that second run and what `probe` reads afterwards."""
    with scratch_netns() as ns:
        _uplink(ns)
        good = _setup(ns, script)
        assert good.returncode == 0, good.stdout + good.stderr
        if prepare:
            _in(ns, *prepare)
        bad = _setup(ns, script, stand_in)
        return bad, _in(ns, *probe)


@pytest.mark.root
def test_nat_setup_fails_loudly_when_the_masquerade_rule_is_missing(nat_cloud, tmp_path):
    script = install(written(nat_cloud, NAT_SCRIPT_PATH), tmp_path)
    nft = _real("nft")
    # nft 1.0.4 on AL2023 has been reported to load such a batch as an empty table and exit 0:
    # this nft applies what it is given, minus the masquerade rule, and exits 0.
    lossy = tmp_path / "lossy"
    stub(lossy, "nft", f"""
        if [[ "$1" == -f ]]; then
          grep -v masquerade | {nft} -f -
          exit 0
        fi
        exec {nft} "$@"
        """)  # fmt: skip
    bad, chain = _good_then_broken(script, lossy, [], [nft, "list", "chain", "ip", "kafkanet_nat", "postrouting"])
    assert "masquerade" not in chain, "the stand-in nft did not drop the rule; the test proves nothing"
    assert bad.returncode != 0, f"exited 0 without a masquerade rule:\n{bad.stdout}{bad.stderr}"
    assert "no masquerade rule for 10.0.0.0/16 out of kn0" in bad.stderr, bad.stderr


@pytest.mark.root
def test_nat_setup_fails_loudly_when_forwarding_stays_off(nat_cloud, tmp_path):
    script = install(written(nat_cloud, NAT_SCRIPT_PATH), tmp_path)
    sysctl = _real("sysctl")
    inert = tmp_path / "inert"  # a sysctl that reads but never writes
    stub(inert, "sysctl", f"""
        for arg in "$@"; do [[ "$arg" == -w ]] && exit 0; done
        exec {sysctl} "$@"
        """)  # fmt: skip
    bad, forwarding = _good_then_broken(
        script, inert, [sysctl, "-q", "-w", "net.ipv4.ip_forward=0"], [sysctl, "-n", "net.ipv4.ip_forward"]
    )
    assert forwarding.strip() == "0", "the stand-in sysctl applied the setting; the test proves nothing"
    assert bad.returncode != 0, f"exited 0 with forwarding off:\n{bad.stdout}{bad.stderr}"
    assert "net.ipv4.ip_forward reads 0" in bad.stderr, bad.stderr
