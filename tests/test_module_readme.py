"""The generated module's README.md and diagram.svg."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from generator.base.errors import PrerequisiteError
from generator.module import diagram
from generator.module.generate import generate
from tests.conftest import SEED, SPECS


@pytest.fixture
def seed_module(tmp_path):
    return generate(SEED, tmp_path / "seed")


def test_readme_lists_every_host_with_its_subnet_and_address(seed_module):
    readme = (seed_module.out_dir / "README.md").read_text()
    assert readme.startswith("# ttareungyi: Kafka behind a NAT instance in ap-northeast-2\n")
    for row in (
        "| NAT instance / bastion | ap-northeast-2a | public `10.0.0.0/24` |",
        "| broker-1 (node 1, controller) | ap-northeast-2b | private `10.0.1.0/24` | 10.0.1.10 | t3.small |",
        "| broker-2 (node 2, controller) | ap-northeast-2c | private `10.0.2.0/24` | 10.0.2.10 | t3.small |",
        "| broker-3 (node 3, controller) | ap-northeast-2d | private `10.0.3.0/24` | 10.0.3.10 | t3.small |",
    ):
        assert row in readme
    assert "SSH, from 203.0.113.50/32" in readme


def test_readme_has_the_cost_table_and_the_commands(seed_module):
    readme = (seed_module.out_dir / "README.md").read_text()
    # tests/test_cost.py derives these by hand for the seed at 100 GB/month
    assert "| **environment total** | **95.26** | **134.01** | **225.45** |" in readme
    assert "| NAT instance saves | – | 38.75 | 130.19 |" in readme
    for command in ("kafkanet apply ttareungyi --target aws", "kafkanet destroy ttareungyi --target aws",
                    "kafkanet ssh ttareungyi broker-1 --target aws", "kafkanet e2e ttareungyi"):
        assert command in readme


def test_diagram_is_drawn_next_to_the_readme_and_linked(seed_module):
    svg = seed_module.out_dir / "diagram.svg"
    root = ET.fromstring(svg.read_bytes())
    assert root.tag.endswith("svg")
    text = " ".join(t for t in root.itertext())
    assert "10.0.1.10" in text and "10.0.0.0/24" in text
    assert "](diagram.svg)" in (seed_module.out_dir / "README.md").read_text()


def test_unchanged_spec_does_not_run_dot_again(seed_module, monkeypatch):
    def no_dot(*_args, **_kwargs):
        raise AssertionError("dot ran although the diagram's source did not change")

    monkeypatch.setattr(diagram, "render_diagram", no_dot)
    again = generate(SEED, seed_module.out_dir)
    assert again.write.written == [] and "diagram.svg" in again.write.unchanged


def test_without_graphviz_the_module_is_generated_and_the_readme_says_why(tmp_path, monkeypatch):
    def missing(*_args, **_kwargs):
        raise PrerequisiteError("graphviz's `dot` not found; run `make install` (apt package graphviz)")

    monkeypatch.setattr(diagram, "render_diagram", missing)
    out = generate(SEED, tmp_path / "m").out_dir
    readme = (out / "README.md").read_text()
    assert not (out / "diagram.svg").exists() and (out / "network.tf").is_file()
    assert "The architecture picture is missing: graphviz's `dot` not found" in readme
    assert "](diagram.svg)" not in readme


def test_an_unpriced_region_is_said_not_guessed(write_spec, tmp_path):
    text = SEED.read_text().replace("region: ap-northeast-2", "region: sa-east-1")
    text = text.replace("azs: [b, c, d]", "azs: [b, c]")
    spec = write_spec(text, "saopaulo.yaml")
    readme = (generate(spec, tmp_path / "sp").out_dir / "README.md").read_text()
    assert "Not priced: " in readme and "sa-east-1" in readme.split("Not priced: ", 1)[1].splitlines()[0]
    assert "environment total" not in readme


def test_a_spec_outside_environments_is_named_by_its_path(tmp_path):
    readme = (generate(SPECS / "virginia-five.yaml", tmp_path / "v").out_dir / "README.md").read_text()
    assert "kafkanet apply tests/specs/virginia-five.yaml --target aws" in readme
