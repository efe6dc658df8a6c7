"""What each module design would leave of the e2e's floor: the provider waits of the real graph, edited.

    sudo .venv/bin/python bench/floor_variants.py [--spec FILE] [--overhead SECONDS]

Issue #12 asks for `kafkanet e2e` in at most 60 s on the local target, and the
module as generated sleeps 60 s in the provider (applybench/floor.py; measured
e2e walls sit ~25 s above it: moto, the plan, terraform's own work, the data
plane, the suite). So the target is a question of module design. This bench
takes the module's real graph and planned values once (``terraform graph`` and
a plan against a moto server of its own, as e2e_bench's floor does), then
edits that graph the way each candidate design would change it and prints the
apply and destroy floors of each, and beside them ``--overhead`` (default
24.5 s, the idle e2e of 2026-11-30 minus its floor) added, as an estimate of
the wall.

These are models of designs that were NOT built: the edits are to the graph,
not to the module, so what the design would cost on AWS is the reader's part
(bench/README.md, "#12: what is between the module and a minute"). The graph
edits, each named by what it changes in the module:

* ``volume-by-device``: the broker's user data no longer carries its data
  volume's id (the boot finds the disk by the attachment's device name), so
  the instance stops depending on the volume;
* ``self-attach``: no ``aws_volume_attachment``; each broker attaches its own
  volume at boot (found by tag), through an instance profile of its own (the
  profile's observed ~5 s create is modelled like the NAT's);
* ``nat-eip-only``: the public subnets stop mapping public IPs at launch (the
  NAT's address is its EIP only);
* ``no-dns-hostnames``: the VPC keeps ``enable_dns_hostnames`` at its default.
"""

from __future__ import annotations

import argparse
import copy
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from applybench.floor import Graph, floor, module_graph  # noqa: E402
from applybench.runner import bench_spec  # noqa: E402

BROKER = "aws_instance.broker"
VOLUME = "aws_ebs_volume.kafka_data"
ATTACHMENT = "aws_volume_attachment.kafka_data"
BROKER_PROFILE = "aws_iam_instance_profile.broker"


def volume_by_device(g: Graph) -> None:
    g.deps[BROKER].discard(VOLUME)


def self_attach(g: Graph) -> None:
    volume_by_device(g)
    g.deps.pop(ATTACHMENT, None)
    for deps in g.deps.values():
        deps.discard(ATTACHMENT)
    g.deps[BROKER_PROFILE] = set()
    g.values[BROKER_PROFILE] = {}
    g.deps[BROKER].add(BROKER_PROFILE)


def nat_eip_only(g: Graph) -> None:
    for node, values in g.values.items():
        if node.startswith("aws_subnet.") and values.get("map_public_ip_on_launch") is True:
            values["map_public_ip_on_launch"] = False


def no_dns_hostnames(g: Graph) -> None:
    for node, values in g.values.items():
        if node.startswith("aws_vpc."):
            values["enable_dns_hostnames"] = False


Edit = Callable[[Graph], None]
VARIANTS: list[tuple[str, list[Edit]]] = [
    ("as generated", []),
    ("volume-by-device", [volume_by_device]),
    ("no-dns-hostnames + nat-eip-only", [no_dns_hostnames, nat_eip_only]),
    ("self-attach", [self_attach]),
    ("self-attach + nat-eip-only", [self_attach, nat_eip_only]),
    ("self-attach + nat-eip-only + no-dns-hostnames", [self_attach, nat_eip_only, no_dns_hostnames]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--spec", default=str(ROOT / "environments" / "ttareungyi.yaml"))
    parser.add_argument("--overhead", type=float, default=24.5,
                        help="seconds of the e2e beside the provider's waits, added for the estimate")  # fmt: skip
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the floor plans the module against a moto server of its own: run the bench as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="kn_floorvar_") as tmp:
        graph = module_graph(bench_spec(Path(args.spec), f"flv-{secrets.token_hex(3)}", Path(tmp)))
    for name, edits in VARIANTS:
        g = copy.deepcopy(graph)
        for edit in edits:
            edit(g)
        create, destroy = floor(g, "create"), floor(g, "destroy")
        total = create.seconds + destroy.seconds
        print(f"{name}: floor {total:g} s, e2e estimate {total + args.overhead:.1f} s")
        print(f"    apply   {create.describe()}")
        print(f"    destroy {destroy.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
