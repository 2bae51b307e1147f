"""The DBOS Transact side of the comparison: the same workloads as DBOS workflows and steps.

DBOS keeps its state in a SQLite system database at its default settings (rollback
journal ``journal_mode=DELETE``, ``synchronous=FULL``); only the log level is lowered so
that it prints as little as tinywf does.
"""

from __future__ import annotations

import time
from pathlib import Path

from dbos import DBOS, DBOSConfig, Queue

from effects import effect


def config(database: Path) -> DBOSConfig:
    """DBOS configured in code: a SQLite system database at ``database``, offline, quiet."""
    return {
        "name": "tinywf-bench",
        "system_database_url": f"sqlite:///{database}",
        "log_level": "WARNING",
    }


def launch(database: Path) -> None:
    """Create and launch DBOS on ``database`` (launching recovers workflows left pending)."""
    DBOS(config=config(database))
    DBOS.launch()


def shutdown() -> None:
    """Stop DBOS, keeping the registered workflows for the next launch."""
    DBOS.destroy(destroy_registry=False)


@DBOS.step()
def echo(value: int) -> int:
    """A step that does nothing but return its input."""
    return value


@DBOS.workflow()
def one_step() -> int:
    """A workflow of one step."""
    return echo(1)


@DBOS.workflow()
def three_steps() -> int:
    """A workflow of three steps."""
    echo(1)
    echo(2)
    return echo(3)


@DBOS.workflow()
def n_steps(n: int) -> int:
    """A workflow of ``n`` sequential steps."""
    total = 0
    for i in range(n):
        total += echo(i)
    return total


@DBOS.workflow()
def await_answer() -> float:
    """Waits for a message on topic ``go``; returns ``perf_counter()`` when it arrived."""
    DBOS.recv("go", timeout_seconds=60)
    return time.perf_counter()


@DBOS.step()
def effect_step(number: int, log_path: str) -> int:
    """``effects.effect`` as a DBOS step."""
    return effect(number, log_path)


@DBOS.workflow()
def five_steps(log_path: str) -> int:
    """Five steps, for the crash-recovery workload."""
    for number in range(1, 6):
        effect_step(number, log_path)
    return 5


def sqlite_settings(database: Path) -> str:
    """``journal_mode`` and ``synchronous`` as a fresh connection to ``database`` sees them."""
    import sqlite3

    connection = sqlite3.connect(database)
    try:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        sync = connection.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        connection.close()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={str(mode).upper()}, synchronous={names.get(sync, sync)}"


def launch_postgres(url: str, schema: str) -> None:
    """Create and launch DBOS on a PostgreSQL system database (tables in ``schema``)."""
    DBOS(config={"name": "tinywf-bench", "system_database_url": url, "dbos_system_schema": schema,
                 "log_level": "WARNING"})
    DBOS.launch()


@DBOS.workflow()
def await_answer_at() -> float:
    """Waits for a message on topic ``go``; returns ``time.time()`` when it arrived."""
    DBOS.recv("go", timeout_seconds=60)
    return time.time()


def io_queue(fast: bool) -> Queue:
    """The I/O workload's queue, registered in the launched system database: 50 workflows at
    once in this process, polled at DBOS's default interval (1 s), or ten times as often."""
    if fast:
        return DBOS.register_queue("tinywf_bench_io_fast", worker_concurrency=50, polling_interval_sec=0.1)
    return DBOS.register_queue("tinywf_bench_io", worker_concurrency=50)


@DBOS.step()
def call_service(wait_ms: float) -> int:
    """A step that waits ``wait_ms`` on another service."""
    time.sleep(wait_ms / 1000)
    return 1


@DBOS.workflow()
def one_call(wait_ms: float) -> int:
    """A workflow of one step that waits on another service."""
    return call_service(wait_ms)
