"""The generated module's README.md and diagram.svg: what the infra owner opens first.

The README holds the picture, the host table, the cost of the environment next
to a managed NAT Gateway, and the commands to run. Neither the picture nor the
price book is essential to the Terraform: when graphviz is missing or the
region is not priced, the README says so and how to fix it, and generate goes on.

``dot`` takes ~50 ms, ten times the rest of generate, so the SVG carries the
hash of its DOT source and is redrawn only when that changes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from generator.base.errors import KafkanetError
from generator.module import cost, diagram
from generator.module.loaded import PROJECT_ROOT, Loaded, spec_label
from generator.module.render import RenderContext, render_template

README_FILE = "README.md"
DIAGRAM_FILE = "diagram.svg"
_STAMP = "<!-- kafkanet: drawn from DOT source sha256 {} -->"
_STAMP_RE = re.compile(r"<!-- kafkanet: drawn from DOT source sha256 ([0-9a-f]{64}) -->")


def _spec_arg(loaded: Loaded) -> str:
    """How the commands name the spec: the environment's name when it lives in environments/."""
    if loaded.path.resolve() == (PROJECT_ROOT / "environments" / f"{loaded.spec.name}.yaml").resolve():
        return loaded.spec.name
    return spec_label(loaded.path)


def _diagram(loaded: Loaded, out_dir: Path) -> tuple[str | None, str]:
    """(SVG text, "") or (None, why it could not be drawn)."""

    digest = hashlib.sha256(diagram.diagram_source(loaded).encode()).hexdigest()
    try:
        existing = (out_dir / DIAGRAM_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        existing = ""
    found = _STAMP_RE.search(existing)
    if found and found.group(1) == digest:
        return existing, ""
    try:
        svg = diagram.render_diagram(loaded, "svg").decode("utf-8")
    except KafkanetError as exc:
        return None, exc.problems[0]
    head, sep, rest = svg.partition("<svg")  # after the XML prolog, before the root element
    return f"{head}{_STAMP.format(digest)}\n{sep}{rest}", ""


def _cost(loaded: Loaded) -> tuple[str | None, str]:

    try:
        return cost.estimate(loaded).markdown(), ""
    except KafkanetError as exc:
        return None, exc.problems[0]


def module_docs(loaded: Loaded, ctx: RenderContext, out_dir: Path) -> dict[str, str]:
    """README.md, and diagram.svg when graphviz can draw it, as {relative path: text}."""
    diagram, diagram_problem = _diagram(loaded, out_dir)
    cost, cost_problem = _cost(loaded)
    files = {} if diagram is None else {DIAGRAM_FILE: diagram}
    files[README_FILE] = render_template(
        "module/README.md.j2",
        topo=loaded.topology,
        spec=loaded.spec,
        ctx=ctx,
        header=ctx.header.replace("\n", " "),
        spec_arg=_spec_arg(loaded),
        diagram=diagram is not None,
        diagram_problem=diagram_problem,
        cost=cost,
        cost_problem=cost_problem,
    )
    return files
