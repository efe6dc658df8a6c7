"""Produce one bike-station record to a broker and read it back; print what came back as JSON.

Run inside a namespace of the plane (the bastion's), e.g.
``ip netns exec kn_<env>_nat python kafka_roundtrip.py 10.0.1.10:9092 ST-4``.
Every client call is bounded; exit 1 with a one-line reason on failure.
"""

from __future__ import annotations

import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

TOPIC = "bike-station-status"
BOUND_MS = 10_000


def station_row(station_id: str) -> dict[str, str]:
    """A row shaped like Seoul's bikeList API answer (values are strings), plus a poll timestamp."""
    return {
        "rackTotCnt": "15",
        "stationName": "102. 망원역 1번출구 앞",
        "parkingBikeTotCnt": "8",
        "shared": "53",
        "stationLatitude": "37.55564880",
        "stationLongitude": "126.91062927",
        "stationId": station_id,
        "pollTimestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(bootstrap: str, station_id: str) -> None:
    common = {"bootstrap_servers": bootstrap, "request_timeout_ms": BOUND_MS}
    admin = KafkaAdminClient(**common)
    try:
        admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    record = station_row(station_id)
    producer = KafkaProducer(**common, acks="all", max_block_ms=BOUND_MS)
    value = json.dumps(record, ensure_ascii=False).encode()
    sent = producer.send(TOPIC, key=record["stationId"].encode(), value=value).get(timeout=BOUND_MS / 1000)
    producer.close(timeout=5)
    consumer = KafkaConsumer(**common, enable_auto_commit=False, consumer_timeout_ms=BOUND_MS)
    partition = TopicPartition(TOPIC, sent.partition)
    consumer.assign([partition])
    consumer.seek(partition, sent.offset)
    for message in consumer:
        if message.offset == sent.offset:
            print(
                json.dumps(
                    {"key": message.key.decode(), "value": json.loads(message.value), "offset": message.offset},
                    ensure_ascii=False,
                )
            )
            consumer.close()
            return
    consumer.close()
    sys.exit(f"record {station_id} at offset {sent.offset} not read back from {bootstrap} within {BOUND_MS} ms")


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except KafkaError as exc:
        sys.exit(f"kafka error against {sys.argv[1]}: {exc!r}")
