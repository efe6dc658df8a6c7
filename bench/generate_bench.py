#!/usr/bin/env python3
"""Time generating the seed module: in-process (load+render, and full generate) and via the CLI.

Prints median and best of N runs. Usage: .venv/bin/python bench/generate_bench.py [-n 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.module.generate import generate, render_for  # noqa: E402
from generator.module.loaded import load

SEED = ROOT / "environments" / "ttareungyi.yaml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4rnp7Wz1qfYQv6mOQ8r7CqSe3kX0bTz7Qm8Xh0Jv1P bench"


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def report(label: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{label:<44} median {statistics.median(ms):8.1f} ms   best {min(ms):8.1f} ms   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seed"
        report("load + validate + carve (in-process)", timed(lambda: load(SEED), n))
        loaded = load(SEED)
        report("render 12 files (in-process)", timed(lambda: render_for(loaded, KEY), n))
        generate(SEED, out)  # first run creates the key; later runs rewrite nothing
        report("generate, files unchanged (in-process)", timed(lambda: generate(SEED, out), n))

        def fresh() -> None:
            target = Path(tempfile.mkdtemp(dir=tmp))
            generate(SEED, target)

        report("generate into an empty dir (in-process)", timed(fresh, n))
        cli = [str(ROOT / ".venv" / "bin" / "kafkanet"), "generate", str(SEED), "--out", str(out)]
        report("kafkanet generate (CLI, new process)", timed(lambda: subprocess.run(cli, check=True, capture_output=True), max(3, n // 4)))


if __name__ == "__main__":
    main()
