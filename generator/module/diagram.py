"""The architecture diagram of an environment: spec → DOT source → SVG or PNG.

`diagram_source` is pure: the same spec always gives the same DOT bytes, so
it is tested without Graphviz. `render_diagram` pipes that source through
Graphviz's `dot` (the Debian package `graphviz`), bounded by a timeout, and
`write_diagram` puts the bytes in place atomically.

The picture shows what the generated Terraform builds, derived from the spec
and its topology (never from a live environment, so the committed image does
not depend on what happens to be applied): the VPC, one box per AZ, the
public subnet with the NAT instance that is also the bastion, the private
subnets with their brokers, the internet gateway, the brokers' only way out
(private route table → NAT instance → internet gateway) and the admin's SSH
path through the bastion. Nothing leads into a broker from outside.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from pathlib import Path

from generator.base.errors import InfraError, PrerequisiteError, UserError
from generator.base.files import write_atomic
from generator.module.loaded import Loaded, default_build_dir, spec_label
from generator.spec.topology import Broker, Subnet, Topology

FORMATS = ("svg", "png")
DOT_TIMEOUT_SECONDS = 30
FONT = "DejaVu Sans"  # fonts-dejavu-core: installed with fontconfig on Debian

EGRESS = "#2e7d32"  # green: outbound traffic
SSH = "#d84315"  # orange: the admin's SSH path
BORDER = "#546e7a"
PUBLIC_FILL = "#e8f5e9"
PRIVATE_FILL = "#e3f2fd"
VPC_FILL = "#fafafa"
EDGE_STYLES: dict[str, dict[str, str]] = {
    "egress": {"color": EGRESS, "fontcolor": EGRESS},
    "ssh": {"color": SSH, "fontcolor": SSH, "style": "dashed"},
}


class Html(str):
    """An HTML-like Graphviz label whose text is already escaped."""


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _quoted(value: str) -> str:
    """A DOT double-quoted string; only `"` and `\\` need escaping in our labels."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(attrs: dict[str, object]) -> str:
    return ", ".join(
        f"{key}={f'<{value}>' if isinstance(value, Html) else _quoted(str(value))}" for key, value in attrs.items()
    )


def _node(node_id: str, label: Html, **attrs: object) -> str:
    return f"{node_id} [{_attrs({'label': label, **attrs})}];"


def _edge(tail: str, head: str, kind: str, label: str = "", **attrs: object) -> str:
    """An edge of one kind ("egress" or "ssh"); the kind sets its style and SVG class."""
    full: dict[str, object] = {"class": kind, **EDGE_STYLES[kind], **attrs}
    if label:
        full["label"] = label
    return f"{tail} -> {head} [{_attrs(full)}];"


def _cluster(cluster_id: str, label: Html, body: list[str], **attrs: object) -> list[str]:
    # the root graph's label (the legend) sits at the bottom; cluster titles default to the top
    head = [f"subgraph {cluster_id} {{", f"  graph [{_attrs({'label': label, 'labelloc': 't', **attrs})}];"]
    return head + [f"  {line}" for line in body] + ["}"]


def _title(bold: str, *lines: str, small: str = "") -> Html:
    """Bold first line, plain lines under it, an optional small grey line last."""
    parts = [f"<b>{_text(bold)}</b>", *(_text(line) for line in lines)]
    if small:
        parts.append(f'<font point-size="8" color="#455a64">{_text(small)}</font>')
    return Html("<br/>".join(parts))


def broker_id(broker: Broker) -> str:
    return broker.name.replace("-", "_")


# ---------------------------------------------------------------- clusters


def _outside(topo: Topology) -> list[str]:
    admins = [str(c) for c in topo.spec.admin_cidrs]
    internet = _node(
        "internet", _title("internet", small="packages, Kafka downloads, APIs"), shape="ellipse", fillcolor="#ffffff"
    )
    admin = _node("admin", _title("admin", *admins), fillcolor="#fff3e0")
    body = [f"graph [{_attrs({'rank': 'same'})}];", internet, admin]
    return _cluster("cluster_internet", Html("<i>outside the VPC</i>"), body, style="dashed", color="#b0bec5")


def _igw(topo: Topology) -> str:
    return _node("igw", _title("internet gateway", f"{topo.name}-igw"), shape="box", fillcolor="#eceff1")


def _public_subnet(topo: Topology, subnet: Subnet) -> list[str]:
    if subnet != topo.public_subnet:  # a pair's standby, in its own AZ
        standby = _node(
            "nat_standby",
            _title(
                "standby NAT + SSH bastion",
                f"{topo.spec.nat.instance_type} · own public IPv4; takes the EIP on failover",
                small="monitor: probes the active's forwarding and masquerade",
            ),
            fillcolor="#ffffff", style="filled,dashed",
        )
        return _subnet_cluster(subnet, "public subnet", PUBLIC_FILL, [standby])
    nat = _node(
        "nat",
        _title(
            "NAT instance + SSH bastion" if not topo.nat_pair else "active NAT + SSH bastion",
            f"{topo.spec.nat.instance_type} · EIP: assigned at apply",
            small="source/dest check off · masquerade",
        ),
        fillcolor="#ffffff", penwidth="1.5",
    )
    return _subnet_cluster(subnet, "public subnet", PUBLIC_FILL, [nat])


def _private_subnet(topo: Topology, subnet: Subnet) -> list[str]:
    port = topo.spec.kafka.port
    itype = topo.spec.brokers.instance_type
    nodes = [
        _node(broker_id(b), _title(b.name, f"{b.private_ip} · Kafka :{port}", small=itype), fillcolor="#ffffff")
        for b in topo.brokers
        if b.subnet == subnet
    ]
    return _subnet_cluster(subnet, "private subnet", PRIVATE_FILL, nodes)


def _subnet_cluster(subnet: Subnet, kind: str, fill: str, nodes: list[str]) -> list[str]:
    # Edges reach a private subnet from above: its title goes below, out of their way.
    label = Html(f"<b>{_text(kind)}</b> {_text(subnet.cidr)}")
    where = "t" if subnet.role == "public" else "b"
    return _cluster(
        f"cluster_{subnet.key}", label, nodes,
        style="filled", fillcolor=fill, color=BORDER, labelloc=where, labeljust="l",
    )


def _vpc(topo: Topology) -> list[str]:
    """The VPC holding one box per AZ; the NAT's AZ may also hold a private subnet."""
    spec = topo.spec
    subnets = [*topo.public_subnets, *topo.private_subnets]
    body: list[str] = []
    for letter in dict.fromkeys(s.az_letter for s in subnets):  # first seen: the NAT's AZ, then the brokers'
        in_az = [s for s in subnets if s.az_letter == letter]
        inner: list[str] = []
        for subnet in in_az:
            inner += _public_subnet(topo, subnet) if subnet.role == "public" else _private_subnet(topo, subnet)
        label = Html(f'<font color="#607d8b">{_text(in_az[0].az)}</font>')
        body += _cluster(f"cluster_az_{letter}", label, inner, style="dashed", color="#90a4ae", labelloc="b")
    label = Html(f"<b>VPC {_text(topo.name)}</b> · {_text(spec.vpc_cidr)} · {_text(spec.region)}")
    return _cluster("cluster_vpc", label, body, style="filled", fillcolor=VPC_FILL, color="#37474f", penwidth="1.5")


def _legend(topo: Topology) -> Html:
    """The key, drawn as the graph's own label under the picture."""
    port = topo.spec.kafka.port
    rows = [
        (EGRESS, "━━▶", "egress: private route table 0.0.0.0/0 → NAT instance → IGW"),
        (SSH, "╍╍▶", "admin SSH: bastion :22 from the admin CIDRs only, then brokers :22"),
        ("#37474f", "✕", f"no way in to the brokers; Kafka :{port} only inside the VPC"),
    ]
    cells = "".join(
        f'<tr><td align="center"><font color="{colour}">{_text(glyph)}</font></td>'
        f'<td align="left"><font point-size="9">{_text(text)}</font></td></tr>'
        for colour, glyph, text in rows
    )
    return Html(f'<table border="0" cellborder="0" cellspacing="1" cellpadding="1">{cells}</table>')


# ---------------------------------------------------------------- edges


def _egress_edges(topo: Topology) -> list[str]:
    # The private route table's 0.0.0.0/0 route, drawn from each broker. These
    # edges run against the SSH path, which comes first so that dot ranks the
    # picture top-down along it (internet, gateway, bastion, brokers).
    edges = [_edge(broker_id(b), "nat", "egress", "0.0.0.0/0 → NAT instance") for b in topo.brokers]
    # both NAT-gateway edges use the NAT's north-east corner: the subnet's title stays clear
    edges.append(_edge("nat", "igw", "egress", "SNAT to the EIP", tailport="ne"))
    edges.append(_edge("igw", "internet", "egress"))
    if topo.nat_pair:
        # the standby's probe runs through the active (VXLAN) and out with it;
        # on failover the routes and the EIP move to the standby
        edges.append(_edge("nat_standby", "nat", "egress", "probe via the active", style="dotted"))
        edges.append(_edge("nat_standby", "igw", "egress", "on failover: routes + EIP", style="dashed"))
    return edges


def _ssh_edges(topo: Topology) -> list[str]:
    edges = [
        _edge("admin", "igw", "ssh", "SSH to the EIP"),
        _edge("igw", "nat", "ssh", ":22", headport="ne"),
    ]
    edges += [_edge("nat", broker_id(b), "ssh", ":22") for b in topo.brokers]
    return edges


def _defaults(topo: Topology) -> list[str]:
    graph = {
        "rankdir": "TB", "newrank": "true", "nodesep": "0.3", "ranksep": "0.45", "pad": "0.2",
        "fontname": FONT, "fontsize": "11", "bgcolor": "white",
        "label": _legend(topo), "labelloc": "b", "labeljust": "c",
    }
    node = {
        "shape": "box", "style": "rounded,filled", "fontname": FONT, "fontsize": "10",
        "color": BORDER, "margin": "0.12,0.05",
    }
    edge = {"fontname": FONT, "fontsize": "8", "arrowsize": "0.7"}
    return [f"graph [{_attrs(graph)}];", f"node [{_attrs(node)}];", f"edge [{_attrs(edge)}];"]


def diagram_source(loaded: Loaded) -> str:
    """The DOT source of the environment's diagram; pure and deterministic."""
    topo = loaded.topology
    body = [
        *_defaults(topo), *_outside(topo), _igw(topo), *_vpc(topo),
        *_ssh_edges(topo), *_egress_edges(topo),
    ]
    lines = [
        f"// Generated by kafkanet from {spec_label(loaded.path)}; draw it with `kafkanet diagram`.",
        f"digraph {_quoted(topo.name)} {{",
        *(f"  {line}" for line in body),
        "}",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- rendering


def _suffixes() -> str:
    return " or ".join(f".{fmt}" for fmt in FORMATS)


def output_format(path: Path) -> str:
    """The image format named by the output's suffix; UserError for any other suffix."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        given = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise UserError(f"{path}: unsupported diagram format ({given}); end the file name in {_suffixes()}")
    return fmt


def default_output(loaded: Loaded) -> Path:
    return default_build_dir(loaded.spec.name) / "diagram.svg"


def find_dot() -> str:
    found = shutil.which("dot")
    if found is None:
        raise PrerequisiteError("graphviz's `dot` not found; run `make install` (apt package graphviz)")
    return found


def render_diagram(loaded: Loaded, fmt: str) -> bytes:
    """The diagram as SVG or PNG bytes, drawn by `dot` within DOT_TIMEOUT_SECONDS."""
    if fmt not in FORMATS:
        raise ValueError(f"diagram format {fmt!r} is not one of {FORMATS}")
    argv = [find_dot(), f"-T{fmt}"]
    try:
        proc = subprocess.run(
            argv, input=diagram_source(loaded).encode(), capture_output=True,
            timeout=DOT_TIMEOUT_SECONDS, check=False,
        )
    except subprocess.TimeoutExpired:
        raise InfraError(f"{' '.join(argv)} did not finish within {DOT_TIMEOUT_SECONDS} s") from None
    if proc.returncode != 0 or not proc.stdout:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise InfraError(f"{' '.join(argv)} failed (exit {proc.returncode}): {detail[0]}")
    return proc.stdout


def write_diagram(data: bytes, path: Path) -> None:
    """Write the image atomically: a temporary sibling renamed into place, or nothing at all."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give a file name ending in {_suffixes()}")
    try:
        write_atomic(path, data)
    except OSError as exc:
        raise UserError(f"{path}: cannot write the diagram: {exc.strerror}") from None
