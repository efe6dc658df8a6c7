"""Kafka through the bastion: the produce/consume check and each broker's round trip (test_kafka.py).

kafka-python on the operator's side, every connection a SOCKS5 channel. The
two checks that take seconds (a consumer group join, a bootstrap per broker)
are functions here so that the suite can start them in the background when
the session starts (``kafka_runs`` in conftest); each fails through
:mod:`integration.support`, naming the host, the property and what it saw, and
its test raises that failure again.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
)
from kafka.errors import KafkaError

from integration import records, support
from integration.support import expect, expect_equal, fail, is_tansu

PRODUCE_BUDGET_S = 60.0
CONSUME_BUDGET_S = 45.0
#: The consumer's session timeout, per server. Apache Kafka refuses one below its
#: group.min.session.timeout.ms (6000 by default). tansu takes less, and holds a fresh group's
#: join for a time that grows with it (the check's whole run on the seed: 4.5 s at 6000, 3.4 s at
#: 3000); 3000 still gives three 1 s heartbeats per session on a loaded machine.
GROUP_SESSION_TIMEOUT_MS = {"apache-kafka": 6000, "tansu": 3000}


def bootstrap_of(inventory: dict[str, Any]) -> str:
    """All brokers on Apache Kafka; the first broker alone on tansu (no shared store)."""
    if is_tansu(inventory):
        first = inventory["brokers"][0]
        return f"{first['private_ip']}:{inventory['kafka']['port']}"
    return inventory["kafka"]["bootstrap_servers"]


def cluster_label(inventory: dict[str, Any], bootstrap: str) -> str:
    return f"kafka {inventory['kafka'].get('implementation')} (bootstrap {bootstrap} via the bastion)"


@contextlib.contextmanager
def closing(client: Any, **close_args: Any) -> Iterator[Any]:
    try:
        yield client
    finally:
        with contextlib.suppress(KafkaError, OSError):
            client.close(**close_args)


def existing_topic(config: dict[str, Any], bootstrap: str, topic: dict[str, Any], label: str) -> dict[str, Any]:
    """The description of the inventory's ``topic`` as the cluster has it; the test fails if it is missing.

    Listed before it is described, so that no metadata request for a missing
    name can make a broker that auto-creates topics create it.
    """
    __tracebackhide__ = True
    try:
        with closing(KafkaAdminClient(bootstrap_servers=bootstrap, **config)) as admin:
            names = admin.list_topics()
            described = admin.describe_topics([topic["name"]])[0] if topic["name"] in names else None
    except KafkaError as exc:  # e.g. a broker advertising an address the bastion cannot reach
        fail(label, f"topic {topic['name']}: listing and describing the topics", repr(exc))
    expect(described is not None, label, f"topic {topic['name']}",
           f"missing (topics: {sorted(names)}); apply creates the spec's topics, the suite never does")  # fmt: skip
    expect_equal(described.get("error_code"), 0, label, f"topic {topic['name']} description error code")
    return described


def producer(config: dict[str, Any], bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_block_ms=config["request_timeout_ms"],
        delivery_timeout_ms=2 * config["request_timeout_ms"],
        **config,
    )


# --- produce N, consume N -------------------------------------------------------------------------


def produce_and_consume(kafka_config: dict[str, Any], inventory: dict[str, Any], socks: Any, count: int) -> dict[str, Any]:
    """Produce ``count`` records with acks=all and read every one back in a fresh group; fails (pytest)
    naming what it saw. ``socks``: the SOCKS5 server ``kafka_config`` goes through, this check's own.
    Returns the produce's figures (records, bytes, seconds, bootstrap)."""
    __tracebackhide__ = True
    topic = inventory["kafka"]["topics"][0]
    bootstrap = bootstrap_of(inventory)
    label = cluster_label(inventory, bootstrap)
    existing_topic(kafka_config, bootstrap, topic, label)
    sent = records.records(count, seed=count)
    through_socks_before = socks.stats.connections

    started = time.monotonic()
    with closing(producer(kafka_config, bootstrap), timeout=5) as prod:
        futures = [prod.send(topic["name"], key=r.key, value=r.value) for r in sent]
        prod.flush(timeout=PRODUCE_BUDGET_S)
        metas = []
        for i, future in enumerate(futures):
            try:
                metas.append(future.get(timeout=1))
            except KafkaError as exc:
                fail(label, f"produce of record {i} (key {sent[i].key.decode()}) with acks=all", repr(exc))
    seconds = time.monotonic() - started
    size = sum(len(r.key) + len(r.value) for r in sent)
    stats = {"records": count, "bytes": size, "seconds": seconds, "bootstrap": bootstrap}
    expect(socks.stats.connections > through_socks_before, label, "connections through the bastion's SOCKS5 port",
           "none: the clients did not go through the bastion")  # fmt: skip

    wanted = {(m.partition, m.offset): r for m, r in zip(metas, sent)}
    first = {}
    for partition, offset in wanted:
        first[partition] = min(offset, first.get(partition, offset))
    got: dict[tuple[int, int], Any] = {}
    group = f"kafkanet-it-{uuid.uuid4().hex[:12]}"
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=GROUP_SESSION_TIMEOUT_MS.get(support.kafka_implementation(inventory), 6000),
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=int(CONSUME_BUDGET_S * 1000),
        **kafka_config,
    )
    with closing(consumer):
        consumer.subscribe([topic["name"]], listener=_SeekTo(consumer, first))
        deadline = time.monotonic() + CONSUME_BUDGET_S
        while len(got) < len(wanted) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                for message in batch:
                    if (message.partition, message.offset) in wanted:
                        got[(message.partition, message.offset)] = message
    missing = sorted(set(wanted) - set(got))
    expect(
        not missing,
        label,
        f"records read back in group {group} within {CONSUME_BUDGET_S:g} s",
        f"{len(got)} of {count}; first missing (partition, offset): {missing[:5]}",
    )
    damaged = [
        f"p{p}@{o}"
        for (p, o), message in got.items()
        if (message.key, message.value) != (wanted[(p, o)].key, wanted[(p, o)].value)
    ]
    expect(not damaged, label, "records read back byte for byte", f"{len(damaged)} differ: {damaged[:5]}")
    name = records.STATIONS[0][1]
    rows = [wanted[k].row for k in sorted(got)]
    expect(any(r["stationName"] == name for r in rows), label, "Korean station names intact",
           f"{name!r} not among them")  # fmt: skip
    # per key (station), the polls come back in the order they were sent
    order: dict[str, list[str]] = {}
    for (p, o) in sorted(got):
        row = records.Record(got[(p, o)].key, got[(p, o)].value).row
        order.setdefault(row["stationId"], []).append(row["pollTimestamp"])
    out_of_order = [sid for sid, stamps in order.items() if stamps != sorted(stamps)]
    expect(not out_of_order, label, "per-station order of polls", f"out of order for {out_of_order[:5]}")
    return stats


class _SeekTo(ConsumerRebalanceListener):
    """On assignment, start each partition at the first offset this test wrote (the end elsewhere)."""

    def __init__(self, consumer: KafkaConsumer, first: dict[int, int]) -> None:
        self.consumer, self.first = consumer, first

    def on_partitions_revoked(self, revoked) -> None:  # noqa: ARG002 (listener interface)
        return None

    def on_partitions_assigned(self, assigned) -> None:
        for tp in assigned:
            if tp.partition in self.first:
                self.consumer.seek(tp, self.first[tp.partition])
            else:
                self.consumer.seek_to_end(tp)


# --- every broker ---------------------------------------------------------------------------------


def round_trip(broker: dict[str, Any], kafka_config: dict[str, Any], inventory: dict[str, Any]) -> None:
    """One record produced (acks=all) to a partition ``broker`` leads, read back from it intact."""
    __tracebackhide__ = True
    topic = inventory["kafka"]["topics"][0]
    endpoint = f"{broker['private_ip']}:{inventory['kafka']['port']}"
    name = broker["name"]
    described = existing_topic(kafka_config, endpoint, topic, name)
    # on tansu each broker has a store of its own: the topic must be right on each
    expect_equal(len(described["partitions"]), int(topic["partitions"]), name,
                 f"topic {topic['name']} partitions at {endpoint}", "the inventory's")  # fmt: skip
    with closing(KafkaAdminClient(bootstrap_servers=endpoint, **kafka_config)) as admin:
        hosts = {b["broker_id"]: b["host"] for b in admin.describe_cluster()["brokers"]}
    names = support.broker_names(inventory, broker)
    # Apache Kafka: the leader's node id is the broker's; tansu: every broker is node 111 at its own address
    led = [
        p["partition_index"]
        for p in described["partitions"]
        if p["leader_id"] == int(broker["node_id"]) or hosts.get(p["leader_id"]) in names
    ]
    leaders = [f"{p['leader_id']}@{hosts.get(p['leader_id'])}" for p in described["partitions"]]
    expect(led, name, f"partitions of {topic['name']} led by this broker", f"leaders (node@host): {leaders}")
    row = records.station_rows(1, seed=broker["node_id"])[0]
    row["stationId"] = records.STATIONS[broker["node_id"] % len(records.STATIONS)][0]
    record = records.encode(row)
    with closing(producer(kafka_config, endpoint), timeout=5) as prod:
        try:
            meta = prod.send(topic["name"], key=record.key, value=record.value, partition=led[0]).get(timeout=30)
        except KafkaError as exc:
            fail(name, f"produce (acks=all) to {topic['name']}[{led[0]}] at {endpoint}", repr(exc))
    tp = TopicPartition(topic["name"], meta.partition)
    with closing(KafkaConsumer(bootstrap_servers=endpoint, enable_auto_commit=False, consumer_timeout_ms=15_000,
                               **kafka_config)) as consumer:  # fmt: skip
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        deadline = time.monotonic() + 15
        found = None
        while found is None and time.monotonic() < deadline:
            for message in consumer.poll(timeout_ms=1000).get(tp, []):
                if message.offset == meta.offset:
                    found = message
    where = f"{topic['name']}[{meta.partition}]@{meta.offset}"
    expect(found is not None, name, f"record at {where} read back from {endpoint}", "nothing within 15 s")
    expect_equal((found.key, found.value), (record.key, record.value), name, "record read back intact", "what was sent")
