"""The parts of bench/apply_bench.py, one concern a module; apply_bench.py is the entry point.

    procfs      CPU of processes and of the host from /proc, the provider sampler
    tflines     terraform's lines per resource, state dependencies, critical path
    meter       what a step and a run record, and how a step is metered
    cleanup     stopping what a run started, and finding what it left behind
    cycles      the two ways of driving a cycle: --via steps and --via lifecycle
    runner      one run: its spec copy, the hooks into lifecycle, the analysis
    report      the tables printed at the end

Each module imports only those above it in this list (and generator, localvpc);
none of them touches sys.path: the entry point puts the repository root and bench/ on it.
"""
