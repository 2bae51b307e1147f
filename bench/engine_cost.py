"""Workload A (issue 2): the in-memory engine's cost per step, for the seed's three-step ``simple`` flow."""

from __future__ import annotations

from collections.abc import Callable

from context import Bench, NullStore
from measure import Section, Table, alternate, num, ratio, timed
from sample_flows import Simple
from tinywf_cli import Runtime
from tinywf_cli.testing import ManualClock, MemoryRuntime

#: The TypeScript original on Node, as quoted in issue 2 (not measured here: no TypeScript toolchain).
TYPESCRIPT_US_PER_STEP = 1.2
GOAL_US_PER_STEP = 25.0
STEPS_PER_RUN = 3


def runs_of(make: Callable[[], Runtime], runs: int) -> Callable[[], float]:
    """A sample: µs per step of ``runs`` runs of ``Simple`` on a fresh runtime."""

    def sample() -> float:
        runtime = make()

        def go() -> None:
            # explicit ids: generated ones carry 32 random bits, and 10,000 of them collide ~1% of the time
            for i in range(runs):
                runtime.start(Simple, run_id=f"simple-{i}")

        return timed(go) / (runs * STEPS_PER_RUN) * 1e6

    return sample


def run(bench: Bench) -> Section:
    """Measure µs per step on ``MemoryRuntime`` and on a runtime whose store keeps nothing."""
    runs = bench.size(10_000, 1_000)
    section = Section("A. In-memory engine: cost per step (issue 2)")
    contenders = {
        "MemoryRuntime (tinywf_cli.testing: MemoryStore + ManualClock)": runs_of(MemoryRuntime, runs),
        "Runtime over a store that keeps nothing (engine alone)": runs_of(
            lambda: Runtime(NullStore(), clock=ManualClock()), runs),
    }
    results = alternate(contenders, bench.reps, warmup=True)
    table = Table(["engine", "µs per step", f"vs TypeScript ({TYPESCRIPT_US_PER_STEP} µs/step)",
                   f"vs goal ({GOAL_US_PER_STEP:.0f} µs)"])
    for name, stats in results.items():
        table.add(name, stats.cell(1), ratio(stats.median, TYPESCRIPT_US_PER_STEP),
                  ratio(stats.median, GOAL_US_PER_STEP))
    section.note(f"The seed's `simple` flow (step_begin -> step_compute with one action -> step_end, "
                 f"three `self.log` entries), {runs:,} runs per sample (ids given), {bench.reps} samples after "
                 "one dropped warm-up round, alternating; µs per step = sample time / (runs × 3). "
                 "Median (min–max).")
    section.table(table)
    section.note("The TypeScript figure is the one quoted in issue 2 (Node, same flow); it was not "
                 "measured in this run, so its ratio is indicative only.")
    memory = results[next(iter(results))]
    section.goal("≤ 25 µs per step (MemoryRuntime)", memory.median <= GOAL_US_PER_STEP,
                 f"{num(memory.median, 1)} µs per step")
    return section
