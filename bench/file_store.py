"""Workload B (issue 3): the file store — flat checkpoints, cost per durable action, and ``tick``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from context import Bench, frames_written
from disk import append_floor_seconds, floor_seconds
from measure import Section, Stats, Table, alternate, num, ratio, timed
from sample_flows import Loop, ManyActions, Napper
from tinywf_cli import RunDocument, Runtime
from tinywf_cli.stores.files.store import FileStore
from tinywf_cli.testing import ManualClock

FLAT_GOAL = 1.3
FLOOR_GOAL = 2.0
TICK_DUE_GOAL = 1.0
TICK_IDLE_GOAL = 0.2
START = "2026-01-01T00:00:00Z"
NEVER = 10 * 365 * 86400.0


def files_of(state_dir: Path, run_id: str) -> tuple[bytes, int]:
    """A run's record bytes and the size of its journal."""
    store = FileStore(state_dir)
    return store.record_path(run_id).read_bytes(), store.journal_path(run_id).stat().st_size


@dataclass
class Written:
    """What a tinywf run wrote: its record, and the median size of the frames it appended."""

    record: bytes = b""
    frame: int = 0


class LoopSample:
    """Runs of the looping flow on a fresh state directory; per-step costs in ms, whole and by window."""

    def __init__(self, bench: Bench, n: int, window: int) -> None:
        self.bench, self.n, self.window = bench, n, window
        self.whole, self.first, self.last = Stats(), Stats(), Stats()
        self.record_bytes = 0
        self.journal_bytes = 0

    def __call__(self) -> float:
        """One run; returns ms per step over the whole run."""
        n, w = self.n, self.window
        folder = self.bench.scratch.new(f"loop{n}")
        runtime = Runtime(folder)
        marks = [0, w, n - 1 - w, n - 1]
        result: list[RunDocument] = []
        seconds = timed(lambda: result.append(runtime.start(Loop, input={"n": n, "marks": marks})))
        run = result[0]
        assert run.status == "finished", run.error
        stamps = {int(k): v for k, v in run.state["stamps"].items()}
        self.whole.add(seconds / n * 1e3)
        self.first.add((stamps[w] - stamps[0]) / w * 1e3)
        self.last.add((stamps[n - 1] - stamps[n - 1 - w]) / w * 1e3)
        record, self.journal_bytes = files_of(folder, run.run_id)
        self.record_bytes = len(record)
        return self.whole.samples[-1]


def flat_checkpoints(bench: Bench, section: Section) -> None:
    """B1: per-step cost of a run that loops one step 5,000 times, against 100 times."""
    small, large, window = 100, bench.size(5_000, 500), 100
    runs = {f"{small:,} visits": LoopSample(bench, small, 50), f"{large:,} visits": LoopSample(bench, large, window)}
    alternate(dict(runs.items()), bench.reps)
    short, long = runs[f"{small:,} visits"], runs[f"{large:,} visits"]
    table = Table(["run", "ms per step, whole run", "ms per step, first window", "ms per step, last window",
                   "record bytes", "journal bytes"])
    for name, sample in runs.items():
        table.add(name, sample.whole.cell(3), sample.first.cell(3), sample.last.cell(3),
                  f"{sample.record_bytes:,}", f"{sample.journal_bytes:,}")
    section.note(f"**B1. Flat checkpoints.** One step visited N times, one action per visit (each visit "
                 f"commits its action as one frame appended to the run's wal; the transition rides with the "
                 f"next frame). Windows: the first and last {window} visits of "
                 f"the long run (50 of the short one), timed by the action itself. {bench.reps} samples each, "
                 "alternating.")
    section.table(table)
    whole = long.whole.median / short.whole.median
    tail = long.last.median / short.whole.median
    section.note(f"Ratios: whole run {large:,} vs {small}: {ratio(long.whole.median, short.whole.median)}; "
                 f"last {window} visits of {large:,} vs whole {small}: {ratio(long.last.median, short.whole.median)}; "
                 f"last vs first window of the long run: {ratio(long.last.median, long.first.median)}.")
    section.goal(f"per step at {large:,} within {FLAT_GOAL}× of at {small}", max(whole, tail) <= FLAT_GOAL,
                 f"whole {whole:.2f}×, last window {tail:.2f}×")


def durable_action(bench: Bench, section: Section) -> None:
    """B2: one durable action against the disk's floor, measured in the same run."""
    count = bench.size(1_000, 200)
    seen = Written()

    def tinywf() -> float:
        folder = bench.scratch.new("actions")
        runtime = Runtime(folder)
        result: list[RunDocument] = []
        with frames_written() as sizes:
            seconds = timed(lambda: result.append(runtime.start(ManyActions, input={"n": count})))
        run = result[0]
        assert run.status == "finished", run.error
        seen.record, _ = files_of(folder, run.run_id)
        seen.frame = sorted(sizes)[len(sizes) // 2]
        return seconds / count * 1e3

    def floor() -> float:
        frame = b"x" * (seen.frame - 1) + b"\n"
        with bench.scratch.folder("floor") as folder:
            return append_floor_seconds(folder, frame, count) * 1e3

    def replace() -> float:
        with bench.scratch.folder("floor") as folder:
            return floor_seconds(folder, seen.record, count) * 1e3

    results = alternate({"tinywf": tinywf, "floor": floor, "replace": replace}, bench.reps)
    action, disk, replaced = results["tinywf"], results["floor"], results["replace"]
    table = Table(["what", "ms each", "vs append floor"])
    table.add(f"tinywf: one durable action (one step, {count:,} actions, FileStore)", action.cell(3),
              ratio(action.median, disk.median))
    table.add(f"append floor: a {seen.frame:,}-byte frame appended + fdatasync (open, write, sync, close)",
              disk.cell(3), "1.00×")
    table.add(f"for scale: atomic replace of the run's {len(seen.record):,}-byte record "
              "(temp write, fsync, rename, dir fsync)", replaced.cell(3), ratio(replaced.median, disk.median))
    section.note(f"**B2. A durable action against the disk's floor.** {bench.reps} samples of {count:,} each, "
                 "alternating. Each action's result is one frame appended to the run's wal and fdatasync'ed; "
                 "the tinywf figure includes the run's create and finish (record rewrites) and a record "
                 "rewrite every 128 frames, spread over the actions. The floor is the same append of the "
                 "median frame's bytes with nothing else.")
    section.table(table)
    section.goal(f"per durable action ≤ {FLOOR_GOAL:.0f}× the append floor", action.median <= FLOOR_GOAL * disk.median,
                 f"{num(action.median, 3)} ms vs floor {num(disk.median, 3)} ms = "
                 f"{ratio(action.median, disk.median)}")


def ticker(folder: Path, now: datetime, expect: int) -> Callable[[], None]:
    """``tick`` at ``now`` by a fresh runtime, as a cron job would; checks that ``expect`` runs were due."""

    def go() -> None:
        report = Runtime(folder, clock=ManualClock(now)).tick()
        assert report.due == expect and len(report.advanced) == expect, report.model_dump_json()

    return go


def tick_over_waiting_runs(bench: Bench, section: Section) -> None:
    """B3: ``tick`` over 2,000 waiting runs, with 20 due and with none due."""
    total, due = bench.size(2_000, 200), bench.size(20, 2)
    folder = bench.scratch.new("tick")
    clock = ManualClock(START)
    creator = Runtime(folder, clock=clock)

    def create() -> None:
        for i in range(total):
            creator.start(Napper, input={"interval": 60.0 if i % (total // due) == 0 else NEVER})

    setup = timed(create)
    due_times, idle_times = Stats(), Stats()
    for rep in range(1, bench.reps + 1):
        now = clock.now() + timedelta(seconds=61 * rep)
        due_times.add(timed(ticker(folder, now, due)))
        idle_times.add(timed(ticker(folder, now, 0)))
    table = Table(["tick over", "seconds", "goal"])
    table.add(f"{total:,} waiting runs, {due} due (each wakes, moves on, sleeps again)", due_times.cell(3),
              f"< {TICK_DUE_GOAL:g} s")
    table.add(f"{total:,} waiting runs, none due", idle_times.cell(4), f"< {TICK_IDLE_GOAL:g} s")
    section.note(f"**B3. `tick`.** {total:,} runs of a flow that sleeps in a loop, created with a ManualClock "
                 f"({setup:.1f} s to create them, {setup / total * 1e3:.2f} ms per run); {due} of them sleep 60 s, "
                 f"the rest 10 years. Each sample is `Runtime(state_dir, clock=ManualClock(t)).tick()` "
                 f"in this process, t moved 61 s further per sample. {bench.reps} samples each.")
    section.table(table)
    section.goal(f"tick, {due} of {total:,} due: < {TICK_DUE_GOAL:g} s", due_times.median < TICK_DUE_GOAL,
                 f"{num(due_times.median, 3)} s")
    section.goal(f"tick, none of {total:,} due: < {TICK_IDLE_GOAL:g} s", idle_times.median < TICK_IDLE_GOAL,
                 f"{num(idle_times.median, 4)} s")


def run(bench: Bench) -> Section:
    """All three file-store workloads."""
    section = Section("B. File store (issue 3)")
    flat_checkpoints(bench, section)
    durable_action(bench, section)
    tick_over_waiting_runs(bench, section)
    return section
