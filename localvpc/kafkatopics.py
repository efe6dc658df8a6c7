"""Create topics on one broker, as broker 1's boot does on AWS; run by the plane inside a broker's namespace.

    python -I kafkatopics.py HOST:PORT '[{"name": "t", "partitions": 3, "replication_factor": 3}, ...]'

Runs by path in an isolated interpreter (like webhost.py), so it imports only
the standard library and kafka-python. The client bootstraps at HOST:PORT and
then follows what the broker advertises, as ``kafka-topics.sh`` does on AWS: a
broker that advertises an address nobody answers fails here too. A topic that
exists already is left as it is (``--if-not-exists``). Every call is bounded;
prints one line per topic, or exits 1 with a one-line reason.
"""

from __future__ import annotations

import json
import sys

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

BOUND_MS = 5000


def main(bootstrap: str, wanted: list[dict]) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="kafkanet-plane",
        request_timeout_ms=BOUND_MS,
        bootstrap_timeout_ms=2 * BOUND_MS,
        reconnect_backoff_max_ms=1000,
    )
    try:
        existing = set(admin.list_topics())
        new = {
            t["name"]: {"num_partitions": t["partitions"], "replication_factor": t["replication_factor"]}
            for t in wanted
            if t["name"] not in existing
        }
        if new:
            admin.create_topics(new, timeout_ms=BOUND_MS)
    finally:
        admin.close()
    for t in wanted:
        state = "exists already" if t["name"] in existing else "created"
        print(f"{t['name']}: {state} ({t['partitions']} partitions) at {bootstrap}")


if __name__ == "__main__":
    try:
        main(sys.argv[1], json.loads(sys.argv[2]))
    except (KafkaError, OSError) as exc:
        sys.exit(f"kafka error against {sys.argv[1]}: {exc!r}")
