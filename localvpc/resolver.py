"""The VPC resolver (the "Amazon-provided DNS" at the VPC's base address + 2), with dnslib.

Answers, with A records:

* the private DNS names of the VPC's live instances as EC2 names them
  (``ip-10-0-1-10.ap-northeast-2.compute.internal``; ``ec2.internal`` in
  us-east-1), from the EC2 API's current state (:class:`~localvpc.cloudview.CloudView`);
* a fixed table of public names the emulated internet serves: the regional EC2
  endpoint (``ec2.<region>.amazonaws.com``, the API relay) and the hosts the
  web host stands for (``checkip.amazonaws.com``: it answers with the caller's
  address, as checkip does).

Any other name is NXDOMAIN; a known name asked for another type gets an empty
NOERROR answer, as a real resolver gives. The Kafka download hosts
(dlcdn.apache.org and the like) are not in the table: the local brokers run
tansu and download nothing, and the web host could not serve a release.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

PORT = 53
TTL = 60  # what the Amazon-provided resolver gives private names

log = logging.getLogger("kafkanet.localvpc.resolver")


class VpcResolver(BaseResolver):
    """``private_names()`` gives ``{name: address}`` now; ``public`` is the fixed table."""

    def __init__(self, private_names: Callable[[], Mapping[str, str]], public: Mapping[str, str]) -> None:
        self.private_names = private_names
        self.public = {k.lower().rstrip("."): v for k, v in public.items()}

    def address_of(self, name: str) -> str | None:
        name = name.lower().rstrip(".")
        if name in self.public:
            return self.public[name]
        return {k.lower(): v for k, v in self.private_names().items()}.get(name)

    def resolve(self, request: DNSRecord, handler) -> DNSRecord:  # noqa: ARG002 (dnslib's signature)
        reply = request.reply()
        qname = request.q.qname
        try:
            address = self.address_of(str(qname))
        except Exception as exc:  # the API did not answer: SERVFAIL, as a resolver that cannot reach its data
            log.warning("resolving %s: %s", qname, exc)
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if address is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(address), ttl=TTL))
        return reply


def servers(resolver: VpcResolver, address: str, port: int = PORT) -> list[DNSServer]:
    """A UDP and a TCP server bound to ``address:port`` in the calling thread's network namespace (not started)."""
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    return [
        DNSServer(resolver, port=port, address=address, logger=quiet, tcp=tcp)
        for tcp in (False, True)
    ]
