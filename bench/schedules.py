"""Workload S (issue 21): what schedules add to ``tick`` when none is due.

``tick`` with 1,000 schedules and 10,000 waiting runs, none due, beside the same ``tick`` over
the same 10,000 runs without schedules (a copy of the state directory, or of the PostgreSQL
schema, measured in the same run, samples alternating). Each sample is
``Runtime(target, clock=ManualClock(t)).tick()`` by a fresh runtime, as a cron job's process
makes it (process start-up is not counted: it is the same with or without schedules, and
``bench/startup.py`` measures it).

    python bench/run.py --only schedules --out bench/RESULTS-schedules.md
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from context import Bench
from measure import Section, Stats, Table, alternate, num, ratio, timed
from sample_flows import Napper
from tinywf_cli import Runtime, Schedule
from tinywf_cli.testing import ManualClock

IDLE_GOAL = 0.2
START = datetime.fromisoformat("2026-01-01T00:00:00+00:00")
NEVER = 10 * 365 * 86400.0
ZONES = ("UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo")


def ticker(folder: Path, now: datetime) -> Callable[[], float]:
    """One sample: a fresh runtime's ``tick`` at ``now``; checks that nothing was due."""

    def go() -> float:
        runtime = Runtime(folder, clock=ManualClock(now))
        seconds = timed(lambda: check(runtime.tick()))
        return seconds

    return go


def check(report: object) -> None:
    due = getattr(report, "due", None)
    assert due == 0, f"a run was due: {report}"


def add_schedules(runtime: Runtime, count: int) -> None:
    """``count`` daily schedules, spread over the hours and four zones."""
    for i in range(count):
        spec = Schedule(f"s{i:04d}", f"{i % 60} {i % 24} * * *", tz=ZONES[i % len(ZONES)])
        runtime.add_schedule(spec.name, Napper, spec.cron, tz=spec.tz, input={"interval": NEVER})


def run(bench: Bench) -> Section:
    """Workload S."""
    section = Section("S. Schedules (issue 21)")
    on_files(bench, section)
    on_postgres(bench, section)
    return section


def on_files(bench: Bench, section: Section) -> None:
    """S1: a state directory."""
    runs, schedules = bench.size(10_000, 1_000), bench.size(1_000, 100)
    plain = bench.scratch.new("runs")
    creator = Runtime(plain, clock=ManualClock(START))
    for _ in range(runs):
        creator.start(Napper, input={"interval": NEVER})
    with_schedules = plain.parent / f"{plain.name}-schedules"
    shutil.copytree(plain, with_schedules)
    add_schedules(Runtime(with_schedules, clock=ManualClock(START)), schedules)
    now = START + timedelta(seconds=30)  # every slot lies ahead: nothing is due
    results = alternate({"runs": ticker(plain, now), "schedules": ticker(with_schedules, now)}, bench.reps,
                        warmup=True)
    alone, both = results["runs"], results["schedules"]
    extra = Stats([b - a for a, b in zip(alone.samples, both.samples, strict=True)])
    table = Table(["tick, none due", "seconds", "vs runs alone", "goal"])
    table.add(f"{runs:,} waiting runs", alone.cell(4), "1.00×", "")
    table.add(f"{runs:,} waiting runs and {schedules:,} schedules", both.cell(4), ratio(both.median, alone.median),
              f"< {IDLE_GOAL:g} s")
    section.note(f"**S1. `tick` with schedules, none due.** {runs:,} runs of a flow asleep for 10 years, and "
                 f"{schedules:,} schedules (daily, spread over the hours and four zones) whose next slots lie "
                 f"ahead, in a state directory; beside a copy of the same directory without the schedules. "
                 f"Each sample is a fresh `Runtime(state_dir, clock=ManualClock(t)).tick()` in this process, "
                 f"the two alternating, {bench.reps} samples each after one warm-up. A schedule costs "
                 f"{num(extra.median / schedules * 1e6, 1)} µs of a tick that finds nothing due "
                 "(listing the marker beside its document: no document is read when none is due).")
    section.table(table)
    section.goal(f"tick, {schedules:,} schedules and {runs:,} runs, none due: < {IDLE_GOAL:g} s",
                 both.median < IDLE_GOAL, f"{num(both.median, 4)} s ({ratio(both.median, alone.median)} the runs "
                                          "alone)")


def on_postgres(bench: Bench, section: Section) -> None:
    """S2: the same on PostgreSQL (skipped, with a note, when no server answers)."""
    try:
        import psycopg

        from postgres import SERVER, Schemas

        with psycopg.connect(SERVER, connect_timeout=3, autocommit=True):
            pass
    except Exception as exc:  # no driver, no server: say so
        section.note(f"**S2. PostgreSQL**: not measured ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}).")
        return
    runs, schedules = bench.size(10_000, 1_000), bench.size(1_000, 100)
    schemas = Schemas()
    try:
        plain_schema, plain = schemas.new("sched_runs")
        both_schema, both_url = schemas.new("sched_both")
        creator = Runtime(plain, clock=ManualClock(START))
        for _ in range(runs):
            creator.start(Napper, input={"interval": NEVER})
        creator.close()
        scheduler = Runtime(both_url, clock=ManualClock(START))
        add_schedules(scheduler, schedules)
        scheduler.close()
        with psycopg.connect(SERVER, autocommit=True) as conn:  # the same runs in the second schema
            for table in ("runs", "journal"):
                conn.execute(f'INSERT INTO "{both_schema}".{table} SELECT * FROM "{plain_schema}".{table}')
        now = START + timedelta(seconds=30)
        results = alternate({"runs": pg_ticker(plain, now), "schedules": pg_ticker(both_url, now)}, bench.reps,
                            warmup=True)
        alone, both = results["runs"], results["schedules"]
        table = Table(["tick, none due (PostgreSQL)", "seconds", "vs runs alone", "goal"])
        table.add(f"{runs:,} waiting runs", alone.cell(4), "1.00×", "")
        table.add(f"{runs:,} waiting runs and {schedules:,} schedules", both.cell(4),
                  ratio(both.median, alone.median), f"< {IDLE_GOAL:g} s")
        section.note(f"**S2. The same on PostgreSQL** (a local server over loopback): {runs:,} runs and "
                     f"{schedules:,} schedules in one schema, the same runs without schedules in another. Each "
                     "sample is a fresh runtime's `tick` (its connection opened first, not timed); finding "
                     "the due schedules is one indexed statement.")
        section.table(table)
        section.goal(f"tick on PostgreSQL, {schedules:,} schedules and {runs:,} runs, none due: < {IDLE_GOAL:g} s",
                     both.median < IDLE_GOAL, f"{num(both.median, 4)} s")
    finally:
        schemas.drop_all()


def pg_ticker(url: str, now: datetime) -> Callable[[], float]:
    """One sample on PostgreSQL: a fresh runtime (connected before the clock starts) ticks at ``now``."""

    def go() -> float:
        runtime = Runtime(url, clock=ManualClock(now))
        runtime.store.run_ids()  # connect (and check the schema) outside the timing
        try:
            return timed(lambda: check(runtime.tick()))
        finally:
            runtime.close()

    return go
