#!/usr/bin/env python3
"""Kafka produce throughput of an applied environment: through the bastion vs from inside the VPC.

Through the bastion: kafka-python on this machine, via kafkanet's SOCKS5 server over the
session's SSH connection to the bastion (what the integration suite and `kafkanet tunnel`
use). Inside the VPC (local target only): the same producer run inside the bastion's
network namespace, talking to the broker directly. Records are the suite's realistic
bike-station-status rows; acks=all; one broker (tansu keeps a store per broker).

Usage: .venv/bin/python bench/kafka_bench.py build/<env>/.kafkanet/inventory.json [-n 5000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.access.ssh import Bastion  # noqa: E402
from integration.records import records  # noqa: E402

TOPIC = "kafkanet-bench"


def produce(bootstrap: str, count: int, proxy_url: str | None) -> dict:
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    common = {"bootstrap_servers": bootstrap, "request_timeout_ms": 15000}
    if proxy_url:
        common["proxy_url"] = proxy_url
    admin = KafkaAdminClient(**common)
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    rows = records(count)
    producer = KafkaProducer(acks="all", linger_ms=5, max_block_ms=15000, **common)
    start = time.perf_counter()
    for r in rows:
        producer.send(TOPIC, key=r.key, value=r.value)
    producer.flush(timeout=120)
    seconds = time.perf_counter() - start
    producer.close(timeout=10)
    size = sum(len(r.value) for r in rows)
    return {"records": count, "bytes": size, "seconds": seconds,
            "records_per_s": count / seconds, "kib_per_s": size / 1024 / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("inventory")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # the in-namespace half
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(produce(args.bootstrap, args.n, None)))
        return
    inv = json.loads(Path(args.inventory).read_text())
    broker = inv["brokers"][0]
    bootstrap = f"{broker['private_ip']}:{inv['kafka']['port']}"
    with Bastion.from_inventory(inv) as bastion:
        socks = bastion.socks5()
        through = produce(bootstrap, args.n, socks.url_remote_dns)
    print(f"through the bastion : {through['records']} records in {through['seconds']:.2f} s = "
          f"{through['records_per_s']:.0f} records/s, {through['kib_per_s']:.0f} KiB/s")
    if inv["target"] != "local":
        print("inside the VPC      : local target only (this bench runs no code on AWS instances)")
        return
    ns = f"kn_{inv['environment']}_nat"  # the bastion instance's namespace in the local plane
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, __file__, args.inventory, "-n", str(args.n),
         "--inside", "--bootstrap", bootstrap],
        capture_output=True, text=True, timeout=300, check=True,
    )
    inside = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"inside the VPC      : {inside['records']} records in {inside['seconds']:.2f} s = "
          f"{inside['records_per_s']:.0f} records/s, {inside['kib_per_s']:.0f} KiB/s (from the bastion's namespace)")


if __name__ == "__main__":
    main()
