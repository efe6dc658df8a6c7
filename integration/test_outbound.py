"""Outbound: every instance reaches the internet through the NAT, seen as the bastion's public address.

The probe URL answers with the caller's address as the internet sees it
(like checkip). Run on the host itself over the session's SSH transport
(testinfra), with curl, or Python where curl is missing; bounded remotely and
locally. Only failures that clear up by themselves (connect refused or timed
out while a NAT boots) are retried, a few times.
"""

from __future__ import annotations

from integration.support import expect_equal


def test_outbound_http_seen_as_bastion_public_ip(instance, outbound, inventory):
    name, url = instance["name"], inventory["probe_url"]
    body = outbound[name].result()  # re-raises that host's failure, message and all
    expect_equal(
        body,
        inventory["bastion"]["public_ip"],
        name,
        f"source address the internet sees (body of {url})",
        "the bastion's public IP",
    )
