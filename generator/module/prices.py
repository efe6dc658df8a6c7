"""The price book: AWS's unit prices per region, each figure with its date and source, read and checked from YAML.

This module owns ``generator/module/prices.yaml`` (``PRICES_FILE``; transcribed
by hand from AWS's public pricing pages, never fetched), its format (regions →
items → figures of ``usd``, ``as_of`` and ``source``, with instance and volume
types named under their item), :func:`load_prices`, which reads a whole book
and refuses the first malformed entry in one error line, and
:class:`PriceBook`, whose lookups name the key to add when a figure is missing
rather than guess. The arithmetic on its figures is :mod:`generator.module.cost`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Mapping

import yaml

from generator.base.errors import UserError
from generator.spec.regions import REGION_AZS
from generator.spec.yamltext import StrictYamlLoader, yaml_problem

PRICES_FILE = Path(__file__).resolve().with_name("prices.yaml")

NAMED_ITEMS = {"ec2_hourly": "instance type", "ebs_gb_month": "EBS volume type"}
SINGLE_ITEMS = (
    "public_ipv4_hourly",
    "nat_gateway_hourly",
    "nat_gateway_gb",
    "cross_az_gb",
    "internet_egress_gb",
)
FIGURE_KEYS = ("usd", "as_of", "source")


@dataclass(frozen=True)
class Price:
    key: str  # where it lives in the price book, e.g. regions.ap-northeast-2.nat_gateway_gb
    usd: Decimal
    as_of: date
    source: str


@dataclass(frozen=True)
class PriceBook:
    path: Path
    regions: Mapping[str, Mapping[str, Any]]  # region -> item -> Price, or -> {name: Price}

    def price(self, region: str, item: str, name: str | None = None) -> Price:
        """One figure. A missing one is an error naming the key to add, never a guess."""
        prices = self.regions.get(region)
        if prices is None:
            raise self._missing(f"regions.{region}", f"no prices for region {region}")
        found = prices.get(item)
        if name is not None:
            found = (found or {}).get(name)
            if found is None:
                raise self._missing(
                    f"regions.{region}.{item}.{name}", f"no price for {NAMED_ITEMS[item]} {name} in {region}"
                )
        elif found is None:
            raise self._missing(f"regions.{region}.{item}", f"no {item} price for {region}")
        return found

    def _missing(self, key: str, what: str) -> UserError:
        return UserError(f"{what}: add {key} (usd, as_of and source per figure) to {self.path}")


def _malformed(path: Path, detail: str) -> UserError:
    return UserError(f"{path}: malformed price book: {detail}")


def load_prices(path: Path = PRICES_FILE) -> PriceBook:
    """Read and check the whole price book; the first malformed entry is one error line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the price book: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: cannot read the price book: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _malformed(path, f"not YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict) or list(data) != ["regions"] or not isinstance(data["regions"], dict):
        raise _malformed(path, "expected one top-level key, regions, mapping each region to its prices")
    return PriceBook(path, {str(r): _region(path, str(r), body) for r, body in data["regions"].items()})


def _region(path: Path, region: str, body: Any) -> dict[str, Any]:
    key = f"regions.{region}"
    if region not in REGION_AZS:
        raise _malformed(path, f"{key}: not a region kafkanet knows (see generator/spec/regions.py)")
    if not isinstance(body, dict):
        raise _malformed(path, f"{key}: expected a mapping of price items")
    prices: dict[str, Any] = {}
    for item, value in body.items():
        where = f"{key}.{item}"
        if item in NAMED_ITEMS:
            if not isinstance(value, dict):
                raise _malformed(path, f"{where}: expected a mapping of {NAMED_ITEMS[item]} to its figure")
            prices[item] = {str(n): _figure(path, f"{where}.{n}", fig) for n, fig in value.items()}
        elif item in SINGLE_ITEMS:
            prices[item] = _figure(path, where, value)
        else:
            allowed = ", ".join([*NAMED_ITEMS, *SINGLE_ITEMS])
            raise _malformed(path, f"{where}: unknown item; allowed: {allowed}")
    return prices


def _figure(path: Path, key: str, value: Any) -> Price:
    if not isinstance(value, dict) or sorted(value) != sorted(FIGURE_KEYS):
        given = ", ".join(map(str, value)) if isinstance(value, dict) else type(value).__name__
        raise _malformed(path, f"{key}: expected exactly usd, as_of and source (got {given})")
    usd = value["usd"]
    try:
        amount = Decimal(str(usd)) if isinstance(usd, int | float | str) and not isinstance(usd, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise _malformed(path, f"{key}.usd: {usd!r} is not a price; give USD as a number, e.g. 0.059")
    as_of = value["as_of"]
    if not isinstance(as_of, date) or isinstance(as_of, datetime):
        raise _malformed(path, f"{key}.as_of: {as_of!r} is not a date; write it as YYYY-MM-DD")
    source = value["source"]
    if not isinstance(source, str) or not source.startswith("https://"):
        raise _malformed(path, f"{key}.source: {source!r} is not the https:// URL of the pricing page")
    return Price(key=key, usd=amount, as_of=as_of, source=source)
