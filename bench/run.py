"""Run tinywf's benchmarks and write their Markdown tables to ``bench/RESULTS.md``.

Usage::

    python bench/run.py                        # everything, ~10 minutes
    python bench/run.py --quick                # a smoke run, under a minute
    python bench/run.py --only engine,store    # some workloads: engine, store, dbos, startup, postgres, reads,
                                               # schedules, concurrency

Installs nothing: the DBOS comparison needs ``pip install -e '.[bench]'`` and is skipped
(with a note) without it. A full run writes ``bench/RESULTS.md``; ``--quick`` and ``--only``
runs write ``bench/out/RESULTS.md`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from context import Bench
from measure import BENCH_DIR, Scratch, Section, Table, filesystem_of, machine_load

Workload = Callable[[Bench], Section]


def workloads() -> dict[str, Workload]:
    """Every workload by name, in the order they run and are reported."""
    import concurrency
    import engine_cost
    import file_store
    import postgres
    import read_commands
    import schedules
    import startup
    import versus_dbos

    return {"engine": engine_cost.run, "store": file_store.run, "dbos": versus_dbos.run, "startup": startup.run,
            "postgres": postgres.run, "reads": read_commands.run, "schedules": schedules.run,
            "concurrency": concurrency.run}


def version_of(package: str) -> str:
    """An installed distribution's version, or ``not installed``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """The commit the package was measured at, and whether ``tinywf_cli/`` had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH_DIR, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tinywf_cli"], cwd=BENCH_DIR.parent,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown commit (no git)"
    return f"commit {head}" + (" with uncommitted changes in tinywf_cli/" if dirty else "")


def environment(scratch: Scratch) -> str:
    """What the figures were measured on."""
    same = os.stat(scratch.root).st_dev == os.stat(BENCH_DIR).st_dev
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.executable})",
        f"- tinywf {version_of('tinywf')} at {source_revision()}",
        f"- DBOS Transact {version_of('dbos')}, SQLite {sqlite3.sqlite_version}, pydantic {version_of('pydantic')}",
        f"- at the start: {machine_load()} (other work on this machine widens the min–max ranges)",
        f"- scratch: {scratch.root} on {filesystem_of(scratch.root)}; "
        f"{'same device as' if same else '**not** the device of'} the repository",
    ]
    return "\n".join(lines)


def summary(sections: list[Section]) -> str:
    """Every goal of every section in one table."""
    table = Table(["workload", "goal", "result", "measured"])
    for section in sections:
        for name, met, detail in section.goals:
            verdict = "not measured" if met is None else ("met" if met else "**missed**")
            table.add(section.title.split(".")[0], name, verdict, detail)
    return table.markdown()


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the chosen workloads, print and write the report; 1 if a workload broke."""
    known = workloads()
    parser = argparse.ArgumentParser(description="tinywf benchmarks: Markdown tables of medians (min–max) and ratios.")
    parser.add_argument("--only", default=",".join(known),
                        help=f"comma-separated workloads to run (default: all of {', '.join(known)})")
    parser.add_argument("--quick", action="store_true", help="small sizes and 3 samples: a smoke run")
    parser.add_argument("--reps", type=int, default=None, help="samples per measurement (default 5; 3 with --quick)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the Markdown report")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for temporary state directories and databases (default: the system temp "
                             "folder when it is on the repository's disk, else bench/out)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    partial = args.quick or set(chosen) != set(known)
    out: Path = args.out or (BENCH_DIR / "out" / "RESULTS.md" if partial else BENCH_DIR / "RESULTS.md")
    reps = args.reps or (3 if args.quick else 5)

    scratch = Scratch(args.scratch)
    bench = Bench(quick=args.quick, reps=reps, scratch=scratch)
    machine = environment(scratch)
    sections: list[Section] = []
    broken = 0
    started = time.perf_counter()
    try:
        for name in chosen:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            begun = time.perf_counter()
            try:
                section = known[name](bench)
            except Exception:
                broken += 1
                section = Section(f"{name}: the workload failed")
                section.note("```\n" + traceback.format_exc().rstrip() + "\n```")
            print(f"  {name}: {time.perf_counter() - begun:.1f} s", file=sys.stderr, flush=True)
            sections.append(section)
    finally:
        scratch.close()

    machine += f"\n- at the end: {machine_load()}"
    kind = "quick smoke run (small sizes; not for quoting)" if args.quick else "full run"
    parts = [
        "# tinywf benchmarks",
        f"Produced by `python bench/run.py{' --quick' if args.quick else ''}"
        f"{' --only ' + ','.join(chosen) if set(chosen) != set(known) else ''}` — {kind}, "
        f"{reps} samples per figure, {time.perf_counter() - started:.0f} s in all. Every cell is "
        "median (min–max); every ratio is against a baseline measured in the same run.",
        machine,
        "## Goals",
        summary(sections),
        *(section.markdown() for section in sections),
    ]
    report = "\n\n".join(parts) + "\n"
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
