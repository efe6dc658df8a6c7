"""No inbound: from the operator's side nothing of the environment answers but the bastion's SSH.

Every public address the EC2 API reports (mapped through ``public_ip_map`` on
the local target) must refuse or time out, within the probe budget, on 22
(except the bastion's own), 80, 443 and the Kafka and controller ports; on the
local target the brokers' private addresses too (never on AWS, where the
operator's own network may use those ranges). All probes run once,
concurrently, with the bastion's SSH port as positive control on the same code
path: every negative check fails unless the control answered.
"""

from __future__ import annotations

import pytest

from integration.conftest import PROBE_BUDGET
from integration.probes import OPEN
from integration.support import expect, fail


@pytest.mark.host("bastion")
def test_probe_positive_control_bastion_ssh_answers(probes, inventory):
    bastion = inventory["bastion"]
    expect(
        probes.control.outcome == OPEN,
        "bastion",
        f"SSH at {bastion['public_ip']} through the operator-side probe (positive control)",
        str(probes.control),
    )


@pytest.mark.host("public addresses")
def test_public_addresses_closed(public_port, probes, inventory):
    probes.require_control()
    unmapped = [t for t in probes.public if t.dial is None]
    if unmapped:
        fail(
            "public addresses",
            "public_ip_map",
            "no dialable counterpart for " + ", ".join(f"{t.aws_ip} ({t.holder})" for t in unmapped),
        )
    bastion_ip = inventory["bastion"]["public_ip"]
    ssh_port = int(inventory["ssh"].get("port") or 22)
    # SSH is the bastion's job: at the Elastic IP, and a NAT pair's standby (also a bastion) at its own address
    standby = (inventory["bastion"].get("standby") or {}).get("instance_id")
    bastions = [t for t in probes.public if t.dial == bastion_ip or (standby and t.holder.endswith(standby))]
    checked = [t for t in probes.public if not (public_port == ssh_port and t in bastions)]
    answered = [
        f"{t.dial} ({t.holder}, AWS {t.aws_ip}): {probes.results[(t.dial, public_port)]}"
        for t in checked
        if not probes.results[(t.dial, public_port)].closed
    ]
    expect(
        not answered,
        "public addresses",
        f"port {public_port} must refuse or time out within {PROBE_BUDGET:g} s",
        "; ".join(answered),
    )


@pytest.mark.host("public addresses")
def test_environment_has_public_addresses_to_probe(probes, inventory):
    """Guards the check above: an empty address list would make it pass vacuously."""
    expected = inventory["bastion"].get("aws_public_ip") or inventory["bastion"]["public_ip"]
    expect(
        any(t.aws_ip == expected for t in probes.public),
        "public addresses",
        f"the bastion's public address {expected} among the EC2 API's public addresses",
        [t.aws_ip for t in probes.public] or "none",
    )


def test_private_address_closed(private_probe, probes):
    broker, port = private_probe
    probes.require_control()
    result = probes.results[(broker["private_ip"], port)]
    expect(
        result.closed,
        broker["name"],
        f"private address {broker['private_ip']}:{port} from the operator side must refuse or time out",
        str(result),
    )


@pytest.mark.local_only
@pytest.mark.host("bastion")
def test_bastion_ssh_closed_to_non_admin_addresses(non_admin_probe):
    """SSH to the bastion from an internet address outside admin_cidrs refuses or times out."""
    if non_admin_probe is None:
        pytest.skip("no internet host outside the admin CIDRs to probe from on AWS; the SG rule check covers it")
    seen = non_admin_probe.result()  # probed in the background since the session started (conftest)
    expect(seen.control.outcome == OPEN, f"non-admin host {seen.address}",
           "positive control (the web host answers on the same probe path)", str(seen.control))  # fmt: skip
    expect(seen.ssh.closed, "bastion", f"SSH from non-admin address {seen.address} must refuse or time out",
           str(seen.ssh))  # fmt: skip
