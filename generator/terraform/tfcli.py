"""Terraform prerequisites: the binary, the provider (a local mirror, or the registry), the CLI config.

An infra owner's laptop or a CI runner has terraform and internet: there
terraform installs hashicorp/aws the usual way, and kafkanet leaves the user's
own CLI configuration alone (``TF_CLI_CONFIG_FILE`` or ``~/.terraformrc``).
Where a filesystem mirror holding hashicorp/aws 5.100.0 is found (offline
machines such as the ones kafkanet is developed on, or ``KAFKANET_TF_MIRROR``
set), kafkanet writes its own CLI config that takes providers from the mirror
only, and hands it to every terraform run.

Measured on the dev machine (terraform 1.11.4, 675 MB provider binary):

* ``terraform init`` with an *unpacked* mirror copies nothing: it symlinks
  ``.terraform/providers/.../linux_amd64`` to the mirror directory (28 KB of
  ``.terraform``). A fresh init takes ~0.65 s; a re-init with an existing lock
  file ~1.2 s (it re-hashes the 675 MB binary to check the lock).
* ``plugin_cache_dir`` does not help: the cache entry is itself a symlink to the
  mirror, and re-init with a lock file got slower (~1.9 s, two hops hashed). So
  the config has no plugin cache.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from generator.base.errors import PrerequisiteError
from generator.base.files import write_atomic

MIRROR_ENV = "KAFKANET_TF_MIRROR"
PROVIDER_HOST = "registry.terraform.io"
PROVIDER_NAMESPACE = "hashicorp"
PROVIDER_TYPE = "aws"
PROVIDER_VERSION = "5.100.0"
MIN_TERRAFORM = (1, 5, 0)

# Searched in this order when KAFKANET_TF_MIRROR is not set.
MIRROR_CANDIDATES: tuple[str, ...] = (
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "/usr/share/terraform/plugins",
    "/usr/local/share/terraform/plugins",
)

_INSTALL_HINT = "install Terraform >= 1.5 (https://developer.hashicorp.com/terraform/install)"
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class TerraformSetup:
    """Everything a terraform run needs: which binary, its version, the mirror (None: the registry)."""

    binary: Path
    version: str
    mirror: Path | None


def provider_platform() -> str:
    """The provider platform of this machine, e.g. ``linux_amd64``."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    return f"{system}_{_GOARCH.get(machine, machine)}"


def _provider_dir(root: Path) -> Path:
    return root / PROVIDER_HOST / PROVIDER_NAMESPACE / PROVIDER_TYPE


def unpacked_provider(root: Path, platform_name: str | None = None) -> Path | None:
    """The executable of hashicorp/aws 5.100.0 in an unpacked mirror at ``root``, if there is one."""
    unpacked = _provider_dir(root) / PROVIDER_VERSION / (platform_name or provider_platform())
    found = sorted(
        candidate for candidate in unpacked.glob(f"terraform-provider-{PROVIDER_TYPE}_v{PROVIDER_VERSION}*")
        if candidate.is_file() and os.access(candidate, os.X_OK)
    )
    return found[0] if found else None


def mirror_has_provider(root: Path, platform_name: str | None = None) -> bool:
    """Whether ``root`` is a mirror holding hashicorp/aws 5.100.0 for this platform.

    Accepts both mirror layouts terraform knows: unpacked
    (``.../aws/5.100.0/linux_amd64/terraform-provider-aws_v5.100.0_x5``) and
    packed (``.../aws/terraform-provider-aws_5.100.0_linux_amd64.zip``).
    """
    plat = platform_name or provider_platform()
    if unpacked_provider(root, plat) is not None:
        return True
    packed = _provider_dir(root) / f"terraform-provider-{PROVIDER_TYPE}_{PROVIDER_VERSION}_{plat}.zip"
    return packed.is_file()


def _mirror_root(path: Path) -> Path:
    """Accept a path given inside the mirror tree and return the mirror's root."""
    parts = path.parts
    if PROVIDER_HOST in parts:
        return Path(*parts[: parts.index(PROVIDER_HOST)])
    return path


def find_mirror(environ: dict[str, str] | None = None) -> Path | None:
    """The provider mirror, or None when there is none (terraform then uses the registry).

    ``KAFKANET_TF_MIRROR``, when set, is the only place looked at, and a wrong
    value is a PrerequisiteError (not silently replaced by the registry).
    """
    env = os.environ if environ is None else environ
    wanted = f"{PROVIDER_HOST}/{PROVIDER_NAMESPACE}/{PROVIDER_TYPE}/{PROVIDER_VERSION}"
    override = env.get(MIRROR_ENV)
    if override:
        root = _mirror_root(Path(override).expanduser())
        if mirror_has_provider(root):
            return root
        raise PrerequisiteError(
            f"provider mirror not found: {MIRROR_ENV}={override} holds no "
            f"{wanted}/{provider_platform()}; point {MIRROR_ENV} at the directory "
            f"that contains {PROVIDER_HOST}/"
        )
    for candidate in MIRROR_CANDIDATES:
        root = Path(candidate).expanduser()
        if mirror_has_provider(root):
            return root
    return None


def find_terraform(path: str | None = None) -> Path:
    """The terraform binary on ``path`` (default: $PATH); PrerequisiteError if absent."""
    found = shutil.which("terraform", path=path)
    if found is None:
        raise PrerequisiteError(f"terraform not found on PATH: {_INSTALL_HINT}")
    return Path(found)


def _parse_version(text: str) -> tuple[int, int, int] | None:
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def terraform_version(binary: Path) -> str:
    """``terraform version`` of ``binary``, e.g. ``"1.11.4"``.

    Runs with the checkpoint (update check over the internet) disabled and
    without any CLI config, so it neither phones home nor warns about the
    missing ``/root/.terraformrc``.
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CLI_CONFIG_FILE"}
    env["CHECKPOINT_DISABLE"] = "1"
    try:
        proc = subprocess.run(
            [str(binary), "version", "-json"],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PrerequisiteError(f"terraform at {binary} does not run ({exc}): {_INSTALL_HINT}") from exc
    try:
        version = str(json.loads(proc.stdout)["terraform_version"])
    except (ValueError, KeyError, TypeError):
        # terraform before 0.13 has no -json; its first line is "Terraform v0.12.x".
        first = (proc.stdout or proc.stderr).strip().splitlines()[:1]
        match = re.search(r"v(\d+\.\d+\.\d+)", first[0]) if first else None
        if match is None:
            raise PrerequisiteError(
                f"terraform at {binary} did not report its version: {_INSTALL_HINT}"
            ) from None
        version = match.group(1)
    return version


def require_terraform(path: str | None = None, environ: dict[str, str] | None = None) -> str:
    """Check terraform (>= 1.5, on PATH) and a KAFKANET_TF_MIRROR if one is given; return the version.

    Raises PrerequisiteError with one clear line on the first thing missing.
    """
    return setup(path=path, environ=environ).version


def setup(path: str | None = None, environ: dict[str, str] | None = None) -> TerraformSetup:
    """Like :func:`require_terraform`, returning binary, version and mirror."""
    binary = find_terraform(path)
    version = terraform_version(binary)
    parsed = _parse_version(version)
    if parsed is None or parsed < MIN_TERRAFORM:
        raise PrerequisiteError(f"terraform {version} at {binary} is too old: {_INSTALL_HINT}")
    mirror = find_mirror(environ)
    return TerraformSetup(binary=binary, version=version, mirror=mirror)


def _hcl_string(value: str) -> str:
    if any(ch in value for ch in "\n\r\t") or "${" in value or "%{" in value:
        raise PrerequisiteError(f"provider mirror path cannot be used in a CLI config: {value!r}")
    return json.dumps(value)


def cli_config_text(mirror: Path) -> str:
    """The project's terraform CLI config: providers from ``mirror`` only, no checkpoint."""
    return (
        "# Terraform CLI configuration for kafkanet. Generated by generator/terraform/tfcli.py;\n"
        "# do not edit. Providers come only from the local filesystem mirror: this\n"
        "# machine has no internet, and nothing may be downloaded.\n"
        "disable_checkpoint = true\n"
        "\n"
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f"    path    = {_hcl_string(str(mirror))}\n"
        f'    include = ["{PROVIDER_HOST}/{PROVIDER_NAMESPACE}/*"]\n'
        "  }\n"
        "  direct {\n"
        f'    exclude = ["{PROVIDER_HOST}/*/*"]\n'
        "  }\n"
        "}\n"
    )


def write_cli_config(path: Path | str, mirror: Path | None = None) -> Path | None:
    """With a provider mirror, write the CLI config to ``path`` (atomically, only if it changed) and return it.

    ``mirror`` defaults to :func:`find_mirror`. Point ``TF_CLI_CONFIG_FILE`` at
    the returned path (the terraform adapter does). Without a mirror, return
    None and write nothing: terraform keeps its own configuration and installs
    the provider from the registry (a config of ours left at ``path`` by an
    earlier run is removed, so nothing points at a mirror that is gone).
    """
    target = Path(path)
    mirror = find_mirror() if mirror is None else mirror
    if mirror is None:
        target.unlink(missing_ok=True)
        return None
    text = cli_config_text(mirror)
    try:
        if target.read_text(encoding="utf-8") == text:
            return target
    except FileNotFoundError:
        pass
    write_atomic(target, text)
    return target
