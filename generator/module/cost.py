"""Monthly cost of an environment: the NAT instance as generated vs a managed NAT Gateway.

`estimate()` is pure arithmetic on the topology and a price book
(:mod:`generator.module.prices`, by default `generator/module/prices.yaml`):
Decimal throughout, 730 hours a month, rounded to cents only when shown. The
report shows itself as the `kafkanet cost` table, the README's markdown and JSON.

Three ways to give the brokers outbound internet are compared. The brokers and
the internet egress cost the same under each, so they are shared lines:

A. the NAT instance as generated (it is also the SSH bastion), or the NAT
   pair when the spec asks for one (``nat.azs``);
B. one NAT Gateway, in the NAT instance's AZ;
C. a NAT Gateway in every broker AZ, the highly available layout;
D. the other NAT-instance layout: the pair (an active NAT instance and a hot
   standby in a second AZ, both bastions) next to a single NAT, or the single
   NAT next to a pair.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable

from generator.base.errors import UserError
from generator.module.loaded import Loaded, spec_label
from generator.module.prices import Price, PriceBook, load_prices
from generator.spec.topology import Topology

HOURS_PER_MONTH = Decimal(730)
DEFAULT_EGRESS_GB = Decimal(100)
CENT = Decimal("0.01")
WIDTH = 100  # of the table's prose lines

# What templates/terraform/nat.tf.j2 and kafka.tf.j2 provision; tests/test_cost.py
# holds these against the rendered module so the two cannot drift apart.
VOLUME_TYPE = "gp3"
NAT_ROOT_GB = 8
BROKER_ROOT_GB = 16

# --------------------------------------------------------------- estimate


@dataclass(frozen=True)
class Line:
    kind: str  # what it pays for, comparable across options: a key of KINDS
    item: str
    price: Price
    quantity: Decimal
    unit: str  # what the price is per: hour, GB-month or GB

    @property
    def monthly(self) -> Decimal:
        return self.price.usd * self.quantity


KINDS = {
    "brokers": "brokers: instances, root and data volumes",
    "egress": "internet egress",
    "nat": "NAT instance or NAT Gateway hours",
    "nat_volume": "NAT instance root volume",
    "processing": "NAT Gateway data processing",
    "public_ipv4": "public IPv4 addresses",
    "cross_az": "cross-AZ transfer to the NAT",
}


def _total(lines: Iterable[Line]) -> Decimal:
    return sum((line.monthly for line in lines), Decimal(0))


@dataclass(frozen=True)
class Option:
    key: str
    title: str  # short, for the summary and table columns
    detail: str  # the heading of its section in the table
    lines: tuple[Line, ...]

    @property
    def network(self) -> Decimal:
        return _total(self.lines)


@dataclass(frozen=True)
class CostReport:
    environment: str
    region: str
    egress_gb: Decimal
    prices_path: Path
    shared: tuple[Line, ...]  # the same under every option: brokers and internet egress
    options: tuple[Option, ...]  # the NAT instance as generated first
    assumptions: tuple[str, ...]

    @property
    def shared_total(self) -> Decimal:
        return _total(self.shared)

    def total(self, option: Option) -> Decimal:
        return option.network + self.shared_total

    def saving(self, option: Option) -> Decimal:
        """What the NAT instance as generated saves a month against `option`."""
        return self.total(option) - self.total(self.options[0])

    @property
    def as_of(self) -> tuple[date, date]:
        dates = [line.price.as_of for line in self._lines()]
        return min(dates), max(dates)

    def _lines(self) -> list[Line]:
        return [*self.shared, *(line for option in self.options for line in option.lines)]

    def table(self) -> str:
        return _table(self)

    def markdown(self) -> str:
        return _markdown(self)

    def to_json(self) -> dict[str, Any]:
        return _json(self)


PriceOf = Callable[..., Price]  # (item, name=None) -> the figure for the report's region


def parse_egress(value: Decimal | int | str) -> Decimal:
    """GB a month the brokers send to the internet: a finite, non-negative number."""
    try:
        gb = Decimal(str(value).strip()) if not isinstance(value, bool) else None
    except InvalidOperation:
        gb = None
    if gb is None or not gb.is_finite() or gb < 0:
        raise UserError(f"--egress-gb: {value!r} is not a number of GB per month; give one of 0 or more, e.g. 100")
    return gb.copy_abs()  # -0 is 0


def estimate(
    loaded: Loaded, egress_gb: Decimal | int | str = DEFAULT_EGRESS_GB, prices: PriceBook | None = None
) -> CostReport:
    """The monthly cost of `loaded`'s environment under each NAT option, at `egress_gb` GB/month."""
    topo = loaded.topology
    egress = parse_egress(egress_gb)
    book = prices if prices is not None else load_prices()
    region = topo.spec.region

    def price(item: str, name: str | None = None) -> Price:
        return book.price(region, item, name)

    shared = (*_broker_lines(topo, price), Line("egress", "internet egress", price("internet_egress_gb"), egress, "GB"))
    return CostReport(
        environment=topo.name,
        region=region,
        egress_gb=egress,
        prices_path=book.path,
        shared=shared,
        options=_options(topo, egress, price),
        assumptions=_assumptions(topo, egress, price("cross_az_gb")),
    )


def _broker_lines(topo: Topology, price: PriceOf) -> list[Line]:
    brokers = topo.spec.brokers
    n = len(topo.brokers)
    ebs = price("ebs_gb_month", VOLUME_TYPE)
    return [
        Line("brokers", f"brokers: {n} × {brokers.instance_type}", price("ec2_hourly", brokers.instance_type),
             n * HOURS_PER_MONTH, "hour"),
        Line("brokers", f"broker root volumes: {n} × {BROKER_ROOT_GB} GB {VOLUME_TYPE}", ebs,
             Decimal(n * BROKER_ROOT_GB), "GB-month"),
        Line("brokers", f"broker data volumes: {n} × {brokers.data_volume_gb} GB {VOLUME_TYPE}", ebs,
             Decimal(n * brokers.data_volume_gb), "GB-month"),
    ]


def _away(topo: Topology) -> int:
    """Brokers outside the NAT's AZ: their traffic to the NAT crosses AZs."""
    return sum(1 for b in topo.brokers if b.az != topo.public_subnet.az)


def _crossing_gb(topo: Topology, egress: Decimal) -> Decimal:
    """Egress of the brokers outside the NAT's AZ, with egress split evenly over the brokers."""
    return egress * _away(topo) / len(topo.brokers)


def _options(topo: Topology, egress: Decimal, price: PriceOf) -> tuple[Option, ...]:
    nat_az = topo.public_subnet.az
    azs = [s.az for s in topo.private_subnets]
    nat_type = topo.spec.nat.instance_type
    ipv4 = price("public_ipv4_hourly")
    gateway_hour = price("nat_gateway_hourly")
    processing = Line("processing", "NAT Gateway processing of the egress", price("nat_gateway_gb"), egress, "GB")
    crossing = _crossing_gb(topo, egress)
    cross_az = Line("cross_az", f"cross-AZ transfer: {_num(crossing)} GB, out and in",
                    price("cross_az_gb"), 2 * crossing, "GB")
    generated = " (as generated)"
    pair_spec = topo.nat_pair
    instance = Option(
        "nat_instance", "NAT instance" + ("" if pair_spec else generated),
        f"NAT instance{'' if pair_spec else ', as generated'}: {nat_type} in {nat_az}, also the SSH bastion",
        (
            Line("nat", f"NAT instance {nat_type}", price("ec2_hourly", nat_type), HOURS_PER_MONTH, "hour"),
            Line("nat_volume", f"NAT root volume: {NAT_ROOT_GB} GB {VOLUME_TYPE}", price("ebs_gb_month", VOLUME_TYPE),
                 Decimal(NAT_ROOT_GB), "GB-month"),
            Line("public_ipv4", "public IPv4: the Elastic IP", ipv4, HOURS_PER_MONTH, "hour"),
            cross_az,
        ),
    )
    # The pair: two instances, two root volumes and two public IPv4 addresses (the
    # Elastic IP on the active, the standby's own launch address); the brokers
    # cross AZs to the active exactly as to a single NAT.
    standby_az = topo.public_subnets[1].az if pair_spec else "a second AZ"
    pair = Option(
        "nat_pair", "NAT pair (hot standby)" + (generated if pair_spec else ""),
        f"NAT instance pair{', as generated' if pair_spec else ''}: {nat_type} in {nat_az} (active) and "
        f"{standby_az} (standby), both SSH bastions, failover by the instances' monitor",
        (
            Line("nat", f"NAT instances: 2 × {nat_type}", price("ec2_hourly", nat_type), 2 * HOURS_PER_MONTH, "hour"),
            Line("nat_volume", f"NAT root volumes: 2 × {NAT_ROOT_GB} GB {VOLUME_TYPE}",
                 price("ebs_gb_month", VOLUME_TYPE), Decimal(2 * NAT_ROOT_GB), "GB-month"),
            Line("public_ipv4", "public IPv4: the Elastic IP and the standby's address", ipv4,
                 2 * HOURS_PER_MONTH, "hour"),
            cross_az,
        ),
    )
    single = Option(
        "nat_gateway", "one NAT Gateway", f"one NAT Gateway, in {nat_az}",
        (
            Line("nat", "NAT Gateway", gateway_hour, HOURS_PER_MONTH, "hour"),
            processing,
            Line("public_ipv4", "public IPv4: the Gateway's Elastic IP", ipv4, HOURS_PER_MONTH, "hour"),
            cross_az,
        ),
    )
    k = len(azs)
    per_az = Option(
        "nat_gateway_per_az", f"NAT Gateway per broker AZ ({k})",
        f"a NAT Gateway in each broker AZ: {', '.join(azs)}",
        (
            Line("nat", f"NAT Gateways: {k}", gateway_hour, k * HOURS_PER_MONTH, "hour"),
            processing,
            Line("public_ipv4", f"public IPv4: {_count(k, 'Elastic IP')}", ipv4, k * HOURS_PER_MONTH, "hour"),
        ),
    )
    if pair_spec:
        return pair, single, per_az, instance
    return instance, single, per_az, pair


def _assumptions(topo: Topology, egress: Decimal, cross_az: Price) -> tuple[str, ...]:
    n = len(topo.brokers)
    nat_az = topo.public_subnet.az
    away = _away(topo)
    return (
        f"{HOURS_PER_MONTH} hours a month at on-demand list prices; no free tier, Savings Plans or reservations.",
        f"Egress: {_num(egress)} GB a month from the brokers to the internet, split evenly across the "
        f"{_count(n, 'broker')}; traffic coming back in (downloads, API responses) is not counted: it is free from the "
        f"internet, but a NAT Gateway charges processing on it too and it crosses AZs like egress does.",
        f"Cross-AZ: egress of the {away} of {_count(n, 'broker')} outside {nat_az} crosses to the NAT's AZ and is "
        f"charged twice, ${_price(cross_az.usd)}/GB out of the broker's AZ and ${_price(cross_az.usd)}/GB into "
        f"{nat_az}; a NAT Gateway in each broker AZ has no such transfer.",
        "The NAT Gateway options include no bastion: the NAT instance is also the SSH bastion, so with a "
        "Gateway SSH needs another way in (a bastion instance or SSM Session Manager).",
        "A NAT Gateway per broker AZ needs a public subnet in each of those AZs, which the generated "
        "network does not have.",
        "Not counted: T2/T3 CPU credits beyond the baseline (unlimited mode), EBS snapshots, CloudWatch, "
        "KMS requests, taxes.",
    )


# ---------------------------------------------------------------- output


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _usd(amount: Decimal) -> str:
    return f"{amount.quantize(CENT, ROUND_HALF_UP):,.2f}"


def _cents(amount: Decimal) -> float:
    return float(amount.quantize(CENT, ROUND_HALF_UP))


def _price(usd: Decimal) -> str:
    """A unit price exactly as the price book gives it: 0.0912, not 0.09."""
    return f"{usd.normalize():f}"


def _num(value: Decimal) -> str:
    """A quantity as a person writes it: 730, 12.5, and 66.67 for 66.666..."""
    if value == value.to_integral_value():
        return str(int(value))
    if value.as_tuple().exponent >= -4:
        return f"{value.normalize():f}"
    return str(value.quantize(CENT, ROUND_HALF_UP))


def _quantity(line: Line) -> str:
    unit = "hours" if line.unit == "hour" else line.unit
    return f"{_num(line.quantity)} {unit}"


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells: the first left-aligned, the rest right-aligned, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join([row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:]))]).rstrip()
        for row in rows
    ]


def _table(report: CostReport) -> str:
    letters = "ABCD"
    rows: list[tuple[str, ...]] = [("", "unit price", "quantity", "monthly")]
    sections: list[tuple[int, str]] = [(1, "Same under every option")]  # (row index, heading before it)

    def lines(items: tuple[Line, ...]) -> None:
        rows.extend(
            (f"  {line.item}", f"{_price(line.price.usd)}/{line.unit}", _quantity(line), _usd(line.monthly))
            for line in items
        )

    lines(report.shared)
    rows.append(("  subtotal", "", "", _usd(report.shared_total)))
    for letter, option in zip(letters, report.options):
        sections.append((len(rows), f"{letter}. {option.detail}"))
        lines(option.lines)
        rows.append(("  network", "", "", _usd(option.network)))
        rows.append(("  environment total", "", "", _usd(report.total(option))))
    body = _aligned(rows)
    for index, heading in reversed(sections):
        body[index:index] = [heading] if index == 1 else ["", heading]

    summary = _aligned(
        [("Summary", "network", "total", _saves(report))]
        + [
            (f"  {letter}. {option.title}", _usd(option.network), _usd(report.total(option)),
             "-" if i == 0 else _usd(report.saving(option)))
            for i, (letter, option) in enumerate(zip(letters, report.options))
        ]
    )
    first, last = report.as_of
    dates = str(first) if first == last else f"{first} to {last}"
    return "\n".join(
        [
            f"{report.environment} in {report.region}: monthly cost in USD, "
            f"{_num(report.egress_gb)} GB/month from the brokers to the internet",
            "",
            *body,
            "",
            *summary,
            "",
            "Assumptions:",
            *(textwrap.fill(a, WIDTH, initial_indent="  - ", subsequent_indent="    ") for a in report.assumptions),
            textwrap.fill(
                f"Prices: {_shown(report.prices_path)}, transcribed from AWS's public pricing pages, as of {dates}.",
                WIDTH,
            ),
        ]
    ) + "\n"


def _saves(report: CostReport) -> str:
    """The savings column: what the layout as generated saves against each other option."""
    return "NAT pair saves" if report.options[0].key == "nat_pair" else "NAT instance saves"


def _shown(path: Path) -> str:

    return spec_label(path)


def _markdown(report: CostReport) -> str:
    options = report.options
    shared = {kind: _total([line for line in report.shared if line.kind == kind]) for kind in ("brokers", "egress")}
    rows = [
        [KINDS["brokers"], *[_usd(shared["brokers"])] * len(options)],
        [f"{KINDS['egress']}, {_num(report.egress_gb)} GB", *[_usd(shared["egress"])] * len(options)],
    ]
    for kind in ("nat", "nat_volume", "processing", "public_ipv4", "cross_az"):
        cells = []
        for option in options:
            found = [line for line in option.lines if line.kind == kind]
            cells.append(_usd(_total(found)) if found else "–")
        rows.append([KINDS[kind], *cells])
    rows.append(["**network**", *(_usd(o.network) for o in options)])
    rows.append(["**environment total**", *(f"**{_usd(report.total(o))}**" for o in options)])
    rows.append([_saves(report), "–", *(_usd(report.saving(o)) for o in options[1:])])
    head = [f"{report.environment} ({report.region}), USD/month", *(o.title for o in options)]
    out = [
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(options),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *(f"- {a}" for a in report.assumptions),
    ]
    return "\n".join(out) + "\n"


def _line_json(line: Line) -> dict[str, Any]:
    return {
        "kind": line.kind,
        "item": line.item,
        "unit_price_usd": float(line.price.usd),
        "unit": line.unit,
        "quantity": float(line.quantity),
        "monthly_usd": _cents(line.monthly),
        "price_key": line.price.key,
        "as_of": line.price.as_of.isoformat(),
        "source": line.price.source,
    }


def _json(report: CostReport) -> dict[str, Any]:
    return {
        "environment": report.environment,
        "region": report.region,
        "currency": "USD",
        "hours_per_month": int(HOURS_PER_MONTH),
        "egress_gb": float(report.egress_gb),
        "prices_file": str(report.prices_path),
        "shared": {"lines": [_line_json(line) for line in report.shared], "monthly_usd": _cents(report.shared_total)},
        "options": [
            {
                "key": option.key,
                "title": option.title,
                "lines": [_line_json(line) for line in option.lines],
                "network_usd": _cents(option.network),
                "total_usd": _cents(report.total(option)),
                "nat_instance_saves_usd": _cents(report.saving(option)),
            }
            for option in report.options
        ],
        "assumptions": list(report.assumptions),
    }
