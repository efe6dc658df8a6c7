"""bench/applybench/floor.py: the provider's fixed waits along the longest path of a module's graph."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from applybench.floor import Graph, floor, parse_graph, planned_values  # noqa: E402

# The seed's shape, as `terraform graph` (terraform 1.11) prints it: A -> B means A depends on B.
DOT = """digraph G {
  rankdir = "RL";
  node [shape = rect, fontname = "sans-serif"];
  "aws_vpc.this" [label="aws_vpc.this"];
  "aws_ebs_volume.kafka_data" [label="aws_ebs_volume.kafka_data"];
  "aws_instance.broker" -> "aws_ebs_volume.kafka_data";
  "aws_instance.broker" -> "aws_network_interface.broker";
  "aws_instance.nat" -> "aws_subnet.public";
  "aws_network_interface.broker" -> "aws_subnet.private";
  "aws_subnet.private" -> "aws_vpc.this";
  "aws_subnet.public" -> "aws_vpc.this";
  "aws_volume_attachment.kafka_data" -> "aws_instance.broker";
  "aws_instance.broker" -> "data.aws_ami.al2023";
}
"""


def _graph(**values: dict) -> Graph:
    base = {"aws_vpc.this": {"enable_dns_hostnames": True, "enable_dns_support": True},
            "aws_subnet.public": {"map_public_ip_on_launch": True},
            "aws_volume_attachment.kafka_data": {"skip_destroy": True}}  # fmt: skip
    return Graph(deps=parse_graph(DOT), values={**base, **values})


def test_the_graph_has_every_node_and_edge():
    deps = parse_graph(DOT)
    assert deps["aws_instance.broker"] == {"aws_ebs_volume.kafka_data", "aws_network_interface.broker",
                                           "data.aws_ami.al2023"}  # fmt: skip
    assert deps["aws_vpc.this"] == set() and deps["aws_ebs_volume.kafka_data"] == set()


def test_apply_floor_is_the_broker_chain():
    f = floor(_graph(), "create")
    assert f.seconds == 40  # volume or VPC (DNS hostnames) 10 -> broker 10 -> attachment 20; the NAT's path is 30
    assert [n for n, w in f.path if w][-2:] == ["aws_instance.broker", "aws_volume_attachment.kafka_data"]
    assert f.ties == {"aws_instance.broker": ["aws_vpc.this"]}, "both 10 s waits end together before the broker"


def test_dropping_dns_hostnames_leaves_the_apply_floor_where_it_is():
    """The data volume's own 10 s create wait runs beside the VPC's: the broker waits for both."""
    f = floor(_graph(**{"aws_vpc.this": {"enable_dns_hostnames": False}}), "create")
    assert f.seconds == 40
    assert f.path[0] == ("aws_ebs_volume.kafka_data", 10.0) and not f.ties


def test_destroy_floor_reverses_the_edges_and_honours_skip_destroy():
    assert floor(_graph(), "destroy").describe() == "20 s = aws_instance.broker 10 → aws_ebs_volume.kafka_data 10"
    detached = floor(_graph(**{"aws_volume_attachment.kafka_data": {"skip_destroy": False}}), "destroy")
    assert detached.seconds == 30


def test_planned_values_take_the_first_instance_and_count_them():
    plan = {"resource_changes": [
        {"mode": "managed", "type": "aws_instance", "name": "broker", "change": {"after": {"ami": "a"}}},
        {"mode": "managed", "type": "aws_instance", "name": "broker", "change": {"after": {"ami": "b"}}},
        {"mode": "data", "type": "aws_ami", "name": "al2023", "change": {"after": {}}},
    ]}  # fmt: skip
    values, counts = planned_values(plan)
    assert values["aws_instance.broker"] == {"ami": "a"} and counts == {"aws_instance.broker": 2, "data.aws_ami.al2023": 1}


def test_the_design_variants_move_the_floor_as_their_edits_say():
    from floor_variants import nat_eip_only, self_attach, volume_by_device

    by_device = _graph()
    volume_by_device(by_device)
    assert floor(by_device, "create").seconds == 40, "the VPC's 10 s still leads to the broker and its attachment"
    assert floor(by_device, "destroy").describe() == "10 s = aws_ebs_volume.kafka_data 10"

    attached_at_boot = _graph()
    self_attach(attached_at_boot)
    assert "aws_volume_attachment.kafka_data" not in attached_at_boot.deps
    assert floor(attached_at_boot, "create").describe() == (
        "30 s = aws_vpc.this 10 → aws_subnet.public 10 → aws_instance.nat 10"), "the NAT's path is critical now"
    nat_eip_only(attached_at_boot)
    assert floor(attached_at_boot, "create").seconds == 20
