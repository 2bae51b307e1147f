"""Workload D (issue 4): start-up of the ``tinywf`` command as whole processes, beside ``python -c pass``."""

from __future__ import annotations

import json

from context import Bench
from measure import (
    BENCH_DIR,
    Section,
    Stats,
    Table,
    alternate,
    check,
    num,
    python_command,
    ratio,
    run_process,
    tinywf_command,
)
from tinywf_cli import Runtime

SHOW_GOAL_MS = 150.0


def run(bench: Bench) -> Section:
    """Time ``tinywf --version``, ``tinywf show RUN`` and ``tinywf show RUN --json``; skip without the command."""
    section = Section("D. Start-up of the tinywf command (issue 4)")
    command, about = tinywf_command()
    python = str(python_command())
    reps = max(bench.reps, 10 if not bench.quick else 3)
    state = bench.scratch.new("startup")
    run_id = Runtime(state).start(f"{BENCH_DIR / 'sample_flows.py'}:Simple").run_id
    env = {"TINYWF_STATE_DIR": str(state), "NO_COLOR": "1"}

    def process(argv: list[str], what: str) -> float:
        seconds, done = run_process(argv, env=env, cwd=state)
        check(done, what)
        return seconds * 1e3

    contenders = {
        "`python -c pass` (baseline)": lambda: process([python, "-c", "pass"], "python -c pass"),
        "`python -c 'from tinywf_cli import Runtime'`": lambda: process(
            [python, "-c", "from tinywf_cli import Runtime"], "import"),
    }
    if command is not None:
        tinywf = str(command)
        contenders["`tinywf --version`"] = lambda: process([tinywf, "--version"], "tinywf --version")
        contenders["`tinywf show RUN`"] = lambda: process([tinywf, "show", run_id], "tinywf show")
        contenders["`tinywf show RUN --json`"] = lambda: process([tinywf, "show", run_id, "--json"], "show --json")
        _, done = run_process([tinywf, "show", run_id, "--json"], env=env, cwd=state)
        json.loads(check(done, "tinywf show --json").stdout)
        for argv in ([tinywf, "show", run_id], [tinywf, "--version"]):  # bytecode caches written, as after a first run
            check(run_process(argv, env=env, cwd=state)[1], "warm-up")
    results = alternate(contenders, reps)
    baseline = results["`python -c pass` (baseline)"]
    table = Table(["process", "ms", "vs `python -c pass`", "minus `python -c pass`"])
    for name, stats in results.items():
        table.add(name, stats.cell(1), ratio(stats.median, baseline.median), num(stats.median - baseline.median, 1))
    section.note(f"Whole processes, spawn to exit, {reps} samples each, alternating. RUN is a finished run of "
                 "the seed's `simple` flow in a fresh state directory (`$TINYWF_STATE_DIR`). Python's bytecode "
                 "caches are kept, as after any first run (`PYTHONDONTWRITEBYTECODE` unset for the children, "
                 "each command run once before). `show` reads the record without "
                 "pydantic or the engine (`tinywf_cli.reading`); rich is imported for people only.")
    section.table(table)
    if command is None:
        section.note(f"**Skipped the `tinywf` rows:** {about}.")
        section.goal(f"`tinywf show` ≤ {SHOW_GOAL_MS:.0f} ms", None, "the `tinywf` command is not usable yet")
        return section
    section.note(f"`tinywf --version` says: {about}")
    for name in ("`tinywf show RUN`", "`tinywf show RUN --json`"):
        shown: Stats = results[name]
        section.goal(f"{name} ≤ {SHOW_GOAL_MS:.0f} ms", shown.median <= SHOW_GOAL_MS, f"{num(shown.median, 1)} ms")
    return section
