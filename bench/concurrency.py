"""Workload M (issue 20): many runs at once, in one process and in several.

- M1: 100 runs, each waiting on a timer and then making one call that waits 100 ms on another
  service (as an HTTP call does); one ``tick`` advances them all. tinywf with ``concurrency``
  50 (file store and PostgreSQL) and 1, beside DBOS Transact running the same workflows
  through a queue with ``worker_concurrency=50``; the floor is n × 100 ms / 50.
- M2: 1,000 three-action runs, all due, through one ``tinywf worker`` process with
  ``--concurrency 16`` and with ``--concurrency 1`` (file store and PostgreSQL).
- M3: PostgreSQL, 2,000 runs of one 50 ms call: 4 workers × ``--concurrency 16`` against one
  worker with one thread.

Every sample starts from a fresh state directory or schema; DBOS is launched before its clock
starts. Skipped (with a note) where DBOS or PostgreSQL is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from context import Bench
from measure import BENCH_DIR, Section, Table, alternate, num, ratio, timed
from postgres import Schemas, server_settings
from sample_flows import QueuedThreeActions, TimerThenCall
from tinywf_cli import Runtime, Workflow
from tinywf_cli.testing import ManualClock

#: M1: the call every run makes, how many run at once, and the goals against DBOS and the floor.
CALL_MS = 100.0
AT_ONCE = 50
VERSUS_DBOS_GOAL = 4.0
FLOOR_GOAL = 3.0
#: M3: the call, and the goal of 4 workers × 16 threads against one worker with one thread.
M3_CALL_MS = 50.0
M3_GOAL = 8.0


def start_due_runs(target: str, flow: type[Workflow[Any]], count: int, wait_ms: float,
                   due_in: float = 0.0) -> tuple[Runtime, ManualClock, datetime]:
    """``count`` runs of ``flow`` started waiting on a timer due ``due_in`` seconds from now
    (before the clock starts), on a clock of their own; the runtime, its clock and the due time."""
    now = datetime.now(UTC)
    due = now + timedelta(seconds=due_in)
    clock = ManualClock(now - timedelta(hours=1))
    runtime = Runtime(target, clock=clock)
    for _ in range(count):
        run = runtime.start(flow, input={"due": due.isoformat(), "wait_ms": wait_ms})
        assert run.status == "waiting", run.status
    return runtime, clock, due


def one_tick(target: str, count: int, concurrency: int) -> float:
    """Seconds of the one ``tick`` that advances ``count`` due TimerThenCall runs to their end."""
    runtime, clock, due = start_due_runs(target, TimerThenCall, count, CALL_MS, due_in=60)
    try:
        clock.set(due)
        reports: list[Any] = []
        seconds = timed(lambda: reports.append(runtime.tick(concurrency=concurrency)))
        statuses = [a.status for a in reports[0].advanced]
        assert statuses == ["finished"] * count and not reports[0].skipped, reports[0]
        return seconds
    finally:
        runtime.close()


def io_workload(bench: Bench, schemas: Schemas | None, section: Section, settings: str) -> None:
    """M1: one tick over 100 runs of one 100 ms call, beside DBOS's queue."""
    count = bench.size(100, 50)
    contenders: dict[str, Callable[[], float]] = {
        f"tinywf `tick(concurrency={AT_ONCE})`, file store":
            lambda: one_tick(str(bench.scratch.new("io")), count, AT_ONCE),
    }
    if schemas is not None:
        contenders[f"tinywf `tick(concurrency={AT_ONCE})`, PostgreSQL"] = \
            lambda: one_tick(schemas.new("io")[1], count, AT_ONCE)
    contenders["tinywf `tick(concurrency=1)`, file store (one run after the other)"] = \
        lambda: one_tick(str(bench.scratch.new("io1")), count, 1)
    dbos = _dbos()
    if dbos is not None:
        from versus_dbos import Dbos

        side = Dbos(bench, dbos)

        def queue(fast: bool) -> Callable[[], float]:
            def go() -> float:
                with side.launched("io"):
                    chosen = dbos.io_queue(fast)
                    return timed(lambda: [h.get_result() for h in
                                          [chosen.enqueue(dbos.one_call, CALL_MS) for _ in range(count)]])
            return go

        contenders[f"DBOS queue, `worker_concurrency={AT_ONCE}` (its default 1 s poll)"] = queue(False)
        contenders[f"DBOS queue, `worker_concurrency={AT_ONCE}`, `polling_interval_sec=0.1`"] = queue(True)
    results = alternate(contenders, bench.reps)
    floor = count * CALL_MS / 1000 / AT_ONCE
    mine = results[f"tinywf `tick(concurrency={AT_ONCE})`, file store"]
    peer_name = f"DBOS queue, `worker_concurrency={AT_ONCE}` (its default 1 s poll)"
    table = Table(["side", "seconds", "runs/s", "vs the floor", "DBOS (default poll) ÷ this"])
    for name, stats in results.items():
        peer = results[peer_name].median / stats.median if peer_name in results else None
        table.add(name, stats.cell(2), num(count / stats.median, 0), ratio(stats.median, floor),
                  "" if peer is None else f"{peer:.2f}×")
    table.add(f"floor: {count} × {CALL_MS:g} ms ÷ {AT_ONCE} at once", num(floor, 2), num(count / floor, 0),
              "1.00×", "")
    section.note(f"**M1. Runs that wait on other services.** {count} runs, each waiting on a timer and "
                 f"then making one call that waits {CALL_MS:g} ms (as an HTTP call does); one `tick` "
                 "advances them all (started before the clock starts, due when it does). DBOS runs the same "
                 f"workflow (one step that waits {CALL_MS:g} ms) through a `Queue` with "
                 f"`worker_concurrency={AT_ONCE}` in this process, timed from the first enqueue to the last "
                 f"result, on its SQLite system database. {bench.reps} samples, alternating. {settings}.")
    section.table(table)
    if peer_name in results:
        peer = results[peer_name].median
        section.goal(f"M1 tick --concurrency {AT_ONCE} ≥ {VERSUS_DBOS_GOAL:.0f}× faster than DBOS's queue",
                     peer >= VERSUS_DBOS_GOAL * mine.median,
                     f"{num(mine.median, 2)} vs {num(peer, 2)} s = {ratio(peer, mine.median)}")
    else:
        section.goal(f"M1 ≥ {VERSUS_DBOS_GOAL:.0f}× DBOS's queue", None, "DBOS not installed")
    section.goal(f"M1 tick --concurrency {AT_ONCE} ≤ {FLOOR_GOAL:.0f}× the floor ({num(floor, 2)} s)",
                 mine.median <= FLOOR_GOAL * floor, f"{num(mine.median, 2)} s = {ratio(mine.median, floor)}")


def _dbos() -> Any:
    try:
        import dbos_app
    except ImportError:
        return None
    return dbos_app


# -- workers in processes ------------------------------------------------------------------------------


def worker_sample(target: str, flow: type[Workflow[Any]], count: int, wait_ms: float, workers: int,
                  concurrency: int) -> float:
    """Seconds from the first run's first step until ``workers`` ``tinywf worker`` processes
    (``--concurrency``) finished ``count`` runs that were all due when they started."""
    runtime, _, _ = start_due_runs(target, flow, count, wait_ms, due_in=-1800)
    procs = [subprocess.Popen([sys.executable, "-m", "tinywf_cli", "worker", "--store", target, "--json",
                               "--poll", "5", "--concurrency", str(concurrency)],
                              cwd=BENCH_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    finished: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()

    def read(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            done = sum(1 for a in json.loads(line)["advanced"] if a["status"] == "finished")
            with lock:
                finished.append(done)
                if sum(finished) >= count:
                    enough.set()

    readers = [threading.Thread(target=read, args=(proc,), daemon=True) for proc in procs]
    for reader in readers:
        reader.start()
    try:
        if not enough.wait(900):
            raise RuntimeError(f"the workers finished {sum(finished)} of {count} runs in 900 s")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, errors = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker exited {proc.returncode}: {errors[-1000:]}")
    try:
        return span(runtime)
    finally:
        runtime.close()


def span(runtime: Runtime) -> float:
    """From the first run's first step after its timer (``wait_end``) to the last run's end."""
    store = runtime.store
    began: datetime | None = None
    last: datetime | None = None
    for run_id in store.run_ids():
        head = store.head(run_id)
        assert head.status == "finished", (run_id, head.status)
        last = head.updated_at if last is None else max(last, head.updated_at)
        for entry in store.history(run_id):
            if entry.type == "wait_end":
                at = datetime.fromisoformat(entry.at.replace("Z", "+00:00"))
                began = at if began is None else min(began, at)
                break
    assert began is not None and last is not None
    return (last - began).total_seconds()


def one_worker(bench: Bench, schemas: Schemas | None, section: Section, settings: str) -> None:
    """M2: one worker process, 16 threads against one, on both stores."""
    count = bench.size(1_000, 100)
    stores: dict[str, Callable[[str], str]] = {"file store": lambda label: str(bench.scratch.new(label))}
    if schemas is not None:
        stores["PostgreSQL"] = lambda label: schemas.new(label)[1]
    contenders: dict[str, Callable[[], float]] = {}
    for name, made in stores.items():
        for threads in (16, 1):
            contenders[f"{name}|{threads}"] = (
                lambda made=made, threads=threads:
                count / worker_sample(made("m2"), QueuedThreeActions, count, 0.0, 1, threads))
    results = alternate(contenders, bench.reps)
    table = Table(["store", "`--concurrency`", "runs/s", "vs `--concurrency 1`"])
    for name in stores:
        base = results[f"{name}|1"].median
        for threads in (16, 1):
            stats = results[f"{name}|{threads}"]
            table.add(name, str(threads), stats.cell(0), ratio(stats.median, base))
    section.note(f"**M2. One worker, many threads.** {count:,} runs of three actions that return at once, all "
                 "due (a timer that has passed), through one `tinywf worker --concurrency N` process; "
                 "measured from the first run's first step to the last run's end. The file store's "
                 "threads overlap their fsyncs, PostgreSQL's their round trips. A fresh store per sample; "
                 f"{bench.reps} samples, alternating. {settings}.")
    section.table(table)
    for name in stores:
        faster = results[f"{name}|16"].median / results[f"{name}|1"].median
        section.goal(f"M2 one worker: --concurrency 16 faster than 1 ({name})", faster > 1.0, f"{faster:.2f}×")


def many_workers(bench: Bench, schemas: Schemas, section: Section, settings: str) -> None:
    """M3: PostgreSQL, 4 workers × 16 threads against one worker with one thread."""
    count = bench.size(2_000, 200)
    sides = {"4 workers × `--concurrency 16`": (4, 16), "1 worker × `--concurrency 1`": (1, 1)}
    contenders = {name: (lambda w=w, c=c: count / worker_sample(schemas.new("m3")[1], TimerThenCall, count,
                                                                 M3_CALL_MS, w, c))
                  for name, (w, c) in sides.items()}
    results = alternate(contenders, bench.reps)
    base = results["1 worker × `--concurrency 1`"].median
    table = Table(["workers", "runs/s", "vs 1 × 1"])
    for name, stats in results.items():
        table.add(name, stats.cell(0), ratio(stats.median, base))
    section.note(f"**M3. Many workers, many threads (PostgreSQL).** {count:,} runs of one call that waits "
                 f"{M3_CALL_MS:g} ms, all due; `tinywf worker` processes claim them (`FOR UPDATE SKIP LOCKED`), "
                 "each advancing up to `--concurrency` at once; measured from the first run's first step to "
                 f"the last run's end. A fresh schema per sample; {bench.reps} samples, alternating. {settings}; "
                 f"{os.cpu_count()} CPUs shared by the workers and the server.")
    section.table(table)
    mine = results["4 workers × `--concurrency 16`"].median
    section.goal(f"M3 4 workers × 16 ≥ {M3_GOAL:.0f}× one worker with one thread", mine >= M3_GOAL * base,
                 f"{num(mine, 0)} vs {num(base, 0)} runs/s = {ratio(mine, base)}")


def run(bench: Bench) -> Section:
    """All of workload M (PostgreSQL parts skipped, with a note, when no server answers)."""
    section = Section("M. Many runs at once (issue 20)")
    schemas: Schemas | None = Schemas()
    try:
        settings = server_settings()
    except Exception as exc:  # no psycopg, or no server
        section.note(f"**PostgreSQL parts skipped:** {' '.join(str(exc).split())}.")
        schemas, settings = None, "no PostgreSQL"
    machine = f"{os.cpu_count()} CPUs"
    try:
        io_workload(bench, schemas, section, f"{settings}; {machine}")
        one_worker(bench, schemas, section, settings)
        if schemas is not None:
            many_workers(bench, schemas, section, settings)
        else:
            section.goal(f"M3 ≥ {M3_GOAL:.0f}×", None, "no PostgreSQL")
    finally:
        if schemas is not None:
            schemas.drop_all()
    return section


if __name__ == "__main__":  # one part alone: python bench/concurrency.py m1|m2|m3
    from measure import Scratch

    part = sys.argv[1] if len(sys.argv) > 1 else "m1"
    scratch = Scratch()
    bench = Bench(quick="--quick" in sys.argv, reps=int(os.environ.get("REPS", "5")), scratch=scratch)
    section = Section(f"M ({part})")
    schemas = Schemas()
    try:
        settings = server_settings()
        {"m1": lambda: io_workload(bench, schemas, section, settings),
         "m2": lambda: one_worker(bench, schemas, section, settings),
         "m3": lambda: many_workers(bench, schemas, section, settings)}[part]()
    finally:
        schemas.drop_all()
        scratch.close()
    print(section.markdown())
