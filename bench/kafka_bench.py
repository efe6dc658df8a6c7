#!/usr/bin/env python3
"""Kafka produce throughput of an applied environment: through the bastion vs from inside the VPC, per client.

Through the bastion, two ways (what `kafkanet tunnel` offers):
  * SOCKS5: kafka-python on this machine via kafkanet's SOCKS5 server over the session's SSH
    connection to the bastion (what the integration suite and `kafkanet tunnel` use);
  * --vpn: `kafkanet tunnel --vpn`'s sshuttle (generator.access.vpn, the same code), with
    confluent-kafka (librdkafka, which cannot use SOCKS5) and, to tell the transport from the
    client, kafka-python too; on the local target the client runs in the operator namespace.
Inside the VPC (local target only): the same producers run inside the bastion's network
namespace, talking to the broker directly.

Records are the suite's realistic bike-station-status rows; acks=all, linger 5 ms, otherwise
each client's defaults; one broker, one partition (tansu keeps a store per broker). Each
figure is the median of --repeat runs (every run printed). --vpn needs root (sshuttle's rules).

Usage: .venv/bin/python bench/kafka_bench.py build/<env>/.kafkanet/inventory.json [-n 5000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.access import vpn  # noqa: E402
from generator.access.ssh import Bastion  # noqa: E402
from integration.records import records  # noqa: E402

TOPIC = "kafkanet-bench"
CLIENTS = ("kafka-python", "confluent-kafka")


def _result(count: int, size: int, seconds: float) -> dict:
    return {"records": count, "bytes": size, "seconds": seconds,
            "records_per_s": count / seconds, "kib_per_s": size / 1024 / seconds}  # fmt: skip


def produce_kafka_python(bootstrap: str, count: int, proxy_url: str | None) -> dict:
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
    return _result(count, sum(len(r.value) for r in rows), seconds)


def produce_confluent(bootstrap: str, count: int) -> dict:
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    common = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 15000}
    admin = AdminClient(common)
    for future in admin.create_topics([NewTopic(TOPIC, 1, 1)]).values():
        try:
            future.result(15)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    del admin
    rows = records(count)
    failed: list = []
    producer = Producer({**common, "acks": "all", "linger.ms": 5, "message.timeout.ms": 60000})
    start = time.perf_counter()
    for r in rows:
        while True:
            try:
                producer.produce(TOPIC, key=r.key, value=r.value,
                                 on_delivery=lambda err, msg: failed.append(err) if err else None)  # fmt: skip
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - start
    if left or failed:
        raise SystemExit(f"confluent-kafka: {left} record(s) undelivered, {len(failed)} failed: {failed[:3]}")
    return _result(count, sum(len(r.value) for r in rows), seconds)


def produce(client: str, bootstrap: str, count: int, proxy_url: str | None = None) -> dict:
    if client == "confluent-kafka":
        return produce_confluent(bootstrap, count)
    return produce_kafka_python(bootstrap, count, proxy_url)


def elsewhere(prefix: list[str], client: str, bootstrap: str, count: int, inventory: str) -> dict:
    """One run of this script's producer under ``prefix`` (``ip netns exec NS``, or nothing)."""
    out = subprocess.run(
        [*prefix, sys.executable, __file__, inventory, "-n", str(count), "--inside", "--client", client,
         "--bootstrap", bootstrap],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{client} under {' '.join(prefix) or 'this namespace'}: exit {out.returncode}: "
                         f"{out.stderr.strip()[-600:]}")  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(label: str, runs: list[dict], note: str = "") -> str:
    median = statistics.median(r["records_per_s"] for r in runs)
    kib = statistics.median(r["kib_per_s"] for r in runs)
    each = " ".join(f"{r['records_per_s']:.0f}" for r in runs)
    return (f"{label:<54}: {runs[0]['records']} records, median {median:7.0f} records/s, {kib:6.0f} KiB/s "
            f"(runs: {each}){note}")  # fmt: skip


def vpn_plan(inv: dict, inventory_path: Path) -> vpn.VpnPlan:
    build = inventory_path.resolve().parent.parent  # build/<env>/.kafkanet/inventory.json
    netns = None
    if inv["target"] == "local":
        netns = vpn.operator_netns(build / ".kafkanet" / "plane" / "plane.json", inv["environment"])
    ssh_config = vpn.require_ssh_config(build / "ssh_config", inv["environment"])
    return vpn.plan(inv, ssh_config, vpn.find_sshuttle(), netns, verbose=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inventory")
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # the in-namespace half
    parser.add_argument("--client", choices=CLIENTS, default="kafka-python", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        print(json.dumps(produce(args.client, args.bootstrap, args.n)))
        return
    inventory_path = Path(args.inventory)
    inv = json.loads(inventory_path.read_text())
    broker = inv["brokers"][0]
    bootstrap = f"{broker['private_ip']}:{inv['kafka']['port']}"
    print(f"{inv['environment']} ({inv['target']}): produce to {bootstrap}, acks=all, {args.n} records per run, "
          f"{args.repeat} run(s) per figure")  # fmt: skip

    with Bastion.from_inventory(inv) as bastion:
        socks = bastion.socks5()
        runs = [produce_kafka_python(bootstrap, args.n, socks.url_remote_dns) for _ in range(args.repeat)]
    print(line("through the bastion, SOCKS5: kafka-python", runs), flush=True)

    if os.geteuid() != 0:
        print("through the bastion, --vpn" + " " * 28 + ": needs root (sshuttle's firewall rules); not run")
    else:
        plan = vpn_plan(inv, inventory_path)
        vpn.preflight(plan, inv["target"])
        tunnel = vpn.Tunnel.start(plan, lambda _line: None)
        try:
            started = time.perf_counter()
            tunnel.wait_ready()
            print(f"  (sshuttle up in {time.perf_counter() - started:.1f} s; clients "
                  f"{'in ' + plan.netns if plan.netns else 'on this machine'})", flush=True)  # fmt: skip
            for client in ("confluent-kafka", "kafka-python"):
                runs = [elsewhere(plan.client_prefix(), client, bootstrap, args.n, args.inventory)
                        for _ in range(args.repeat)]  # fmt: skip
                print(line(f"through the bastion, --vpn (sshuttle): {client}", runs), flush=True)
        finally:
            tunnel.stop()

    if inv["target"] != "local":
        print("inside the VPC" + " " * 40 + ": local target only (this bench runs no code on AWS "
              "instances)")  # fmt: skip
        return
    ns = f"kn_{inv['environment']}_nat"  # the bastion instance's namespace in the local plane
    for client in ("confluent-kafka", "kafka-python"):
        runs = [elsewhere(["ip", "netns", "exec", ns], client, bootstrap, args.n, args.inventory)
                for _ in range(args.repeat)]  # fmt: skip
        print(line(f"inside the VPC: {client}", runs, " (from the bastion's namespace)"), flush=True)


if __name__ == "__main__":
    main()
