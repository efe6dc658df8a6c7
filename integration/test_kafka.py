"""Kafka through the bastion: kafka-python on the operator's side, every connection a SOCKS5 channel.

The suite never creates a topic: apply does (broker 1's boot on AWS, the data
plane on every local broker), and the topic checks compare what is there with
the inventory's topics. The produce/consume check sends N bike-station-status
records (keyed by station id, acks=all) and reads every one back intact, in a
fresh consumer group. Each broker then gets its own round trip: on tansu every
broker reports node id 111 and keeps its own store, so each is bootstrapped
alone; on Apache Kafka the record goes to a partition that broker leads. Checks that
only make sense on a real cluster are marked ``real_kafka``.
"""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient

from integration import support
from integration.kafkacheck import bootstrap_of, closing, cluster_label, existing_topic
from integration.support import expect, expect_equal, is_tansu

# --- topics ------------------------------------------------------------------------------------


@pytest.mark.host("kafka cluster")
def test_topic_exists(topic, kafka_config, inventory):
    bootstrap = bootstrap_of(inventory)
    label = cluster_label(inventory, bootstrap)
    described = existing_topic(kafka_config, bootstrap, topic, label)
    expect_equal(len(described["partitions"]), int(topic["partitions"]), label, f"topic {topic['name']} partitions",
                 "the inventory's")  # fmt: skip
    if not is_tansu(inventory):  # tansu keeps one copy whatever the replication factor says
        factors = sorted({len(p["replica_nodes"]) for p in described["partitions"]})
        expect_equal(factors, [int(topic["replication_factor"])], label,
                     f"topic {topic['name']} replication factor (replicas per partition)", "the inventory's")  # fmt: skip


# --- produce N, consume N -------------------------------------------------------------------------


@pytest.mark.host("kafka cluster")
def test_produce_and_consume_all_records(kafka_runs, kafka_stats, request):
    stats = kafka_runs.produce.result()  # started with the session (conftest); re-raises its failure whole
    kafka_stats.update(stats)
    # a JUnit property for the nightly job (the record_property fixture warns under xunit2)
    request.node.user_properties.append(("produce_records_per_second", round(stats["records"] / stats["seconds"], 1)))


# --- every broker ---------------------------------------------------------------------------------


def test_broker_round_trip(broker, kafka_runs):
    kafka_runs.round_trips[broker["name"]].result()  # started with the session; re-raises its failure whole


# --- real Kafka only ---------------------------------------------------------------------------------


@pytest.mark.real_kafka
@pytest.mark.host("kafka cluster")
def test_all_brokers_in_cluster_metadata(kafka_config, inventory):
    bootstrap = inventory["kafka"]["bootstrap_servers"]
    with closing(KafkaAdminClient(bootstrap_servers=bootstrap, **kafka_config)) as admin:
        seen = {b["broker_id"]: b["host"] for b in admin.describe_cluster()["brokers"]}
    label = cluster_label(inventory, bootstrap)
    expected = {int(b["node_id"]): b for b in inventory["brokers"]}
    expect_equal(sorted(seen), sorted(expected), label, "broker node ids in the cluster metadata", "the inventory's")
    wrong = [
        f"node {node}: {seen[node]} (expected {expected[node]['name']} at {expected[node]['private_ip']})"
        for node in expected
        if seen.get(node) not in support.broker_names(inventory, expected[node])
    ]
    expect(not wrong, label, "broker addresses in the cluster metadata", "; ".join(wrong))


@pytest.mark.real_kafka
@pytest.mark.host("kafka cluster")
def test_topic_replication_factor(topic, kafka_config, inventory):
    bootstrap = inventory["kafka"]["bootstrap_servers"]
    label = cluster_label(inventory, bootstrap)
    described = existing_topic(kafka_config, bootstrap, topic, label)
    want = int(topic["replication_factor"])
    wrong = [
        f"partition {p['partition_index']}: replicas {p['replica_nodes']}, in sync {p['isr_nodes']}"
        for p in described["partitions"]
        if len(set(p["replica_nodes"])) != want or set(p["isr_nodes"]) != set(p["replica_nodes"])
    ]
    expect(not wrong, label, f"topic {topic['name']}: {want} distinct replicas, all in sync", "; ".join(wrong))
