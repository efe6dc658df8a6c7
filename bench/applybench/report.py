"""The tables printed at the end of a bench: per step, per resource, per provider process.

Owns the report and nothing else: :func:`print_report` prints, from the runs'
:class:`~applybench.meter.RunResult` records and the provider-start probe, the
median per step (sub-steps indented under their step) and per group of steps,
the cycle totals, each resource's start and duration with the critical path of
every run, the provider processes of run 1, and what went wrong in which run.
It measures and runs nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics

from .meter import RunResult


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def step_names(results: list[RunResult]) -> list[str]:
    """Step names in the order they ran, each sub-step right after its enclosing step."""
    top: list[str] = []
    subs: dict[str, list[str]] = {}
    for r in results:
        for s in r.steps:
            group = subs.setdefault(s.parent, []) if s.parent else top
            if s.name not in group:
                group.append(s.name)
    out: list[str] = []

    def add(name: str) -> None:
        out.append(name)
        for sub in subs.get(name, []):
            add(sub)

    for name in top:
        add(name)
    return out


# Sums of steps (top-level names; a name a run does not have counts 0).
GROUPS = {
    "apply: terraform part": ("provider start (apply)", "terraform init", "terraform plan", "terraform apply",
                              "inventory", "provider stop (apply)"),
    "destroy: terraform part": ("provider start (destroy)", "destroy init", "terraform destroy",
                                "provider stop (destroy)"),
}


def print_report(results: list[RunResult], probe: list[tuple[float, float]], args: argparse.Namespace) -> None:
    n = len(results)
    print(f"\n== steps: median of {n} run(s) (wall / CPU of terraform+providers / CPU of moto) ==")
    print("   starts: provider processes terraform started + shared ones (generator/terraform/provider.py)")
    print(f"{'step':<44}{'wall s':>8}{'tf CPU s':>10}{'prov CPU':>10}{'starts':>8}{'moto CPU':>10}{'host busy':>11}{'load1':>7}")
    for name in step_names(results):
        recs = [s for r in results for s in r.steps if s.name == name]
        label = ("  " * name.count(" / ")) + name.rpartition(" / ")[2]
        starts = f"{med([s.provider_starts for s in recs]):.0f}+{med([s.shared_starts for s in recs]):.0f}"
        print(f"{label:<44}{med([s.wall for s in recs]):8.1f}{med([s.tf_cpu for s in recs]):10.1f}"
              f"{med([s.provider_cpu for s in recs]):10.1f}{starts:>8}"
              f"{med([s.moto_cpu for s in recs]):10.2f}{med([s.host_busy_cores for s in recs]):9.2f}/{os.cpu_count()}"
              f"{med([s.load_end for s in recs]):7.2f}" + (f"  {recs[0].note}" if any(s.note for s in recs) else ""))
    print("(indented: sub-steps of the step above, already inside its figures)")
    for label, members in GROUPS.items():
        walls = [sum(s.wall for s in r.steps if s.name in members) for r in results]
        cpus = [sum(s.tf_cpu for s in r.steps if s.name in members) for r in results]
        print(f"{label:<44}{med(walls):8.1f}{med(cpus):10.1f}   (runs: {', '.join(f'{w:.1f}' for w in walls)})")
    walls = [sum(s.wall for s in r.steps if not s.parent) for r in results]
    cpus = [sum(s.tf_cpu + s.moto_cpu for s in r.steps if not s.parent) for r in results]
    print(f"{'cycle: sum of steps (CPU incl. moto)':<44}{med(walls):8.1f}{med(cpus):10.1f}   "
          f"(runs: {', '.join(f'{w:.1f}' for w in walls)})")
    clocks = [r.cycle_wall for r in results if r.cycle_wall is not None]
    if clocks:
        print(f"{'cycle: wall clock':<44}{med(clocks):8.1f}   (runs: {', '.join(f'{w:.1f}' for w in clocks)})")

    for title, attr, path_attr in (("apply", "apply_events", "apply_path"), ("destroy", "destroy_events", "destroy_path")):
        addrs = sorted({a for r in results for a in getattr(r, attr)},
                       key=lambda a: med([getattr(r, attr)[a]["start"] or 0 for r in results if a in getattr(r, attr)]))
        if not addrs:
            continue
        print(f"\n== {title}: per resource (median over runs; times from the command's start, our clock) ==")
        print(f"{'resource':<46}{'start':>7}{'dur s':>7}{'tf says':>8}{'stills':>7}")
        for a in addrs:
            evs = [getattr(r, attr)[a] for r in results if a in getattr(r, attr)]
            durs = [e["end"] - e["start"] for e in evs if e["end"] is not None and e["start"] is not None]
            print(f"{a:<46}{med([e['start'] or 0 for e in evs]):7.1f}{med(durs):7.1f}"
                  f"{med([e['tf_reported'] or 0 for e in evs]):8.0f}{med([e['stills'] for e in evs]):7.0f}")
        for i, r in enumerate(results):
            path = getattr(r, path_attr)
            if not path:
                continue
            busy = sum(p["duration"] or 0 for p in path)
            gaps = sum(p["gap"] for p in path)
            step = next((s for s in r.steps if s.name == f"terraform {title}"), None)
            tail = (step.wall - (path[-1]["end"] or 0)) if step else float("nan")
            print(f"critical path, run {i + 1} ({busy:.1f} s in resources, {gaps:.1f} s before/between them, "
                  f"{tail:.1f} s after the last one):")
            for p in path:
                print(f"   +{p['gap']:5.1f} gap  {p['addr']:<44} {p['start']:6.1f} -> {p['end']:6.1f}  ({p['duration']:.1f} s)")

    print("\n== provider processes (per step, run 1) ==")
    for s in results[0].steps:
        if s.providers:
            desc = ", ".join(f"pid {p['pid']} {p['kind']} {p['seen_from']:.1f}-{p['seen_to']:.1f}s {p['cpu']:.1f}s CPU"
                             for p in s.providers)
            print(f"{s.name:<44}{desc}")
    if probe:
        print(f"one provider start as terraform pays it (terraform providers schema -json): wall "
              f"{med([w for w, _ in probe]):.1f} s, CPU {med([c for _, c in probe]):.1f} s (median of {len(probe)})")
    by_terraform = med([sum(s.provider_starts for s in r.steps if not s.parent) for r in results])
    shared = med([sum(s.shared_starts for s in r.steps if not s.parent) for r in results])
    print(f"provider process starts per apply+plan+destroy cycle: {by_terraform:.0f} by terraform + {shared:.0f} shared")

    for i, r in enumerate(results):
        flags = []
        if r.second_plan_changes:
            flags.append("second plan NOT clean")
        if r.leftovers:
            flags.append(f"leftovers: {', '.join(r.leftovers)}")
        if r.left_behind:
            flags.append(f"left behind (removed now): {', '.join(r.left_behind)}")
        if r.error:
            flags.append(f"error: {r.error}")
        if flags:
            print(f"run {i + 1} ({r.env}): " + "; ".join(flags))
