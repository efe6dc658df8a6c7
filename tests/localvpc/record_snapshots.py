"""Re-record the describe_* snapshots in fixtures/ from a throw-away moto server.

    .venv/bin/python tests/localvpc/record_snapshots.py

Runs moto in-process on 127.0.0.1, creates the reference topology
(localvpc.reference) and saves what localvpc.snapshot.collect reads. Resource
ids are random, so a re-recording changes them; the tests never hard-code ids.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from generator.localaws import moto_server  # noqa: E402
from localvpc import reference, snapshot  # noqa: E402

FIXTURES = Path(__file__).with_name("fixtures")
# A fixed, throw-away key: only its public half is recorded (as the key pair).
FIXTURE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def record(variant: bool) -> dict:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        # moto's backends are per process: forget the previous recording.
        urllib.request.urlopen(
            urllib.request.Request(f"http://{host}:{port}/moto-api/reset", data=b"", method="POST"), timeout=10
        )
        ec2 = moto_server.ec2_client(f"http://{host}:{port}", "ap-northeast-2")
        public = FIXTURE_KEY.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        reference.create(ec2, "ttareungyi", variant=variant, public_key=public.decode() + " fixture")
        return snapshot.collect(ec2, "ttareungyi")
    finally:
        server.stop()


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    for variant, name in ((False, "ttareungyi.json"), (True, "ttareungyi-variant.json")):
        snapshot.save(record(variant), FIXTURES / name)
        print(f"wrote {FIXTURES / name}")


if __name__ == "__main__":
    main()
