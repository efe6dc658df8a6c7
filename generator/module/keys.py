"""The environment's SSH key: generated once per build directory unless the spec brings one.

The private key stays on the operator's machine (mode 0600) and never appears
in Terraform, state or user data; only the public half is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_DIR = ".kafkanet/ssh"
KEY_NAME = "id_ed25519"


def key_paths(out_dir: Path) -> tuple[Path, Path]:
    private = out_dir / KEY_DIR / KEY_NAME
    return private, private.with_suffix(".pub")


def ensure_key(out_dir: Path, comment: str) -> tuple[Path, str]:
    """Return (private key path, public key text), creating the pair if missing."""
    private, public = key_paths(out_dir)
    if private.is_file() and public.is_file():
        return private, public.read_text().strip()
    private.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(private.parent, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    text = f"{pub.decode()} {comment}"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_text(text + "\n")
    return private, text
