"""The PostgreSQL server the tests use: a fresh schema per test, dropped after.

``$TINYWF_TEST_PG`` names the server (default ``postgresql://root@127.0.0.1:5432/test``).
When none answers, tests that need it skip with the reason, unless ``$TINYWF_REQUIRE_PG``
is set (CI sets it): then they fail, so that they can never silently vanish.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

SERVER = os.environ.get("TINYWF_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
_numbers = itertools.count()


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why no PostgreSQL can be used for the tests, or None when one answers."""
    try:
        import psycopg
    except ImportError:
        return 'psycopg is not installed (pip install -e ".[test]")'
    try:
        with psycopg.connect(SERVER, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL answers at {SERVER}: {' '.join(str(exc).split())}"
    return None


def require_server() -> None:
    """Skip the test when no server answers (fail instead under ``$TINYWF_REQUIRE_PG``)."""
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("TINYWF_REQUIRE_PG"):
        pytest.fail(f"$TINYWF_REQUIRE_PG is set but {reason}")
    pytest.skip(reason)


def new_schema_name() -> str:
    """A schema name no other test (or test process) uses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "w")
    return f"t_{worker}_{os.getpid()}_{next(_numbers)}"


def url_of(schema: str, server: str = SERVER) -> str:
    """The store URL of ``schema`` on ``server``."""
    return f"{server}{'&' if '?' in server else '?'}schema={schema}"


def drop_schema(schema: str, server: str = SERVER) -> None:
    """Drop a test's schema, first ending any session a stray process of the test left on it."""
    import psycopg

    with psycopg.connect(server, connect_timeout=5, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE application_name LIKE %s AND pid <> pg_backend_pid()", (f"tinywf {schema} %",))
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def fresh_url(server: str = SERVER) -> Iterator[str]:
    """The URL of a new, empty store (its schema is created on first use and dropped after)."""
    require_server()
    schema = new_schema_name()
    try:
        yield url_of(schema, server)
    finally:
        drop_schema(schema, server)


def store_snapshot(url: str) -> dict[str, Any]:
    """Every run's head and journal, and every schedule, in a store (claims left out: taking and
    releasing one changes nothing a user sees)."""
    import psycopg

    from tinywf_cli.stores.postgres.connection import parse_target

    target = parse_target(url)
    schema = f'"{target.schema}"'
    found: dict[str, Any] = {}
    with psycopg.connect(target.conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.runs",)).fetchone()
        if exists is None or exists[0] is None:
            return found
        for run_id, head, status, due_at in conn.execute(
                f"SELECT run_id, head::text, status, due_at FROM {schema}.runs ORDER BY run_id"):
            found[run_id] = {"head": head, "status": status, "due_at": due_at}
        for run_id, seq, entry in conn.execute(f"SELECT run_id, seq, entry::text FROM {schema}.journal "
                                               "ORDER BY run_id, seq"):
            found[run_id].setdefault("journal", []).append((seq, entry))
        if conn.execute("SELECT to_regclass(%s)", (f"{schema}.schedules",)).fetchone()[0] is not None:  # type: ignore[index]
            for name, record in conn.execute(f"SELECT name, record::text FROM {schema}.schedules ORDER BY name"):
                found[f"schedule {name}"] = record
    return found
