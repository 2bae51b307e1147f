"""Workload S (issue 21): what schedules add to ``tick`` when none is due.

``tick`` with 1,000 schedules and 10,000 waiting runs, none due, beside the same ``tick`` over
the same 10,000 runs without schedules (a copy of the state directory, measured in the same
run, samples alternating). Each sample is ``Runtime(state_dir, clock=ManualClock(t)).tick()``
by a fresh runtime, as a cron job's process makes it (process start-up is not counted: it is
the same with or without schedules, and ``bench/startup.py`` measures it).

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


def run(bench: Bench) -> Section:
    """Workload S."""
    section = Section("S. Schedules (issue 21)")
    runs, schedules = bench.size(10_000, 1_000), bench.size(1_000, 100)
    plain = bench.scratch.new("runs")
    creator = Runtime(plain, clock=ManualClock(START))
    for _ in range(runs):
        creator.start(Napper, input={"interval": NEVER})
    with_schedules = plain.parent / f"{plain.name}-schedules"
    shutil.copytree(plain, with_schedules)
    scheduler = Runtime(with_schedules, clock=ManualClock(START))
    for i in range(schedules):
        spec = Schedule(f"s{i:04d}", f"{i % 60} {i % 24} * * *", tz=ZONES[i % len(ZONES)])
        scheduler.add_schedule(spec.name, Napper, spec.cron, tz=spec.tz, input={"interval": NEVER})
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
                 "(reading its small document).")
    section.table(table)
    section.goal(f"tick, {schedules:,} schedules and {runs:,} runs, none due: < {IDLE_GOAL:g} s",
                 both.median < IDLE_GOAL, f"{num(both.median, 4)} s ({ratio(both.median, alone.median)} the runs "
                                          "alone)")
    return section
