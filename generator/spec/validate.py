"""Plain data to a valid :class:`Spec`, or every problem at once.

Shape and field-local rules come from the pydantic models; rules that relate
several fields live in :func:`cross_checks`. Either way the caller gets one
``SpecError`` carrying one line per problem, each naming the field and the fix.
Pure: the caller reads the file (:mod:`generator.module.loaded`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from generator.base.errors import SpecError
from generator.spec.model import Spec
from generator.spec.regions import REGION_AZS
from generator.spec.topology import SubnetPlanError, plan_subnets


def validate_spec(data: Any, source: str, more_checks: Iterable[Callable[[Spec], list[str]]] = ()) -> Spec:
    """Validate parsed YAML; every problem line starts with ``source`` (the spec's path).

    ``more_checks`` are the caller's own rules (e.g. that a key file exists),
    reported together with the cross-field ones.
    """
    if data is None:
        raise SpecError(f"{source}: the spec is empty; copy environments/ttareungyi.yaml and edit it")
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the spec must be a YAML mapping of keys (name, region, ...), not a {type(data).__name__}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(*(f"{source}: {p}" for p in _problems_from(exc))) from None
    problems = cross_checks(spec)
    for check in more_checks:
        problems += check(spec)
    if problems:
        raise SpecError(*(f"{source}: {p}" for p in problems))
    return spec


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Allowed keys at `loc` (for the unknown-key message)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args]
        for cand in candidates:
            inner = getattr(cand, "__args__", ()) or ()
            for c in (cand, *inner):
                if isinstance(c, type) and issubclass(c, BaseModel):
                    current = c
                    break
            else:
                continue
            break
        else:
            return []
    return list(current.model_fields) if isinstance(current, type) else []


def _problems_from(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # union/annotated validators add the type name as a loc element; drop those
        loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
        where = _format_loc(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _model_keys(Spec, loc)
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            problems.append(f"{where}: unknown key{hint}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        elif kind == "value_error":
            problems.append(f"{where}: {err['ctx']['error']}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            problems.append(f"{where}: {err['msg'].lower()}{shown}")
    return problems


def cross_checks(spec: Spec) -> list[str]:
    """Rules across fields; every problem is reported, not just the first."""

    problems: list[str] = []
    letters = REGION_AZS[spec.region]
    zone = lambda a: f"{spec.region}{a}"  # noqa: E731
    nat = spec.nat
    if nat.is_pair:
        if "az" in nat.model_fields_set:
            problems.append("nat.az: give either nat.az (one NAT) or nat.azs (a pair), not both; drop nat.az")
        if nat.subnet_cidr is not None:
            problems.append(
                f"nat.subnet_cidr: a NAT pair has a public subnet per AZ; write nat.subnet_cidrs: "
                f"{{{nat.az_letters[0]}: {nat.subnet_cidr}}} instead"
            )
        for i, letter in enumerate(nat.az_letters):
            if letter not in letters:
                problems.append(
                    f"nat.azs[{i}]: {zone(letter)} does not exist; {spec.region} has AZs {', '.join(letters)}"
                )
        for letter in nat.subnet_cidrs:
            if letter not in nat.az_letters:
                problems.append(f"nat.subnet_cidrs.{letter}: no NAT in AZ {letter!r}; list it in nat.azs or drop it")
    else:
        if nat.az not in letters:
            problems.append(f"nat.az: {zone(nat.az)} does not exist; {spec.region} has AZs {', '.join(letters)}")
        if nat.subnet_cidrs:
            problems.append(
                "nat.subnet_cidrs: is for a NAT pair (nat.azs); for one NAT write nat.subnet_cidr"
            )
    for i, letter in enumerate(spec.brokers.azs):
        if letter not in letters:
            problems.append(
                f"brokers.azs[{i}]: {zone(letter)} does not exist; {spec.region} has AZs {', '.join(letters)}"
            )
    for letter in spec.brokers.subnet_cidrs:
        if letter not in spec.brokers.azs:
            problems.append(f"brokers.subnet_cidrs.{letter}: no broker AZ {letter!r}; list it in brokers.azs or drop it")
    count = spec.brokers.broker_count
    seen: set[str] = set()
    for i, topic in enumerate(spec.kafka.topics):
        if topic.name in seen:
            problems.append(f"kafka.topics[{i}].name: topic {topic.name!r} is defined twice")
        seen.add(topic.name)
        if topic.replication_factor is not None and topic.replication_factor > count:
            problems.append(
                f"kafka.topics[{i}].replication_factor: {topic.replication_factor} is more than the "
                f"{count} broker(s); lower it or raise brokers.count"
            )
    if spec.kafka.port == spec.kafka.controller_port:
        problems.append(
            f"kafka.controller_port: {spec.kafka.controller_port} is also kafka.port; give the KRaft controller its own port"
        )
    if spec.state is not None and spec.state.region is not None and spec.state.region not in REGION_AZS:
        problems.append(f"state.region: unknown region {spec.state.region!r}")
    if not problems:
        try:
            plan_subnets(spec)
        except SubnetPlanError as exc:
            problems.extend(exc.problems)
    return problems
