"""The floor of an apply and a destroy: the provider's fixed waits on the critical path of the real graph.

Owns one question: with moto answering every call at once, how long must
``terraform apply`` and ``terraform destroy`` of a module take at the least?
hashicorp/aws 5.100.0 sleeps a fixed Delay before a waiter's first poll
(plugin-sdk ``helper/retry/state.go`` L90), so that time is spent whatever the
server answers. The table :data:`WAITS` is the per-resource-type part of
/work/shared/research/provider-waits.md, section 1 (create and destroy, with the
arguments that add or remove a wait); everything else costs ~0.

:func:`module_graph` asks terraform itself: ``terraform graph`` of the module
(edges: A depends on B) and the planned values (``terraform plan -out`` +
``show -json`` against a moto server of its own), so the floor follows the
module as generated, not a copy of its dependencies. :func:`floor` is the longest
path through that graph with each resource weighted by its wait (instances of
one resource run in parallel: ``-parallelism`` 10 is not binding here, see the
note); on destroy the edges are reversed.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

Values = Mapping[str, Any]

# Non-default on-launch subnet attributes: each is a modify call plus a D10 waiter (vpc_subnet.go:395-477).
_SUBNET_ATTRS = ("map_public_ip_on_launch", "assign_ipv6_address_on_creation", "enable_dns64",
                 "enable_resource_name_dns_a_record_on_launch", "enable_resource_name_dns_aaaa_record_on_launch")  # fmt: skip


def _vpc_create(v: Values) -> float:
    # vpc_.go:568-590: each attribute that differs from the provider's hard-coded default (hostnames false,
    # support true, NAU metrics false) is a modify call plus a D10 waiter, in sequence.
    return 10.0 * ((v.get("enable_dns_hostnames") is True) + (v.get("enable_dns_support") is False)
                   + (v.get("enable_network_address_usage_metrics") is True))  # fmt: skip


def _subnet_create(v: Values) -> float:
    return 10.0 * sum(v.get(a) is True for a in _SUBNET_ATTRS)


def _attachment_destroy(v: Values) -> float:
    if v.get("skip_destroy") is True:
        return 0.0  # returns at once, no API call (ebs_volume_attachment.go:157)
    return 10.0 + (10.0 if v.get("stop_instance_before_detaching") is True else 0.0)


Wait = Callable[[Values], float]
#: resource type -> (create wait, destroy wait), seconds of fixed provider Delay (D10 each waiter)
WAITS: dict[str, tuple[Wait, Wait]] = {
    "aws_vpc": (_vpc_create, lambda v: 0.0),
    "aws_subnet": (_subnet_create, lambda v: 0.0),
    "aws_instance": (lambda v: 10.0, lambda v: 10.0),  # pending->running; ...->terminated
    "aws_ebs_volume": (lambda v: 10.0, lambda v: 10.0),  # creating->available; deleting->gone
    # instance-ready wait (D10), AttachVolume, attached wait (D10)
    "aws_volume_attachment": (lambda v: 20.0, _attachment_destroy),
    # the NAT's instance profile: "Creation complete after 5s" in every apply seen on moto (the
    # provider's source for it was not read); its role and the group's rules complete in 0-1 s
    "aws_iam_instance_profile": (lambda v: 5.0, lambda v: 0.0),
}


@dataclass
class Graph:
    """Resources (``type.name``, data sources ``data.type.name``), their dependencies and planned values."""

    deps: dict[str, set[str]]
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # first instance's planned values
    instances: dict[str, int] = field(default_factory=dict)

    def wait(self, node: str, phase: str) -> float:
        if node.startswith("data."):
            return 0.0
        kind = node.split(".", 1)[0]
        waits = WAITS.get(kind)
        if waits is None:
            return 0.0
        return waits[0 if phase == "create" else 1](self.values.get(node, {}))


@dataclass
class Floor:
    phase: str  # create | destroy
    seconds: float
    path: list[tuple[str, float]]  # the critical path in the order it runs: (resource, its wait)
    #: resource on the path -> other things it waits for that end at the same time (as critical)
    ties: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        waits = [f"{node} {w:g}" for node, w in self.path if w > 0]
        text = f"{self.seconds:g} s = " + (" → ".join(waits) or "no fixed waits")
        tied = [f"{node} waits as long for {', '.join(others)}" for node, others in self.ties.items()]
        return text + (f" (tie: {'; '.join(tied)})" if tied else "")


_EDGE = re.compile(r'^\s*"([^"]+)"\s*->\s*"([^"]+)"')
_NODE = re.compile(r'^\s*"([^"]+)"\s*\[')


def parse_graph(dot: str) -> dict[str, set[str]]:
    """``terraform graph``'s DOT (the resource graph of terraform >= 1.7) -> node -> what it depends on."""
    deps: dict[str, set[str]] = {}
    for line in dot.splitlines():
        if edge := _EDGE.match(line):
            deps.setdefault(edge[1], set()).add(edge[2])
            deps.setdefault(edge[2], set())
        elif node := _NODE.match(line):
            deps.setdefault(node[1], set())
    return deps


def planned_values(plan: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """``show -json`` of a plan -> resource -> the first instance's planned values, and its instance count."""
    values: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for change in plan.get("resource_changes", []):
        if change.get("module_address"):
            continue
        node = f"{'data.' if change.get('mode') == 'data' else ''}{change['type']}.{change['name']}"
        counts[node] = counts.get(node, 0) + 1
        values.setdefault(node, dict((change.get("change") or {}).get("after") or {}))
    return values, counts


def floor(graph: Graph, phase: str) -> Floor:
    """Longest path through the graph, each node weighted by its fixed wait (destroy: edges reversed)."""
    if phase == "create":
        before = graph.deps  # a node starts when everything it depends on is done
    else:
        before = {n: set() for n in graph.deps}
        for node, ds in graph.deps.items():
            for d in ds:
                before.setdefault(d, set()).add(node)  # d is destroyed after everything that depends on it
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for node in TopologicalSorter(before).static_order():
        prev = max(sorted(before.get(node, ())), key=lambda p: finish[p], default=None)
        finish[node] = graph.wait(node, phase) + (finish[prev] if prev is not None else 0.0)
        via[node] = prev
    last = max(sorted(finish), key=lambda n: finish[n])
    path = []
    ties: dict[str, list[str]] = {}
    node: str | None = last
    while node is not None:
        path.append((node, graph.wait(node, phase)))
        prev = via[node]
        if prev is not None and finish[prev] > 0:
            # the critical branch behind each tied one, named by its last resource that waits
            others = [_last_wait(graph, phase, via, p) for p in sorted(before[node])
                      if p != prev and finish[p] == finish[prev]]  # fmt: skip
            others = [o for o in dict.fromkeys(others) if o != _last_wait(graph, phase, via, prev)]
            if others:
                ties[node] = others
        node = prev
    return Floor(phase, finish[last], list(reversed(path)), ties)


def _last_wait(graph: Graph, phase: str, via: Mapping[str, str | None], node: str | None) -> str:
    """The nearest resource at or before ``node`` on its critical branch that has a wait of its own."""
    start = node
    while node is not None and graph.wait(node, phase) == 0:
        node = via[node]
    return node or str(start)


def module_graph(spec: Path) -> Graph:
    """Generate the spec's module in a scratch build directory, then ask terraform for its graph and plan.

    The plan needs an API: a moto server of its own on 127.0.0.1, stopped (with
    the shared provider) whatever happens.
    """
    from generator.environment import session
    from generator.localaws import moto_server
    from generator.module.generate import generate

    with tempfile.TemporaryDirectory(prefix="kn_floor_") as scratch:
        env = session.open_env(str(spec), "local", Path(scratch) / "module")
        generate(env.loaded, env.build_dir)
        session.local_backend_override(env)
        moto = moto_server.ensure_running(env.path(session.MOTO_DIR))
        try:
            with session.terraform_session(env, moto) as tf:
                tf.init()
                tf.plan(out=session.PLAN_FILE)
                plan = json.loads(tf.run("show", "-json", session.PLAN_FILE, quiet=True).stdout)
                dot = tf.run("graph", quiet=True).stdout
        finally:
            moto_server.stop(env.path(session.MOTO_DIR))
    values, counts = planned_values(plan)
    return Graph(deps=parse_graph(dot), values=values, instances=counts)
