"""A confluent-kafka (librdkafka) round trip, run where the client should be: ``python -m tests.vpn_roundtrip``.

test_vpn_live.py runs it inside the operator namespace while `kafkanet tunnel --vpn` is up:
a producer sends N realistic bike-station-status records with acks=all to a new topic, a
consumer in a group of its own reads them back; one JSON line says what happened.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from integration.records import records


def round_trip(bootstrap: str, count: int, partitions: int, assign: bool, budget: float) -> dict:
    topic = f"vpn-{uuid.uuid4().hex[:12]}"
    common = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000}
    admin = AdminClient(common)  # held until the futures are done: a collected client cancels them
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(15)
    del admin
    rows = records(count)
    failed: list[str] = []

    def delivered(err, msg) -> None:
        if err is not None:
            failed.append(str(err))

    producer = Producer({**common, "acks": "all", "linger.ms": 5, "message.timeout.ms": 30000})
    start = time.perf_counter()
    for row in rows:
        producer.produce(topic, key=row.key, value=row.value, on_delivery=delivered)
        producer.poll(0)
    undelivered = producer.flush(60)
    produce_s = time.perf_counter() - start
    consumer = Consumer({**common, "group.id": f"{topic}-reader", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})  # fmt: skip
    if assign:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    else:
        consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    errors: list[str] = []
    deadline = time.monotonic() + budget
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                errors.append(str(msg.error()))
                continue
            got.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    sent = {(r.key, r.value) for r in rows}
    return {"topic": topic, "produced": count, "undelivered": undelivered, "delivery_errors": failed[:5],
            "consumed": len(got), "same_records": set(got) == sent and len(got) == count,
            "consume_errors": errors[:5], "produce_seconds": produce_s,
            "group": not assign}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bootstrap")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--assign", action="store_true", help="assign() the partitions instead of a consumer group")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds the consumer may take")
    args = parser.parse_args()
    try:
        print(json.dumps(round_trip(args.bootstrap, args.n, args.partitions, args.assign, args.budget)))
    except KafkaException as exc:
        print(json.dumps({"error": str(exc)}))


if __name__ == "__main__":
    main()
