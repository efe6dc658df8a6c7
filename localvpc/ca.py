"""The plane's certificate authority: per environment, trusted only inside its instances.

At build, :func:`create` makes a CA (EC P-256, valid for :data:`VALIDITY`) and
one server certificate for the names the API relay answers (the regional EC2
endpoint), under the plane's runtime directory (``/run/kn_E/ca/``, removed on
teardown). :func:`bundle_mounts` writes, for every CA bundle an instance's
tools read (the system bundle that curl, OpenSSL and Debian's certifi and AWS
CLI use; the certifi bundle of the Python that runs the plane), a copy with
the CA appended, and returns the ``(copy, original)`` pairs that each
instance's private mount namespace binds over the originals (see
:func:`localvpc.procs.in_netns`). The root mount namespace never sees them:
this machine trusts nothing new.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = _dt.timedelta(days=30)
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class CaFiles:
    ca_cert: Path  # PEM of the CA certificate (what instances trust)
    server_cert: Path  # the relay's certificate chain (server, then CA)
    server_key: Path  # its private key (0600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def create(folder: Path, env: str, names: list[str]) -> CaFiles:
    """A fresh CA for ``env`` and a server certificate for ``names`` (DNS names), written under ``folder``."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)  # tolerate small clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kafkanet local data plane"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"kafkanet {env} local CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CaFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files.ca_cert.write_bytes(ca_pem)
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    _write_private(files.server_key, _key_pem(key))
    return files


def bundle_paths() -> list[Path]:
    """The CA bundle files (resolved, existing, no whitespace in the path) that an instance's tools read."""
    candidates = [SYSTEM_BUNDLE]
    try:
        import certifi

        candidates.append(Path(certifi.where()))
    except ImportError:
        pass
    found: list[Path] = []
    for path in candidates:
        real = Path(os.path.realpath(path))
        if real.is_file() and not any(c.isspace() for c in str(real)) and real not in found:
            found.append(real)
    return found


def bundle_mounts(folder: Path, ca_cert: Path) -> list[tuple[Path, Path]]:
    """``(combined copy, original)`` for every bundle of :func:`bundle_paths`; the copies live in ``folder``."""
    folder.mkdir(mode=0o755, parents=True, exist_ok=True)
    ca_pem = ca_cert.read_bytes()
    pairs = []
    for i, original in enumerate(bundle_paths()):
        text = original.read_bytes()
        combined = folder / f"bundle-{i}.pem"
        separator = b"" if text.endswith(b"\n") else b"\n"
        combined.write_bytes(text + separator + b"# kafkanet local data plane CA\n" + ca_pem)
        combined.chmod(0o644)
        pairs.append((combined, original))
    return pairs
