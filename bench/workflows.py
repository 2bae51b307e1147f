"""Benchmarks of real-workflow features: fan-out at scale, pruning, bounded histories.

    python bench/workflows.py [--quick] [--reps N] [--out FILE]

- **Fan-out** (issue 10): ``self.parallel`` of n trivial actions against the same n actions
  in sequence, on the file store: run files (bytes), wall time, and the most threads alive.
- **Prune** (issue 11): 10,000 finished runs deleted by ``tinywf prune`` (goal < 10 s).
- **Bounded history** (issue 11): a loop of 100,000 visits with ``history_limit = 100``: the
  run's files stay under 1 MiB.

Every figure is the median (min–max) of several samples; ratios are against a baseline
measured in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import Stats, num, ratio
from tinywf_cli import Runtime, Workflow, step
from tinywf_cli.clock import ManualClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
THREADS: list[int] = []


def work(i: int) -> int:
    """A trivial action that notes how many threads are alive."""
    THREADS.append(threading.active_count())
    return i


class Fan(Workflow):
    """n actions at once (at most 8 threads)."""

    @step
    def only(self) -> Generator[Any, Any, Any]:
        n = self.state["n"]
        results = yield self.parallel({f"a{i}": self.action(f"a{i}", work, i) for i in range(n)}, max_workers=8)
        self.state["total"] = sum(results.values())


class Sequence(Workflow):
    """The same n actions one after another."""

    @step
    def only(self) -> Generator[Any, Any, Any]:
        total = 0
        for i in range(self.state["n"]):
            total += yield self.action(f"a{i}", work, i)
        self.state["total"] = total


class Forever(Workflow):
    """A loop of n visits keeping only its newest 100 audit entries."""

    history_limit = 100

    @step
    def lap(self) -> Generator[Any, Any, Any]:
        self.state["n"] = self.state.get("n", 0) + 1
        self.log("lap", n=self.state["n"])
        return self.lap if self.state["n"] < self.state["laps"] else None
        yield  # a step that yields nothing


def files_of(root: Path, run_id: str) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file() and p.name.split("~")[0].split(".")[0]
               == run_id)


def fan_out(scratch: Path, sizes: list[int], reps: int) -> list[str]:
    lines = ["## Fan-out: `self.parallel` of n trivial actions vs the same actions in sequence (file store)", "",
             "| n | parallel ms | sequence ms | time vs sequence | parallel bytes | sequence bytes | "
             "bytes vs sequence | most threads |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in sizes:
        times: dict[str, Stats] = {"fan": Stats(), "seq": Stats()}
        sizes_of: dict[str, int] = {}
        most = 0
        for rep in range(reps):
            for name, flow in (("fan", Fan), ("seq", Sequence)):
                state = scratch / f"{name}-{n}-{rep}"
                rt = Runtime(state, clock=ManualClock(T0))
                THREADS.clear()
                base = threading.active_count()
                started = time.perf_counter()
                rt.start(flow, input={"n": n}, run_id="r")
                times[name].add((time.perf_counter() - started) * 1000)
                sizes_of[name] = files_of(state, "r")
                if name == "fan":
                    most = max(most, max(THREADS) - base)
                shutil.rmtree(state)
        lines.append(f"| {n:,} | {times['fan'].cell(0)} | {times['seq'].cell(0)} | "
                     f"{ratio(times['fan'].median, times['seq'].median)} | {sizes_of['fan']:,} | "
                     f"{sizes_of['seq']:,} | {ratio(sizes_of['fan'], sizes_of['seq'])} | {most} + this one |")
    return lines


def prune(scratch: Path, count: int, reps: int) -> list[str]:
    seconds = Stats()
    for rep in range(reps):
        state = scratch / f"prune-{rep}"
        rt = Runtime(state, clock=ManualClock(T0))
        for i in range(count):
            rt.start(Sequence, input={"n": 0}, run_id=f"done-{i}")
        later = Runtime(state, clock=ManualClock("2026-03-01T00:00:00Z"))
        started = time.perf_counter()
        report = later.prune("30d")
        seconds.add(time.perf_counter() - started)
        assert len(report.pruned) == count and not report.skipped
        shutil.rmtree(state)
    return ["## Prune", "", "| finished runs | seconds to prune all | goal |", "| --- | --- | --- |",
            f"| {count:,} | {seconds.cell(2)} | < 10 s |"]


def history(scratch: Path, laps: int) -> list[str]:
    # the figure is about bytes, not speed: on tmpfs when there is one, so 100,000 fsyncs do not
    # make the run take minutes
    shm = Path("/dev/shm")
    where = Path(tempfile.mkdtemp(prefix="tinywf-bench-", dir=shm)) if shm.is_dir() else scratch
    state = where / "history"
    rt = Runtime(state, clock=ManualClock(T0))
    started = time.perf_counter()
    run = rt.start(Forever, input={"laps": laps}, run_id="loop")
    took = time.perf_counter() - started
    assert run.status == "finished"
    size = files_of(state, "loop")
    doc = rt.get("loop")
    shutil.rmtree(state)
    if where != scratch:
        shutil.rmtree(where, ignore_errors=True)
    return ["## Bounded history", "", "| visits | history_limit | run files (bytes) | audit entries kept | dropped |"
            " seconds | goal |", "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {laps:,} | 100 | {size:,} | {len(doc.logs)} | {doc.omitted:,} | {num(took, 1)} | < 1 MiB |",
            "", f"(written to {'tmpfs' if where != scratch else scratch}: the bytes, not the seconds, are the point)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one sample")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS-workflows.md")
    parser.add_argument("--scratch", type=Path, default=None, help="where runs are written (default: a temp dir)")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    scratch = Path(tempfile.mkdtemp(prefix="tinywf-bench-", dir=args.scratch))
    try:
        lines = ["# tinywf benchmarks: real-workflow features", "",
                 f"Produced by `python bench/workflows.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
                 f"{reps} sample(s) per figure, median (min–max); scratch on {scratch}.", ""]
        lines += [*fan_out(scratch, [100, 1000] if args.quick else [100, 1000, 3000], reps), ""]
        lines += [*prune(scratch, 1000 if args.quick else 10000, 1 if args.quick else 3), ""]
        lines += [*history(scratch, 10000 if args.quick else 100000), ""]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
