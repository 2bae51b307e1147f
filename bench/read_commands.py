"""Workload R (issue 25): the read commands on PostgreSQL beside the file store, as whole processes.

``tinywf show RUN --json``, ``tinywf show RUN`` and ``tinywf list --json`` over stores of
1,000 and 10,000 waiting runs (and an empty one), a state directory and a PostgreSQL schema
side by side, alternating, in one run; for scale, the full path on PostgreSQL (``Runtime``,
what those commands took before the read path) for ``show --json`` and the 1,000-run list.

Each PostgreSQL store is a fresh schema on ``$TINYWF_BENCH_PG`` (default the machine's
server), dropped afterwards. Skipped with a note when no server answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from context import Bench
from measure import BENCH_DIR, Section, Stats, Table, alternate, check, num, python_command, ratio, run_process
from postgres import SERVER, Schemas, server_settings
from sample_flows import AwaitAnswer
from tinywf_cli import Runtime

#: ``show --json`` and ``list --json`` on PostgreSQL take at most this times the file store's.
RATIO_GOAL = 1.5
#: ``list`` grows linearly: its cost per run at the larger size is at most this times the smaller's.
LINEAR_GOAL = 1.25

#: The full path, as ``show --json`` and ``list --json`` took it on PostgreSQL before the read path.
FULL_SHOW = ("import sys; from tinywf_cli import Runtime; "
             "print(Runtime(sys.argv[1]).get(sys.argv[2]).model_dump_json(indent=2))")
FULL_LIST = "import sys; from tinywf_cli import Runtime; print(Runtime(sys.argv[1]).list().model_dump_json(indent=2))"


def fill(target: str, count: int) -> None:
    """Start ``count`` runs that wait for an event: ``r0`` … ``r{count-1}``."""
    runtime = Runtime(target)
    try:
        for i in range(count):
            assert runtime.start(AwaitAnswer, run_id=f"r{i}").status == "waiting"
    finally:
        runtime.close()


def run(bench: Bench) -> Section:
    """All of workload R, or a note when no PostgreSQL answers."""
    section = Section("R. The read commands on PostgreSQL beside the file store (issue 25)")
    try:
        settings = server_settings()
    except Exception as exc:  # no psycopg, or no server: say so, measure nothing
        section.note(f"**Skipped:** no PostgreSQL at {SERVER} ({' '.join(str(exc).split())}).")
        section.goal("issue 25 benchmarks", None, "no PostgreSQL")
        return section
    schemas = Schemas()
    try:
        measure(bench, schemas, section, settings)
    finally:
        schemas.drop_all()
    return section


def measure(bench: Bench, schemas: Schemas, section: Section, settings: str) -> None:
    """Fill the stores, time the commands, and write the table and the goals."""
    small, large = bench.size(1000, 100), bench.size(10000, 1000)
    python = str(python_command())
    tinywf = str(python_command().parent / "tinywf")
    stores: dict[tuple[str, int], list[str]] = {}  # (kind, runs) -> the options naming the store
    for count in (0, small, large):
        directory = str(bench.scratch.new(f"reads-{count}"))
        _, url = schemas.new(f"reads{count}")
        for target in (directory, url):
            fill(target, count)
        stores["file", count] = ["--state-dir", directory]
        stores["postgres", count] = ["--store", url]

    def process(argv: list[str]) -> Callable[[], float]:
        def sample() -> float:
            seconds, done = run_process(argv, env={"NO_COLOR": "1"}, cwd=BENCH_DIR)
            check(done, " ".join(argv[:3]))
            return seconds * 1e3
        return sample

    rows: list[tuple[str, int, str]] = [  # (what, runs in the store, command words)
        ("`tinywf show RUN --json`", small, "show r5 --json"),
        ("`tinywf show RUN`", small, "show r5"),
        ("`tinywf list --json`", 0, "list --json"),
        ("`tinywf list --json`", small, "list --json"),
        ("`tinywf list --json`", large, "list --json"),
        ("`tinywf list --status waiting --json`", large, "list --status waiting --json"),
    ]
    contenders: dict[str, Callable[[], float]] = {"`python -c pass`": process([python, "-c", "pass"])}
    for what, count, words in rows:
        for kind in ("file", "postgres"):
            argv = [tinywf, *words.split(), *stores[kind, count]]
            done = check(run_process(argv, cwd=BENCH_DIR)[1], what)  # it works (and the bytecode caches are written)
            if "--json" in words:
                json.loads(done.stdout)
            contenders[f"{what} {count} {kind}"] = process(argv)
    url_small = stores["postgres", small][1]
    contenders["full show"] = process([python, "-c", FULL_SHOW, url_small, "r5"])
    contenders["full list"] = process([python, "-c", FULL_LIST, url_small])
    results = alternate(contenders, bench.reps)

    table = Table(["command", "runs in the store", "file store, ms", "PostgreSQL, ms", "PostgreSQL / file"])
    for what, count, _ in rows:
        file_ms, pg_ms = results[f"{what} {count} file"], results[f"{what} {count} postgres"]
        table.add(what, f"{count:,}", file_ms.cell(0), pg_ms.cell(0), ratio(pg_ms.median, file_ms.median))
    full_show, full_list = results["full show"], results["full list"]
    table.add("`show RUN --json` by the full path (`Runtime.get`: engine, pydantic, psycopg)", f"{small:,}", "",
              full_show.cell(0), "")
    table.add("`list --json` by the full path (`Runtime.list`: a statement per run)", f"{small:,}", "",
              full_list.cell(0), "")
    baseline = results["`python -c pass`"]
    section.note(
        f"Whole processes, spawn to exit, {bench.reps} samples each, alternating, in one run; "
        f"`python -c pass` takes {baseline.cell(0)} ms here. Each store holds that many runs waiting "
        f"for an event (`sample_flows:AwaitAnswer`); RUN is `r5`. The state directory is on the scratch "
        f"disk; PostgreSQL is {settings}, a fresh schema per store, reached by TCP. The read path on "
        "PostgreSQL connects once through libpq itself (no psycopg, no pydantic, no engine), reads "
        "the schema's version, then one statement: the run's head and audit entries, or every head "
        "(with `--status` in its WHERE). The last two rows are the full path on the same store, as "
        "those commands ran before.")
    section.table(table)

    for what, count, _ in rows[:1] + rows[3:5]:
        file_ms, pg_ms = results[f"{what} {count} file"], results[f"{what} {count} postgres"]
        section.goal(f"{what} ({count:,} runs) on PostgreSQL ≤ {RATIO_GOAL}× the file store's",
                     pg_ms.median <= RATIO_GOAL * file_ms.median,
                     f"{ratio(pg_ms.median, file_ms.median)} ({num(pg_ms.median, 0)} vs {num(file_ms.median, 0)} ms)")
    per_run = Table(["store", f"ms per run, {small:,} runs", f"ms per run, {large:,} runs",
                     f"{large:,} / {small:,}"])
    for kind in ("file", "postgres"):
        empty: Stats = results[f"`tinywf list --json` 0 {kind}"]
        at_small = (results[f"`tinywf list --json` {small} {kind}"].median - empty.median) / small
        at_large = (results[f"`tinywf list --json` {large} {kind}"].median - empty.median) / large
        per_run.add("file store" if kind == "file" else "PostgreSQL", num(at_small, 3), num(at_large, 3),
                    ratio(at_large, at_small))
        if kind == "postgres":
            section.goal(f"`tinywf list --json` on PostgreSQL grows linearly: per run, {large:,} ≤ {LINEAR_GOAL}× "
                         f"{small:,}", at_large <= LINEAR_GOAL * at_small,
                         f"{num(at_large, 3)} vs {num(at_small, 3)} ms per run")
    section.note("`list --json`'s time per run, above the same store's when it holds no run (median minus median):")
    section.table(per_run)
