"""The local Kafka stand-in from each broker's own configuration: localvpc.kafkaconf and the translation (no root).

The brokers' user data is the one the generator renders for the seed (and other
specs), put into the recorded snapshot where moto would hold it; nothing here
reads the spec to decide what a broker runs.
"""

from __future__ import annotations

import base64
import functools
import json

import pytest
import yaml

from generator.module.generate import render_for
from generator.module.loaded import load
from localvpc import kafkaconf, userdata
from localvpc.errors import PlaneUserError
from localvpc.model import Topic
from localvpc.translation import translate
from tests.conftest import SEED, SPECS

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P test"
BROKERS = ("broker-1", "broker-2", "broker-3")


@functools.cache
def _rendered(spec=SEED) -> dict[str, str]:
    return render_for(load(spec), KEY)


def _put_user_data(snap: dict, name: str, text: str) -> None:
    """Give instance ``ttareungyi-<name>`` of the snapshot ``text`` as its user data, as moto returns it."""
    inst = next(
        i for r in snap["reservations"] for i in r["Instances"] if {"Key": "Name", "Value": f"ttareungyi-{name}"} in i["Tags"]
    )
    snap["instance_attributes"][inst["InstanceId"]]["userData"] = base64.b64encode(text.encode()).decode()


def _with_file(user_data: str, path: str, content: str | None) -> str:
    """Cloud-config ``user_data`` with the write_files entry at ``path`` given ``content`` (None: removed)."""
    cloud = yaml.safe_load(user_data)
    entries = [e for e in cloud["write_files"] if e["path"] != path]
    cloud["write_files"] = entries + ([{"path": path, "content": content}] if content is not None else [])
    return "#cloud-config\n" + yaml.safe_dump(cloud)


def _seeded(snap: dict, edit=None) -> dict:
    """The snapshot with every broker's user data rendered from the seed; ``edit(name, props) -> props`` first."""
    for name in BROKERS:
        text = _rendered()[f"user-data/{name}.yaml"]
        if edit is not None:
            props = userdata.write_files(text)[kafkaconf.SERVER_PROPERTIES]
            text = _with_file(text, kafkaconf.SERVER_PROPERTIES, edit(name, props))
        _put_user_data(snap, name, text)
    return snap


def _replace(key: str, value: str | None, only: str = "broker-2", **more: str | None):
    """An edit of server.properties that sets (or with None removes) ``key`` on broker ``only``.

    ``more``: further keys to set, ``_`` for ``.`` in their names.
    """
    wanted = {key: value, **{k.replace("_", "."): v for k, v in more.items()}}

    def edit(name: str, props: str) -> str:
        if name != only:
            return props
        lines = [line for line in props.splitlines() if line.partition("=")[0] not in wanted]
        return "\n".join(lines + [f"{k}={v}" for k, v in wanted.items() if v is not None]) + "\n"

    return edit


# --- the Java properties format ------------------------------------------------


def test_properties_comments_separators_and_continuations():
    text = (
        "# a comment\n"
        "! another, ending in a backslash that continues nothing \\\n"
        "   \n"
        "plain=one\n"
        "  colon : two\n"
        "space\tthree\n"
        "joined = a,\\\n"
        "         b,\\\n"
        "    c\n"
        "empty=\n"
        "bare\n"
        "key\\=with\\:separators = x=y:z\n"
        "even=ends in a backslash\\\\\n"
        "unicode=\\u0041\\t!\n"
        "plain=last wins\r\n"
        "crlf=yes\r"
        "cr=also"
    )
    assert kafkaconf.parse_properties(text) == {
        "plain": "last wins",
        "colon": "two",
        "space": "three",
        "joined": "a,b,c",
        "empty": "",
        "bare": "",
        "key=with:separators": "x=y:z",
        "even": "ends in a backslash\\",
        "unicode": "A\t!",
        "crlf": "yes",
        "cr": "also",
    }


def test_properties_a_continuation_is_not_a_comment_and_an_empty_line_is_nothing():
    assert kafkaconf.parse_properties("a=1,\\\n  # not a comment\n") == {"a": "1,# not a comment"}
    assert kafkaconf.parse_properties("\\\n   \n\\") == {}


def test_properties_malformed_unicode_escape_is_refused():
    with pytest.raises(ValueError, match="line 2"):
        kafkaconf.parse_properties("ok=1\nbad=\\u12g4\n")


# --- the seed's rendered user data -----------------------------------------------


@pytest.mark.parametrize("name,ip", [("broker-1", "10.0.1.10"), ("broker-2", "10.0.2.10"), ("broker-3", "10.0.3.10")])
def test_seed_user_data_gives_the_tansu_command_line(snap, name, ip):
    host = translate(_seeded(snap)).host(name)
    assert host.kafka is not None and host.kafka_port == 9092
    argv = kafkaconf.tansu_argv("/bin/tansu", host.kafka, "kafkanet-ttareungyi")
    assert argv == [
        "/bin/tansu", "broker",
        "--listener-url", f"tcp://{ip}:9092",
        "--advertised-listener-url", f"tcp://{ip}:9092",
        "--storage-engine", "memory://tansu/",
        "--cluster-id", "kafkanet-ttareungyi",
    ]  # fmt: skip


def test_seed_settings_tansu_cannot_honour_are_accepted_and_listed(snap):
    kafka = translate(_seeded(snap)).host("broker-1").kafka
    assert set(kafka.unhonoured) == {
        "process.roles", "node.id", "controller.quorum.voters", "listener.security.protocol.map",
        "controller.listener.names", "inter.broker.listener.name", "log.dirs", "num.partitions",
        "default.replication.factor", "min.insync.replicas", "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
        "auto.create.topics.enable", "log.retention.hours",
    }  # fmt: skip


def test_the_port_comes_from_server_properties_not_a_tag(snap):
    p = translate(_seeded(snap, _replace("listeners", "PLAINTEXT://10.0.2.10:19092,CONTROLLER://10.0.2.10:9093")))
    assert p.host("broker-2").kafka_port == 19092
    assert p.host("broker-2").kafka.listener_url == "tcp://10.0.2.10:19092"
    assert p.host("broker-2").kafka.advertised_url == "tcp://10.0.2.10:9092"  # advertised.listeners says so
    assert p.host("broker-1").kafka_port == 9092


def test_a_broker_with_a_listener_only_and_no_controller(snap):
    """team-state's broker-4 is no voter: one listener, no CONTROLLER entry."""
    text = _rendered(SPECS / "team-state.yaml")["user-data/broker-4.yaml"]
    kafka = kafkaconf.broker("broker-4", "10.42.0.11", userdata.write_files(text)[kafkaconf.SERVER_PROPERTIES])
    assert (kafka.listener_url, kafka.advertised_url) == ("tcp://10.42.0.11:9092", "tcp://10.42.0.11:9092")


def test_an_unreachable_advertised_address_is_what_tansu_advertises(snap):
    p = translate(_seeded(snap, _replace("advertised.listeners", "PLAINTEXT://10.0.9.99:9092")))
    kafka = p.host("broker-2").kafka
    assert kafka.listener_url == "tcp://10.0.2.10:9092"
    assert kafka.advertised_url == "tcp://10.0.9.99:9092"


def test_all_interfaces_or_none_binds_everywhere(snap):
    for listeners in ("PLAINTEXT://0.0.0.0:9092,CONTROLLER://10.0.2.10:9093", "PLAINTEXT://:9092"):
        p = translate(_seeded(snap, _replace("listeners", listeners)))
        assert p.host("broker-2").kafka.listener_url == "tcp://0.0.0.0:9092"


# --- what tansu cannot honour is an error ------------------------------------------


def test_an_unknown_setting_is_an_error_naming_broker_and_key(snap):
    with pytest.raises(PlaneUserError) as caught:
        translate(_seeded(snap, _replace("num.io.threads", "8")))
    message = str(caught.value)
    assert "broker-2" in message and "num.io.threads" in message
    assert "UNHONOURED in localvpc/kafkaconf.py" in message  # what to do


@pytest.mark.parametrize(
    "edit",
    [
        _replace("listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:SSL"),
        _replace("listener.security.protocol.map", "CONTROLLER:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT"),
        # no map: Kafka's default maps SSL to SSL
        _replace("listeners", "SSL://10.0.2.10:9094,CONTROLLER://10.0.2.10:9093", listener_security_protocol_map=None),
    ],
    ids=["map-ssl", "map-sasl-controller", "default-map-ssl"],
)
def test_a_listener_that_is_not_plaintext_is_an_error(snap, edit):
    with pytest.raises(PlaneUserError, match=r"broker-2: .*listener.* uses (SSL|SASL_PLAINTEXT).*PLAINTEXT only"):
        translate(_seeded(snap, edit))


@pytest.mark.parametrize(
    "key,value,says",
    [
        ("advertised.listeners", "PLAINTEXT://broker-2.internal:9092", "advertised.listeners: .*no DNS"),
        ("advertised.listeners", "PLAINTEXT://0.0.0.0:9092", "advertised.listeners: .*meta-address"),
        ("listeners", "PLAINTEXT://10.0.3.10:9092,CONTROLLER://10.0.2.10:9093",
         "listeners: 10.0.3.10:9092 is not an address of this instance"),
        ("listeners", "PLAINTEXT://10.0.2.10:9092,CONTROLLER://10.0.2.10:9093,INTERNAL://10.0.2.10:9094",
         "listeners: listener INTERNAL is not in listener.security.protocol.map"),
        ("controller.listener.names", "", "listeners: tansu serves exactly one client listener"),
        ("listeners", "PLAINTEXT://10.0.2.10:99999", "listeners: .*NAME://HOST:PORT"),
        ("inter.broker.listener.name", "CONTROLLER", "inter.broker.listener.name: .*not the client listener"),
    ],
)  # fmt: skip
def test_a_listener_tansu_cannot_serve_is_an_error(snap, key, value, says):
    with pytest.raises(PlaneUserError, match=f"broker-2: /etc/kafka/server.properties: {says}"):
        translate(_seeded(snap, _replace(key, value)))


def test_a_broker_without_server_properties_is_an_error(snap):
    _seeded(snap)
    _put_user_data(snap, "broker-3", "#cloud-config\nruncmd: [[true]]\n")
    with pytest.raises(PlaneUserError, match=r"broker-3: tagged kafkanet:role=broker but has no /etc/kafka"):
        translate(snap)


def test_a_host_not_tagged_broker_runs_kafka_only_if_its_user_data_says_so(snap):
    p = translate(_seeded(snap))
    assert p.host("nat").kafka is None and p.host("nat").kafka_port is None
    nat = next(i for r in snap["reservations"] for i in r["Instances"] if i["PrivateIpAddress"] == "10.0.0.10")
    nat["Tags"] = [t for t in nat["Tags"] if t["Key"] != "kafkanet:role"]
    _put_user_data(snap, "nat", _rendered()["user-data/broker-1.yaml"].replace("10.0.1.10", "10.0.0.10"))
    assert translate(snap).host("nat").kafka.listener_url == "tcp://10.0.0.10:9092"


# --- topics ---------------------------------------------------------------------


def _broker_1_topics(snap: dict, listed: str | None) -> dict:
    _seeded(snap)
    _put_user_data(snap, "broker-1", _with_file(_rendered()["user-data/broker-1.yaml"], kafkaconf.TOPICS_PATH, listed))
    return snap


def test_topics_come_from_broker_1s_user_data(snap):
    assert translate(_seeded(snap)).topics == (Topic("bike-station-status", 3, 3),)
    listed = '[{"name": "bike-station-status", "partitions": 5, "replication_factor": 3}]'
    assert translate(_broker_1_topics(snap, listed)).topics == (Topic("bike-station-status", 5, 3),)  # not the spec's


def test_no_topics_file_no_topics(snap):
    assert translate(_broker_1_topics(snap, None)).topics == ()


@pytest.mark.parametrize(
    "listed",
    ['{"name": "t"}', '[{"name": "t", "partitions": 0, "replication_factor": 1}]',
     '[{"name": "t", "partitions": 1, "replication_factor": 1, "configs": {}}]', "[oops"],
)  # fmt: skip
def test_a_malformed_topics_file_is_an_error(snap, listed):
    with pytest.raises(PlaneUserError, match=f"broker-1: {kafkaconf.TOPICS_PATH}"):
        translate(_broker_1_topics(snap, listed))


def test_two_topic_lists_that_disagree_keep_the_first_and_say_so(snap):
    _seeded(snap)
    listed = '[{"name": "bike-station-status", "partitions": 7, "replication_factor": 3}]'
    _put_user_data(snap, "broker-3", _with_file(_rendered()["user-data/broker-3.yaml"], kafkaconf.TOPICS_PATH, listed))
    p = translate(snap)
    assert p.topics == (Topic("bike-station-status", 3, 3),)
    assert any("broker-3" in note and "bike-station-status" in note for note in p.notes)


def test_every_spec_topic_is_listed_for_the_plane():
    """The JSON the plane reads is the spec's topics, replication factor defaulted as the topology does."""
    for spec in (SEED, SPECS / "virginia-five.yaml"):
        files = userdata.write_files(_rendered(spec)["user-data/broker-1.yaml"])
        topo_topics = load(spec).topology.topics
        assert json.loads(files[kafkaconf.TOPICS_PATH]) == [
            {"name": t.name, "partitions": t.partitions, "replication_factor": t.replication_factor} for t in topo_topics
        ]
