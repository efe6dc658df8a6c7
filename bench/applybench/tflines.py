"""terraform's lines, the dependencies in the state, and the observed critical path.

Owns what the bench learns from terraform itself: :class:`LineRecorder` takes
every line terraform prints (the adapter's ``on_line``) and stamps it with our own
clock and the step it belongs to; :meth:`LineRecorder.events` turns "Creating...",
"Creation complete after Ns", "Still creating..." and the like into one
:class:`ResourceEvent` per resource; :func:`state_dependencies` reads the
dependencies between instances from the state file; :func:`critical_path` walks
back from the resource that finished last through the dependency that finished
last before it started, with the gap before each.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_EVENT = re.compile(
    r"^(?P<addr>\S+): (?P<what>Creating|Destroying|Modifying|Reading|Refreshing state|"
    r"Creation complete|Destruction complete|Modifications complete|Read complete|"
    r"Still creating|Still destroying|Still modifying|Still reading)"
    r"(?:\.\.\.| after (?P<after>[0-9hms]+))"
)
_START = {"Creating": "create", "Destroying": "destroy", "Modifying": "update", "Reading": "read"}
_END = {"Creation complete": "create", "Destruction complete": "destroy",
        "Modifications complete": "update", "Read complete": "read"}


def tf_seconds(text: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+)([hms])", text):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


@dataclass
class ResourceEvent:
    addr: str
    action: str
    start: float | None = None  # seconds since the command's step began (our clock)
    end: float | None = None
    tf_reported: float | None = None  # terraform's "after Ns"
    stills: int = 0

    @property
    def duration(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


class LineRecorder:
    """Receives terraform's lines (adapter ``on_line``) and stamps them."""

    def __init__(self, echo: bool) -> None:
        self.echo = echo
        self.step = "?"
        self.t0 = time.perf_counter()
        self.lines: dict[str, list[tuple[float, str]]] = {}
        self._lock = threading.Lock()

    def begin(self, step: str) -> tuple[str, float]:
        """Stamp lines as ``step``'s from now on; returns what was current, for :meth:`restore`."""
        with self._lock:
            previous = (self.step, self.t0)
            self.step, self.t0 = step, time.perf_counter()
            self.lines.setdefault(step, [])
        return previous

    def restore(self, previous: tuple[str, float]) -> None:
        """Back to the enclosing step when a sub-step ends."""
        with self._lock:
            self.step, self.t0 = previous

    def __call__(self, line: str) -> None:
        now = time.perf_counter() - self.t0
        with self._lock:
            self.lines.setdefault(self.step, []).append((now, line))
        if self.echo:
            print(f"    [{self.step} +{now:5.1f}s] {line}", file=sys.stderr, flush=True)

    def events(self, step: str) -> dict[str, ResourceEvent]:
        out: dict[str, ResourceEvent] = {}
        for t, line in self.lines.get(step, []):
            m = _EVENT.match(line)
            if m is None:
                continue
            addr, what = m.group("addr"), m.group("what")
            if what in _START:
                out[addr] = ResourceEvent(addr, _START[what], start=t)
            elif what in _END:
                ev = out.setdefault(addr, ResourceEvent(addr, _END[what]))
                ev.end, ev.tf_reported = t, tf_seconds(m.group("after") or "")
            elif what.startswith("Still") and addr in out:
                out[addr].stills += 1
        return out


# --------------------------------------------------------------- dependencies


def _instance_addr(res: dict[str, Any], inst: dict[str, Any]) -> str:
    base = f"{res['type']}.{res['name']}"
    if res.get("mode") == "data":
        base = "data." + base
    if res.get("module"):
        base = f"{res['module']}.{base}"
    if "index_key" in inst:
        key = inst["index_key"]
        base += f"[{json.dumps(key)}]"
    return base


def state_dependencies(state_path: Path) -> dict[str, set[str]]:
    """instance address -> instance addresses it depends on (from the state file)."""
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    by_resource: dict[str, list[str]] = {}
    raw: dict[str, list[str]] = {}
    for res in state.get("resources", []):
        res_addr = f"{'data.' if res.get('mode') == 'data' else ''}{res['type']}.{res['name']}"
        for inst in res.get("instances", []):
            addr = _instance_addr(res, inst)
            by_resource.setdefault(res_addr, []).append(addr)
            raw[addr] = inst.get("dependencies", [])
    return {addr: {i for d in deps for i in by_resource.get(d, [d])} for addr, deps in raw.items()}


def _index_key(addr: str) -> str | None:
    return addr[addr.index("[") :] if addr.endswith("]") and "[" in addr else None


def critical_path(events: dict[str, ResourceEvent], deps: dict[str, set[str]], reverse: bool) -> list[tuple[ResourceEvent, float]]:
    """Observed critical path, last resource first: [(event, gap before it started)].

    ``reverse`` for destroy: X is destroyed after everything that depends on X.
    """
    done = {a: e for a, e in events.items() if e.end is not None and e.start is not None}
    if not done:
        return []
    preds: dict[str, set[str]] = {a: set() for a in done}
    for addr, ds in deps.items():
        for d in ds:
            if reverse and d in preds and addr in done:
                preds[d].add(addr)
            elif not reverse and addr in preds and d in done:
                preds[addr].add(d)
    current = max(done.values(), key=lambda e: e.end or 0.0)
    path: list[tuple[ResourceEvent, float]] = []
    while True:
        before = [done[p] for p in preds.get(current.addr, ()) if (done[p].end or 0) <= (current.start or 0) + 0.5]
        if not before:
            path.append((current, current.start or 0.0))  # gap = time since the command began
            return path
        # State dependencies are per resource, not per instance: prefer the dependency
        # instance with the same key (aws_instance.broker["b-1"] for its attachment["b-1"]).
        key = _index_key(current.addr)
        same = [e for e in before if key is not None and _index_key(e.addr) == key]
        prev = max(same or before, key=lambda e: e.end or 0.0)
        path.append((current, (current.start or 0.0) - (prev.end or 0.0)))
        current = prev
