"""Workload P (issue 12): tinywf on PostgreSQL.

- P1: 1,000 three-action runs, due at one instant, shared by 1, 2 and 4 ``tinywf worker``
  processes: throughput as workers are added (actions that return at once, and actions
  that wait 5 ms like a call to another service).
- P2: tinywf and DBOS Transact on the same server, one process each, 1,000 workflows of
  three steps one after the other.
- P3: a resolve in one process, the run finished by a worker in another (woken by
  NOTIFY); and, for scale, a resolve that finishes the run itself, and DBOS's send → recv.

Each sample uses a fresh schema on ``$TINYWF_BENCH_PG`` (default the machine's server,
``postgresql://root@127.0.0.1:5432/test``), dropped afterwards. Skipped with a note when
no server answers.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from context import Bench
from measure import BENCH_DIR, Section, Stats, Table, alternate, num, ratio, timed
from sample_flows import AwaitAnswer, Handoff, QueuedThreeActions, ThreeActions
from tinywf_cli import Runtime
from tinywf_cli.testing import ManualClock

SERVER = os.environ.get("TINYWF_BENCH_PG", "postgresql://root@127.0.0.1:5432/test")
LATENCY_GOAL_MS = 50.0
_numbers = itertools.count()


class Schemas:
    """Fresh schemas on the server, all dropped at the end."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def new(self, label: str) -> tuple[str, str]:
        """A new schema's name and its store URL."""
        name = f"bench_{label}_{os.getpid()}_{next(_numbers)}"
        self.made.append(name)
        return name, f"{SERVER}{'&' if '?' in SERVER else '?'}schema={name}"

    def drop_all(self) -> None:
        """Drop every schema made (ending stray sessions first)."""
        import psycopg

        with psycopg.connect(SERVER, autocommit=True) as conn:
            for name in self.made:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s "
                             "AND pid <> pg_backend_pid()", (f"tinywf {name} %",))
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        self.made.clear()


def server_settings() -> str:
    """The server's version and durability settings."""
    import psycopg

    with psycopg.connect(SERVER, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        names = ("fsync", "synchronous_commit", "wal_sync_method")
        values = [conn.execute(f"SHOW {name}").fetchone() for name in names]
    shown = ", ".join(f"{name}={row[0] if row else '?'}"
                      for name, row in zip(names, values, strict=True))
    return f"PostgreSQL {version[0] if version else '?'} on loopback ({shown})"


def finished(url: str, schema: str) -> int:
    """How many runs finished."""
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    with psycopg.connect(parse_target(url).conninfo, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM \"{schema}\".runs WHERE status = 'finished'").fetchone()
    assert row is not None
    return int(row[0])


def span(url: str, schema: str) -> tuple[datetime, datetime]:
    """When the first worker began (its first entry), and when the last run finished (its ``updated_at``)."""
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    with psycopg.connect(parse_target(url).conninfo, autocommit=True) as conn:
        began = conn.execute(f"SELECT min((entry->'log'->>'at')::timestamptz) FROM \"{schema}\".journal "
                             "WHERE kind = 'log' AND entry->'log'->>'type' = 'wait_end'").fetchone()
        last = conn.execute(f"SELECT max((head->>'updated_at')::timestamptz) FROM \"{schema}\".runs").fetchone()
    assert began is not None and last is not None
    return began[0], last[0]


def start_workers(url: str, count: int, poll: float) -> list[subprocess.Popen[bytes]]:
    """``count`` ``tinywf worker`` processes on ``url``."""
    argv = [sys.executable, "-m", "tinywf_cli", "worker", "--store", url, "--poll", str(poll)]
    return [subprocess.Popen(argv, cwd=BENCH_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each worker and check it stopped cleanly."""
    for proc in workers:
        proc.send_signal(signal.SIGTERM)
    for proc in workers:
        _, errors = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"a worker exited {proc.returncode}: {errors.decode()[-1000:]}")


def workers_sample(schemas: Schemas, count: int, workers: int, wait_ms: float) -> float:
    """Seconds from the first worker's first step until ``workers`` processes finished ``count`` due runs.

    The runs are started on a clock an hour behind, with a timer due half an hour ago: they
    wait when started, and are all due for the workers (on the real clock) at once.
    """
    schema, url = schemas.new("workers")
    now = datetime.now(UTC)
    due = now - timedelta(minutes=30)
    runtime = Runtime(url, clock=ManualClock(now - timedelta(hours=1)))
    try:
        for _ in range(count):
            run = runtime.start(QueuedThreeActions, input={"due": due.isoformat(), "wait_ms": wait_ms})
            assert run.status == "waiting", run.status
    finally:
        runtime.close()
    procs = start_workers(url, workers, poll=5)
    try:
        while finished(url, schema) < count:
            time.sleep(0.05)
    finally:
        stop_workers(procs)
    began, last = span(url, schema)
    return (last - began).total_seconds()


def workers_throughput(bench: Bench, schemas: Schemas, section: Section, settings: str) -> None:
    """P1: 1, 2 and 4 worker processes on 1,000 due runs."""
    count = bench.size(1_000, 100)
    table = Table(["actions", "workers", "runs/s", "vs 1 worker"])
    grows: list[bool] = []
    for wait_ms in (0.0, 5.0):
        contenders = {str(n): (lambda n=n, w=wait_ms: count / workers_sample(schemas, count, n, w)) for n in (1, 2, 4)}
        results = alternate(contenders, bench.reps)
        base = results["1"].median
        what = "return at once" if not wait_ms else f"wait {wait_ms:g} ms each"
        for n, stats in results.items():
            table.add(what, n, stats.cell(0), ratio(stats.median, base))
        medians = [results[n].median for n in ("1", "2", "4")]
        grows.append(medians[1] > medians[0] and (medians[2] > medians[1] if wait_ms else True))
    section.note(f"**P1. Workers in several processes.** {count:,} runs of three actions each, all due (a timer "
                 "that has passed); 1, 2 or 4 `tinywf worker` processes (each claims its next due run with "
                 "`FOR UPDATE SKIP LOCKED`; fenced commits) take them, measured from the first worker's first "
                 f"step to the last run's end. A fresh schema per sample; {bench.reps} samples, alternating. "
                 f"{settings}; {os.cpu_count()} CPUs shared by the workers and the server.")
    section.table(table)
    section.goal("P1 throughput grows with workers (2 > 1; and 4 > 2 when actions wait)", all(grows),
                 "see the table")


def versus_dbos(bench: Bench, schemas: Schemas, section: Section, settings: str) -> None:
    """P2: tinywf and DBOS on the same server, 1,000 three-step workflows in one process each."""
    count = bench.size(1_000, 50)
    try:
        import dbos_app
    except ImportError as exc:
        section.note(f"**P2 skipped:** DBOS is not installed ({exc}); `pip install -e '.[bench]'`.")
        return

    def tinywf() -> float:
        _, url = schemas.new("seq")
        runtime = Runtime(url)
        try:
            runtime.start(ThreeActions)  # tables made, connection open: not timed
            return count / timed(lambda: [runtime.start(ThreeActions) for _ in range(count)])
        finally:
            runtime.close()

    def peer() -> float:
        schema, _ = schemas.new("dbos")
        dbos_app.launch_postgres(SERVER, schema)
        try:
            dbos_app.three_steps()
            return count / timed(lambda: [dbos_app.three_steps() for _ in range(count)])
        finally:
            dbos_app.shutdown()

    results = alternate({"tinywf": tinywf, "dbos": peer}, bench.reps)
    table = Table(["side", "workflows/s", "vs DBOS"])
    table.add("tinywf `Runtime.start` (1 step × 3 actions; every checkpoint a fenced commit)",
              results["tinywf"].cell(0), ratio(results["tinywf"].median, results["dbos"].median))
    table.add("DBOS workflow of 3 steps (its PostgreSQL system database)", results["dbos"].cell(0), "1.00×")
    section.note(f"**P2. tinywf and DBOS on the same PostgreSQL.** {count:,} workflows one after the other in "
                 f"one process each; a fresh schema per sample (DBOS: `dbos_system_schema`), both over psycopg 3. "
                 f"{bench.reps} samples, alternating. {settings}.")
    section.table(table)


def finished_at(runtime: Runtime, run_id: str, timeout: float = 30) -> datetime:
    """When the run finished (its ``updated_at``, written by whoever finished it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = runtime.store.head(run_id)
        if head.status == "finished":
            return head.updated_at
        time.sleep(0.001)
    raise RuntimeError(f"run {run_id} did not finish within {timeout} s")


def latency(bench: Bench, schemas: Schemas, section: Section, settings: str) -> None:
    """P3: resolve in this process → a worker in another finishes the run."""
    reps = bench.size(40, 10)
    _, url = schemas.new("latency")
    runtime = Runtime(url)
    worker = start_workers(url, 1, poll=30)  # a poll this long: only a wake-up explains a fast finish
    handoff, inline, recv, dbos_total = Stats(), Stats(), Stats(), Stats()
    try:
        runtime.start(AwaitAnswer)  # tables made
        time.sleep(1.0)  # the worker is up and listening
        for _ in range(reps):
            run = runtime.start(Handoff)
            time.sleep(0.05 + bench.rng.random() * 0.05)
            sent = datetime.now(UTC)
            runtime.resolve(run.run_id, "go", 7)
            handoff.add((finished_at(runtime, run.run_id) - sent).total_seconds() * 1e3)
            answer = runtime.start(AwaitAnswer)
            inline.add(timed(lambda a=answer: runtime.resolve(a.run_id, "go", 7)) * 1e3)
    finally:
        runtime.close()
        stop_workers(worker)
    try:
        from dbos import DBOS

        import dbos_app
    except ImportError:
        dbos_app = None
    if dbos_app is not None:
        schema, _ = schemas.new("dbosrecv")
        dbos_app.launch_postgres(SERVER, schema)
        try:
            for _ in range(reps):
                handle: Any = DBOS.start_workflow(dbos_app.await_answer_at)
                time.sleep(0.05 + bench.rng.random() * 0.05)
                start = time.time()
                DBOS.send(handle.workflow_id, 7, topic="go")
                arrived = handle.get_result()
                dbos_total.add((time.time() - start) * 1e3)
                recv.add((arrived - start) * 1e3)
        finally:
            dbos_app.shutdown()
    table = Table(["path", "ms", "vs the goal"])
    table.add("tinywf: `resolve` in process A → the worker in process B (NOTIFY, 1 ms timer) finished the run",
              handoff.cell(1), f"{ratio(handoff.median, LATENCY_GOAL_MS)} of {LATENCY_GOAL_MS:g} ms")
    table.add("tinywf: `resolve` that finishes the run itself", inline.cell(1), "")
    if recv.samples:
        table.add("DBOS on PostgreSQL: `send` → `recv` returns in the workflow", recv.cell(1), "")
        table.add("DBOS on PostgreSQL: `send` → workflow result", dbos_total.cell(1), "")
    section.note(f"**P3. Resolve here, finished there.** A run waits for `go`; process A resolves it, which "
                 "records the answer and leaves a 1 ms timer; the release NOTIFYs, and `tinywf worker` in "
                 "process B (`--poll 30`: its poll cannot explain the figure) wakes, claims the run and finishes "
                 "it. Measured from just before the resolve to the run's `updated_at` as B wrote it. "
                 f"{reps} samples. {settings}. DBOS in this process, `send` from the main thread.")
    section.table(table)
    section.goal(f"P3 resolve → worker on another process finished < {LATENCY_GOAL_MS:g} ms (median)",
                 handoff.median < LATENCY_GOAL_MS, f"{num(handoff.median, 1)} ms")


def run(bench: Bench) -> Section:
    """All of workload P, or a note when no PostgreSQL answers."""
    section = Section("P. tinywf on PostgreSQL: workers on several processes (issue 12)")
    try:
        settings = server_settings()
    except Exception as exc:  # no psycopg, or no server: say so, measure nothing
        section.note(f"**Skipped:** no PostgreSQL at {SERVER} ({' '.join(str(exc).split())}).")
        section.goal("issue 12 benchmarks", None, "no PostgreSQL")
        return section
    schemas = Schemas()
    try:
        workers_throughput(bench, schemas, section, settings)
        versus_dbos(bench, schemas, section, settings)
        latency(bench, schemas, section, settings)
    finally:
        schemas.drop_all()
    return section
