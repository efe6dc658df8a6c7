"""The architecture diagram: DOT source from the spec (pure), drawn by Graphviz's dot."""

from __future__ import annotations

import re
import stat
import struct
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator.cli import main
from generator.module import diagram
from generator.module.diagram import broker_id, diagram_source, render_diagram
from generator.module.loaded import load
from tests.conftest import ROOT, SEED, SPECS, require

DOCS = ROOT / "docs"
SPEC_PATHS = [SEED, ROOT / "environments" / "sandbox.yaml", SPECS / "virginia-five.yaml"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

EDGE_RE = re.compile(r"^\s*(\w+) -> (\w+) \[(.*)\];$", re.M)
ATTR_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Edge:
    tail: str
    head: str
    attrs: dict[str, str]

    @property
    def kind(self) -> str:
        return self.attrs["class"]


def parse_edges(source: str) -> list[Edge]:
    """Every `a -> b [k="v", ...];` statement of the DOT source, attributes parsed."""
    edges = []
    for tail, head, attr_text in EDGE_RE.findall(source):
        attrs = dict(ATTR_RE.findall(attr_text))
        assert ", ".join(f'{k}="{v}"' for k, v in attrs.items()) == attr_text, f"unparsed attributes: {attr_text}"
        edges.append(Edge(tail, head, attrs))
    assert len(edges) == source.count(" -> "), "an edge statement the parser did not recognise"
    return edges


def follow(edges: list[Edge], kind: str, start: str) -> Iterator[str]:
    """Walk the single outgoing edge of `kind` from node to node until there is none."""
    node = start
    seen = {node}
    yield node
    while True:
        out = [e.head for e in edges if e.kind == kind and e.tail == node]
        assert len(out) <= 1, f"{kind} forks at {node}: {out}"
        if not out:
            return
        node = out[0]
        assert node not in seen, f"{kind} path loops back to {node}"
        seen.add(node)
        yield node


@pytest.fixture(scope="module")
def seed():
    return load(SEED)


@pytest.fixture(scope="module")
def seed_edges(seed) -> list[Edge]:
    return parse_edges(diagram_source(seed))


# ---------------------------------------------------------------- DOT source (no dot needed)


@pytest.mark.parametrize("spec_path", SPEC_PATHS, ids=lambda p: p.stem)
def test_source_names_every_subnet_broker_and_admin(spec_path):
    loaded = load(spec_path)
    topo, source = loaded.topology, diagram_source(loaded)
    for subnet in [topo.public_subnet, *topo.private_subnets]:
        assert f"subnet</b> {subnet.cidr}>" in source, subnet.key
        assert source.count(f"subgraph cluster_az_{subnet.az_letter} {{") == 1, subnet.az
    for broker in topo.brokers:
        label = f"<b>{broker.name}</b><br/>{broker.private_ip} · Kafka :{loaded.spec.kafka.port}"
        assert f"{broker_id(broker)} [label=<{label}" in source
    for cidr in loaded.spec.admin_cidrs:
        assert str(cidr) in source
    assert f"<b>VPC {topo.name}</b> · {loaded.spec.vpc_cidr} · {loaded.spec.region}" in source
    assert "igw [label=<<b>internet gateway</b>" in source
    assert f"{loaded.spec.nat.instance_type} · EIP: assigned at apply" in source


def test_every_broker_egresses_through_the_nat_and_the_gateway(seed, seed_edges):
    for broker in seed.topology.brokers:
        assert list(follow(seed_edges, "egress", broker_id(broker))) == [broker_id(broker), "nat", "igw", "internet"]
    to_nat = [e for e in seed_edges if e.kind == "egress" and e.head == "nat"]
    assert {e.tail for e in to_nat} == {broker_id(b) for b in seed.topology.brokers}
    assert {e.attrs["label"] for e in to_nat} == {"0.0.0.0/0 → NAT instance"}


def test_the_admin_reaches_every_broker_by_ssh_only_through_the_bastion(seed, seed_edges):
    ssh = {(e.tail, e.head) for e in seed_edges if e.kind == "ssh"}
    brokers = {broker_id(b) for b in seed.topology.brokers}
    assert ssh == {("admin", "igw"), ("igw", "nat")} | {("nat", b) for b in brokers}
    assert {e.attrs["style"] for e in seed_edges if e.kind == "ssh"} == {"dashed"}
    assert "style" not in {k for e in seed_edges if e.kind == "egress" for k in e.attrs}
    assert {e.attrs["label"] for e in seed_edges if e.kind == "ssh" and e.tail == "nat"} == {":22"}


@pytest.mark.parametrize("spec_path", SPEC_PATHS, ids=lambda p: p.stem)
def test_nothing_from_outside_leads_into_a_broker(spec_path):
    loaded = load(spec_path)
    edges = parse_edges(diagram_source(loaded))
    brokers = {broker_id(b) for b in loaded.topology.brokers}
    into_brokers = [e for e in edges if e.head in brokers]
    assert {(e.tail, e.kind) for e in into_brokers} == {("nat", "ssh")}
    assert [e for e in edges if e.tail == "internet"] == [], "the internet initiates nothing"


def test_source_is_deterministic():
    assert diagram_source(load(SEED)).encode() == diagram_source(load(SEED)).encode()


def test_an_az_holding_the_nat_and_brokers_is_one_box(write_spec):
    spec = write_spec(SEED.read_text().replace("  az: a", "  az: b"))
    source = diagram_source(load(spec))
    az_b = source[source.index("subgraph cluster_az_b {"):source.index("subgraph cluster_az_c {")]
    assert "subgraph cluster_public {" in az_b and "subgraph cluster_private_b {" in az_b
    assert source.count("subgraph cluster_az_") == 3


# ---------------------------------------------------------------- rendered by dot


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking signature, IHDR CRC and IEND."""
    __tracebackhide__ = True
    assert data[:8] == PNG_SIGNATURE, "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR"), f"first chunk is {kind!r} of {length} bytes, not IHDR"
    (crc,) = struct.unpack(">I", data[29:33])
    assert zlib.crc32(data[12:29]) == crc, "IHDR checksum is wrong"
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", "the PNG does not end with IEND"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_seed_renders_to_a_png_of_sensible_size(tmp_path, capsys):
    require("dot")
    out = tmp_path / "seed.png"
    assert main(["diagram", str(SEED), "-o", str(out)]) == 0
    data = out.read_bytes()
    width, height = png_size(data)
    assert 400 <= width <= 4000 and 300 <= height <= 4000, (width, height)
    assert len(data) > 10_000
    assert capsys.readouterr().out.startswith(f"{out}: {len(data)} bytes (PNG, ")


def test_seed_svg_is_xml_carrying_the_addresses_and_both_paths(seed):
    require("dot")
    root = ET.fromstring(render_diagram(seed, "svg"))
    ns = {"svg": "http://www.w3.org/2000/svg"}
    text = "\n".join(t.text or "" for t in root.iterfind(".//svg:text", ns))
    topo = seed.topology
    cidrs = [seed.spec.vpc_cidr, *seed.spec.admin_cidrs, topo.public_subnet.cidr, *(s.cidr for s in topo.private_subnets)]
    for cidr in cidrs:
        assert str(cidr) in text
    for broker in topo.brokers:
        assert str(broker.private_ip) in text
    classes = [g.get("class") for g in root.iterfind(".//svg:g", ns)]
    assert classes.count("edge egress") == classes.count("edge ssh") == len(topo.brokers) + 2


def test_default_output_is_the_build_directory(_build_root, capsys):
    require("dot")
    assert main(["diagram", "ttareungyi"]) == 0
    out = _build_root / "ttareungyi" / "diagram.svg"
    assert capsys.readouterr().out.startswith(f"{out}: {out.stat().st_size} bytes (SVG, ")
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


@pytest.mark.parametrize("name", ["diagram.pdf", "diagram", "diagram.svg.txt"])
def test_an_unknown_suffix_is_refused_and_nothing_written(tmp_path, capsys, name):
    assert main(["diagram", str(SEED), "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "unsupported diagram format" in err and "end the file name in .svg or .png" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_dot_is_a_prerequisite_error_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))
    out = tmp_path / "out" / "seed.svg"
    assert main(["diagram", str(SEED), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "kafkanet: error: graphviz's `dot` not found; run `make install` (apt package graphviz)"
    )
    assert not (tmp_path / "out").exists()


def _fake_dot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    dot = bin_dir / "dot"
    dot.write_text(f"#!/bin/sh\n{script}\n")
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_a_failing_dot_is_reported_with_its_error_and_nothing_written(tmp_path, capsys, monkeypatch):
    _fake_dot(tmp_path, monkeypatch, 'echo "Error: <stdin>: syntax error in line 3" >&2; exit 1')
    out = tmp_path / "seed.png"
    assert main(["diagram", str(SEED), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert "-Tpng failed (exit 1): Error: <stdin>: syntax error in line 3" in err
    assert not out.exists()


def test_a_hanging_dot_is_stopped_by_the_timeout(tmp_path, capsys, monkeypatch):
    _fake_dot(tmp_path, monkeypatch, "exec sleep 30")
    monkeypatch.setattr(diagram, "DOT_TIMEOUT_SECONDS", 0.5)
    out = tmp_path / "seed.svg"
    assert main(["diagram", str(SEED), "-o", str(out)]) == 3
    assert "-Tsvg did not finish within 0.5 s" in capsys.readouterr().err
    assert not out.exists()


def test_an_unwritable_output_is_a_user_error_and_leaves_nothing(tmp_path, capsys):
    require("dot")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert main(["diagram", str(SEED), "-o", str(blocker / "seed.svg")]) == 2
    assert "cannot write the diagram" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [blocker] and blocker.read_text() == ""


# ---------------------------------------------------------------- the committed picture


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_committed_seed_diagram_is_current(seed, fmt):
    require("dot")
    committed = DOCS / f"ttareungyi.{fmt}"
    assert committed.read_bytes() == render_diagram(seed, fmt), (
        f"{committed.relative_to(ROOT)} is stale: run `kafkanet diagram ttareungyi -o docs/ttareungyi.{fmt}`"
    )


def test_readme_shows_the_seed_diagram():
    readme = (ROOT / "README.md").read_text()
    assert "](docs/ttareungyi.png)" in readme
    assert readme.index("make e2e") < readme.index("## Diagram")
